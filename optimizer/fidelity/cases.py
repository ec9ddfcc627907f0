"""Measurement rows and the deterministic fit/check split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from optimizer.cache import memoize

from optimizer.catalog.paths import data_dir


DATA_DIR = data_dir("measurements")  # measurements/ in a checkout, optimizer/_data/measurements in the wheel
MEMORY_FILE = DATA_DIR / "measurements.yaml"
SPEED_FILE = DATA_DIR / "speed_measurements.yaml"

MEMORY_METRICS = ("weights_per_gpu_bytes", "gguf_file_bytes", "kv_tokens_for_bytes", "kv_bytes_per_token")
SPEED_METRICS = ("decode_tok_s", "prefill_tok_s")
FIT_SHARE_OF_16 = 10  # rows whose id hashes to 0..9 (of 16) fit the factors, 10..15 check them (~62% / 38%)


def split_of(row: dict) -> str:
    """'fit' or 'check': an explicit `split` field, else a stable hash of the row id (sha256, first hex digit)."""
    if row.get("split") in ("fit", "check"):
        return row["split"]
    if row["metric"] in MEMORY_METRICS:
        return "check"  # nothing is fitted on memory rows: they only check
    digit = int(hashlib.sha256(row["id"].encode()).hexdigest()[0], 16)
    return "fit" if digit < FIT_SHARE_OF_16 else "check"


@memoize("fidelity.rows", maxsize=8)
def _load(path: str) -> tuple[dict, ...]:
    return tuple(yaml.safe_load(Path(path).read_text()) or ())


def memory_rows() -> list[dict]:
    return [dict(r) for r in _load(str(MEMORY_FILE))]


def speed_rows() -> list[dict]:
    return [dict(r) for r in _load(str(SPEED_FILE))]


def all_rows() -> list[dict]:
    return memory_rows() + speed_rows()
