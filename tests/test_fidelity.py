"""Fidelity: rigopt's estimates against published measurements (optimizer/fidelity).

Thresholds are the documented figures (README "Fidelity") plus a small margin: a change that makes rigopt's
numbers worse than documented fails here. Rows are in measurements/measurements.yaml (weights, KV, GGUF sizes)
and measurements/speed_measurements.yaml (decode / prefill tok/s), each with its quoted line and source URL.
"""

from __future__ import annotations

import pytest

from optimizer.catalog.hardware import get_accelerator, load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.estimate import factors as F
from optimizer.estimate.schemes import get_scheme
from optimizer.fidelity.calibrate import EFF_BOUNDS, fit, fit_rows
from optimizer.fidelity.cases import SPEED_METRICS, speed_rows, split_of
from optimizer.fidelity.predict import predict_speed
from optimizer.fidelity.report import run, summarize

# documented figures (README, Fidelity section) + margin
DECODE_CHECK_MEDIAN_MAX = 0.127 + 0.03   # llama.cpp + vLLM/SGLang check rows (was 0.143 before engine factors)
DECODE_FIT_MEDIAN_MAX = 0.102 + 0.03     # (was 0.086 on llama.cpp rows only)
# per engine (median |error| of decode rows, known gaps excluded): documented figures + margin
DECODE_ENGINE_MEDIAN_MAX = {
    ("llamacpp", "fit"): 0.084 + 0.03, ("llamacpp", "check"): 0.116 + 0.03,
    ("vllm", "fit"): 0.178 + 0.03, ("vllm", "check"): 0.660 + 0.05,
    ("sglang", "fit"): 0.138 + 0.05, ("sglang", "check"): 0.107 + 0.05,
}
WEIGHTS_MAX = 0.02
GGUF_MAX = 0.02
KV_MAX = 0.10


@pytest.fixture(scope="module")
def report():
    cases = run()
    return cases, {(s.metric, s.split): s for s in summarize(cases)}


def test_speed_rows_cited_and_reproducible():
    rows = speed_rows()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert len(rows) >= 25
    hw = load_hardware()
    for r in rows:
        assert r["metric"] in SPEED_METRICS
        assert r["source"].startswith("https://") and r["quote"].strip()
        assert isinstance(r["measured"], (int, float)) and r["measured"] > 0
        m = resolve_model(r["model"])
        get_scheme(r["quant"], m.storage)
        get_accelerator(r["accelerator"])
        if r.get("offload"):
            assert r["offload"]["host"] in hw.hosts
        if r["metric"] == "decode_tok_s":
            assert r["gen_tokens"]
        else:
            assert r["prompt_tokens"]
        if r.get("known_gap"):
            assert r.get("known_gap_reason")
    assert {r["engine"] for r in rows} == {"llamacpp", "vllm", "sglang"}


def test_split_is_deterministic_and_both_sides_used():
    """The split depends on the row id only (sha256, first hex digit below FIT_SHARE_OF_16 -> fit), so adding,
    re-measuring or re-ordering rows never moves another row between fit and check."""
    import hashlib

    from optimizer.fidelity.cases import FIT_SHARE_OF_16
    rows = speed_rows()
    for r in rows:
        if r.get("split") in ("fit", "check"):
            assert split_of(r) == r["split"]
            continue
        digit = int(hashlib.sha256(r["id"].encode()).hexdigest()[0], 16)
        assert split_of(r) == ("fit" if digit < FIT_SHARE_OF_16 else "check"), r["id"]
        changed = dict(r, measured=r["measured"] * 2, source="https://example.invalid/other", quote="x")
        assert split_of(changed) == split_of(r), r["id"]
    assert split_of({"id": "any-memory-row", "metric": "weights_per_gpu_bytes"}) == "check"
    decode = [r for r in rows if r["metric"] == "decode_tok_s" and not r.get("known_gap")]
    assert sum(split_of(r) == "fit" for r in decode) >= 5
    assert sum(split_of(r) == "check" for r in decode) >= 5


def test_prediction_never_exceeds_roofline():
    for r in speed_rows():
        c = predict_speed(r)
        assert 0 < c.predicted <= c.bound * (1 + 1e-9), r["id"]


def test_fitted_factors_are_physical_and_stored():
    """Efficiencies in (0, 1], overheads >= 0, and the values in factors.py are what the fit gives."""
    for k, f in F.BW_EFFICIENCY.items():
        assert 0 < f.value <= 1.0, k
    assert F.LAYER_OVERHEAD_S.value >= 0 and F.MOE_LAYER_OVERHEAD_S.value >= 0
    r = fit()
    assert set(r.rows) == {x["id"] for x in fit_rows()}
    for k, v in r.bw_efficiency.items():
        assert EFF_BOUNDS[0] <= v <= EFF_BOUNDS[1]
        stored = F.BW_EFFICIENCY[k].value
        assert stored == pytest.approx(v, abs=0.02), f"refit {k}: {v} (stored {stored})"
        assert "fitted on rows" in F.BW_EFFICIENCY[k].source
    assert F.LAYER_OVERHEAD_S.value == pytest.approx(r.layer_overhead_s, abs=3e-6)
    assert F.MOE_LAYER_OVERHEAD_S.value == pytest.approx(r.moe_layer_overhead_s, abs=8e-6)
    tols = {"step": 60e-6, "layer": 3e-6, "moe": 8e-6, "tp": 3e-6}
    for eng, params in r.engine.items():
        for name, table in (("step", F.ENGINE_STEP_OVERHEAD_S), ("layer", F.ENGINE_LAYER_OVERHEAD_S),
                            ("moe", F.ENGINE_MOE_LAYER_OVERHEAD_S), ("tp", F.ENGINE_TP_LAYER_SYNC_S)):
            assert table[eng].value >= 0, (eng, name)
            assert table[eng].value == pytest.approx(params[name], abs=tols[name]), \
                f"refit {eng} {name}: {params[name]}"
            if table[eng].value > 0:
                assert "fitted on rows" in table[eng].source, (eng, name)


def test_decode_median_error_per_engine_not_worse_than_documented(report):
    import statistics
    cases, _ = report
    for (eng, split), limit in DECODE_ENGINE_MEDIAN_MAX.items():
        errs = [abs(c.error) for c in cases if c.metric == "decode_tok_s" and c.engine == eng and c.split == split
                and not c.known_gap]
        assert errs, (eng, split)
        assert statistics.median(errs) <= limit, (eng, split, statistics.median(errs))


def test_engine_dimension_in_decode():
    """Datacenter engines pay per-step and per-MoE-layer costs; a dense 8B model on one H100 stays near its roofline
    while DeepSeek-class MoE at TP8 is far below it (the motivating rows: 30 and 13 tok/s measured)."""
    rows = {r["id"]: r for r in speed_rows()}
    dense = predict_speed(rows["vllm-yobitel-llama31-8b-h100-c1"])
    assert 0.65 * dense.bound <= dense.predicted <= dense.bound  # bound = 100% of HBM peak; expected ~0.8
    moe = predict_speed(rows["vllm-deepseek-v32-h20-tp8-1req"])
    assert moe.predicted < 0.35 * moe.bound and moe.predicted < 150
    lc = dict(rows["vllm-yobitel-llama31-8b-h100-c1"], engine="llamacpp")
    assert predict_speed(lc).predicted > dense.predicted  # no serving-engine step cost for llama.cpp


def test_weights_within_2_percent(report):
    cases, _ = report
    assert sum(c.metric == "weights_per_gpu_bytes" and not c.known_gap for c in cases) >= 2
    assert sum(c.metric == "gguf_file_bytes" and not c.known_gap for c in cases) >= 4
    for c in cases:
        if c.metric == "weights_per_gpu_bytes" and not c.known_gap:
            assert abs(c.error) <= WEIGHTS_MAX, (c.id, c.error)
        if c.metric == "gguf_file_bytes" and not c.known_gap:
            assert abs(c.error) <= GGUF_MAX, (c.id, c.error)


def test_kv_within_10_percent(report):
    cases, _ = report
    assert sum(c.metric.startswith("kv_") and not c.known_gap for c in cases) >= 5
    for c in cases:
        if c.metric.startswith("kv_") and not c.known_gap:
            assert abs(c.error) <= KV_MAX, (c.id, c.error)


def test_decode_median_error_not_worse_than_documented(report):
    _, s = report
    assert s[("decode_tok_s", "check")].median_abs_error <= DECODE_CHECK_MEDIAN_MAX
    assert s[("decode_tok_s", "fit")].median_abs_error <= DECODE_FIT_MEDIAN_MAX
    assert s[("decode_tok_s", "check")].median_abs_error <= 0.25  # the target


def test_prefill_mfu_stored_equals_refit():
    """The llama.cpp prefill MFUs in factors.py are what fit_prefill_mfu computes from the fit rows."""
    from optimizer.estimate import factors as F
    from optimizer.fidelity.calibrate import fit_prefill_mfu
    fitted = fit_prefill_mfu()
    for kind, value in fitted["llamacpp"].items():
        assert F.PREFILL_MFU_BY_ENGINE["llamacpp"][kind].value == pytest.approx(value, rel=1e-3)
        assert 0 < value <= 1


def test_prefill_error_documented():
    """Prefill (llama.cpp rows) after fitting its MFU: documented median error fit 16.5%, check 8.2% (+ margin).
    (Was 10.2% / 15.0% before prefill read the weights once per 512-token ubatch, as llama.cpp does: the fit rows
    got worse, the held-out row better.)"""
    from optimizer.fidelity.report import run, summarize
    s = {(x.metric, x.split): x for x in summarize(run("prefill_tok_s"))}
    fit, check = s[("prefill_tok_s", "fit")].median_abs_error, s[("prefill_tok_s", "check")].median_abs_error
    assert s[("prefill_tok_s", "fit")].n >= 3 and s[("prefill_tok_s", "check")].n >= 1
    assert 0 <= fit <= 0.18       # errors are fractions (0.165 = 16.5%)
    assert 0 <= check <= 0.10


def test_factors_file_is_what_the_fit_writes():
    """optimizer/estimate/factors.yaml is exactly what `bench/fidelity.py --fit` writes from a refit (same date)."""
    from optimizer.fidelity.calibrate import factors_document, fit_prefill_mfu, render_factors
    stored = F.FACTORS_FILE.read_text()
    refit = render_factors(factors_document(fit(), fit_prefill_mfu(), F.FITTED["fitted_on"]))
    assert refit == stored, "factors changed: run python bench/fidelity.py --fit and commit factors.yaml"


def test_host_reserve_is_one_number():
    """One named host reserve: the planner's table and the independent check both charge F.HOST_RESERVED_BYTES."""
    from optimizer.solver import candidates, validate
    assert not hasattr(candidates, "HOST_RESERVED_BYTES") and not hasattr(validate, "RESERVED_HOST_BYTES")
    assert F.HOST_RESERVED_BYTES == 16 * 2**30
