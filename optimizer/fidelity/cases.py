"""Measurement rows (memory and speed) of measurements/."""

from __future__ import annotations

from pathlib import Path

import yaml

from optimizer.cache import memoize
from optimizer.catalog.paths import data_dir

DATA_DIR = data_dir("measurements")  # measurements/ in a checkout, optimizer/_data/measurements in the wheel
MEMORY_FILE = DATA_DIR / "measurements.yaml"
SPEED_FILE = DATA_DIR / "speed_measurements.yaml"

MEMORY_METRICS = ("weights_per_gpu_bytes", "gguf_file_bytes", "kv_tokens_for_bytes", "kv_bytes_per_token")
SPEED_METRICS = ("decode_tok_s", "prefill_tok_s")
@memoize("fidelity.rows", maxsize=8)
def _load(path: str) -> tuple[dict, ...]:
    return tuple(yaml.safe_load(Path(path).read_text()) or ())


def memory_rows() -> list[dict]:
    return [dict(r) for r in _load(str(MEMORY_FILE))]


def speed_rows() -> list[dict]:
    return [dict(r) for r in _load(str(SPEED_FILE))]


def all_rows() -> list[dict]:
    return memory_rows() + speed_rows()
