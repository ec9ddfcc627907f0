"""measurements/offload_measurements.yaml: sourced CPU-expert (experts in host DRAM) measurements, issue 20.

Checks that every row can be traced and used: a source URL, a verbatim quote that contains the measured decode
(and prefill) figure, a catalogue model key, a catalogue accelerator key (or null), a project quant name, an engine
rigopt models, and a host_spec naming the CPU and the socket count; and that the counts the file claims in its
header (rows, distinct hosts, engines) are the counts of its rows and meet the issue's floor.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from optimizer.catalog.models import load_cards
from optimizer.estimate.schemes import WEIGHT_QUANTS

ROOT = Path(__file__).resolve().parents[1]
FILE = ROOT / "measurements" / "offload_measurements.yaml"
ENGINES = {"llamacpp", "ik_llama", "ktransformers", "sglang"}
HOST_FIELDS = {"cpu", "cpu_count", "cores_per_socket", "isa", "memory_channels_populated", "dimm_mt_s", "dram_gb",
               "numa", "measured_bw_gb_s", "threads"}
ISAS = {None, "avx2", "avx512", "amx"}
CLAIMS = re.compile(r"^# claims: rows=(\d+) distinct_hosts=(\d+) engines=(\d+)\s*$", re.M)
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _rows() -> list[dict]:
    rows = yaml.safe_load(FILE.read_text(encoding="utf-8"))
    assert isinstance(rows, list) and rows, "the file holds a list of rows"
    return rows


ROWS = _rows()
IDS = [str(r.get("id")) for r in ROWS]


def _keys(path: Path) -> set[str]:
    return {str(e["key"]) for e in yaml.safe_load(path.read_text(encoding="utf-8")) if isinstance(e, dict)}


def host_of(row: dict) -> tuple:
    """A distinct host, as the file's header defines it."""
    hs = row["host_spec"]
    return (hs["cpu"], hs["cpu_count"], hs["memory_channels_populated"], hs["dimm_mt_s"])


def quoted(value: float, quote: str) -> bool:
    """True when `value` is one of the numbers written in `quote` (as printed: 80 matches 80.0)."""
    return any(abs(float(n) - value) <= 1e-9 * max(1.0, abs(value)) for n in NUMBER.findall(quote.replace(",", "")))


def test_quoted_matches_numbers_as_printed() -> None:
    assert quoted(17.3042, "| 50% | 0.0023 | 0.0568 | 64.9231 | 21 | 1122 | 17.3042 |")
    assert quoted(80.0, "| Prefill token/s | 12.2 | 88.2 | 80 |")
    assert quoted(4.0, "推理速度：4 tokens/s")
    assert not quoted(17.3, "17.3042 tok/s")
    assert not quoted(18.0, "eval rate 18.04 tokens per second")


def test_ids_unique() -> None:
    assert len(IDS) == len(set(IDS)), sorted({i for i in IDS if IDS.count(i) > 1})


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_row_is_sourced_and_quoted(row: dict) -> None:
    assert str(row["source"]).startswith("https://"), "source must be a URL"
    quote = row["quote"]
    assert isinstance(quote, str) and quote.strip()
    measured = row["measured"]
    decode = measured["decode_tok_s_per_seq"]
    assert isinstance(decode, (int, float)) and decode > 0, "every row carries a measured decode tok/s"
    assert quoted(float(decode), quote), f"decode {decode} is not written in the quote"
    prefill = measured.get("prefill_tok_s")
    if prefill is not None:
        assert prefill > 0 and quoted(float(prefill), quote), f"prefill {prefill} is not written in the quote"


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_row_names_catalogue_keys(row: dict) -> None:
    cards = load_cards()
    assert row["model"] in cards, f"model {row['model']} is not a key of models/"
    accelerators = _keys(ROOT / "hardware" / "accelerators.yaml")
    acc = row["accelerator"]
    assert acc is None or acc in accelerators, f"accelerator {acc} is not a key of hardware/accelerators.yaml"
    if acc is None:
        assert row["gpus"] == 0 or row.get("accelerator_label"), "a GPU outside the catalogue must be named"
    else:
        assert row["gpus"] >= 1
    assert row["quant"] in WEIGHT_QUANTS, f"quant {row['quant']} is not a project quant name"
    assert row["engine"] in ENGINES
    if row["engine"] == "sglang":
        assert "kt" in (str(row.get("flags")) + str(row.get("engine_version"))).lower(), "SGLang rows run KTransformers"
    host = row.get("host")
    assert host is None or host in _keys(ROOT / "hardware" / "hosts.yaml")


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_row_has_host_spec(row: dict) -> None:
    hs = row["host_spec"]
    assert set(hs) == HOST_FIELDS, set(hs) ^ HOST_FIELDS
    assert isinstance(hs["cpu"], str) and hs["cpu"].strip()
    assert isinstance(hs["cpu_count"], int) and 1 <= hs["cpu_count"] <= 8
    assert hs["isa"] in ISAS
    for field in ("cores_per_socket", "memory_channels_populated", "dimm_mt_s", "dram_gb", "threads"):
        assert hs[field] is None or (isinstance(hs[field], int) and hs[field] > 0), field
    assert row["offload"], "the row says where the experts are (cpu_moe / n_cpu_moe / gpu_layers)"
    assert {"cpu_moe", "n_cpu_moe", "gpu_layers"} & set(row["offload"])


def test_header_claims_match_the_rows() -> None:
    m = CLAIMS.search(FILE.read_text(encoding="utf-8"))
    assert m, "header line '# claims: rows=N distinct_hosts=H engines=E' missing"
    rows, hosts, engines = (int(g) for g in m.groups())
    assert rows == len(ROWS)
    assert hosts == len({host_of(r) for r in ROWS})
    assert engines == len({r["engine"] for r in ROWS})


def test_file_meets_the_issue_floor() -> None:
    """Issue 20: at least 60 rows, 15 distinct hosts, 3 engines (KTransformers under SGLang counts as sglang)."""
    assert len(ROWS) >= 60
    assert len({host_of(r) for r in ROWS}) >= 15
    assert len({r["engine"] for r in ROWS}) >= 3
