"""Prediction intervals (optimizer/estimate/uncertainty.py) and planning at their low end (cheapest --confidence).

The interval arithmetic is checked by hand on a small table; the shipped table is checked against the
cross-validation in tests/test_fidelity.py.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from optimizer.catalog.hardware import get_accelerator
from optimizer.catalog.models import resolve_model
from optimizer.cli import app
from optimizer.estimate import uncertainty as U
from tests.hyp import examples

_SPEC8B = resolve_model("llama-3.1-8b").spec  # a dense/s model: the hand-made table has no model-class rows
QS = [-0.5, -0.4, -0.3, -0.25, 0.0, 0.25, 0.3, 0.4, 0.5]  # at QUANTILE_LEVELS 5,10,20,25,50,75,80,90,95 %


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture
def table(monkeypatch):
    """A hand-made table: llama.cpp on consumer NVIDIA at batch 1 has its own decode row; everything else backs
    off to "*" (wider)."""
    t = {"schema_id": U.UNCERTAINTY_SCHEMA, "intervals": {"decode": {
        "llamacpp/nvidia-consumer/b1": {"n_rows": 9, "n_sources": 4, "log_ratio_quantiles": QS},
        "*": {"n_rows": 50, "n_sources": 20, "log_ratio_quantiles": [2 * x for x in QS]},
    }, "prefill": {"*": {"n_rows": 30, "n_sources": 12, "log_ratio_quantiles": [0.1 + x for x in QS]}}}}
    monkeypatch.setattr(U, "_TABLE", t)
    return t


@pytest.mark.usefixtures("table")
def test_levels_and_hand_arithmetic():
    acc = get_accelerator("rtx-4090")
    iv = U.interval("decode", "llamacpp", acc, 1, 0.8)
    assert iv.regime == "llamacpp/nvidia-consumer/b1" and iv.n_rows == 9
    # 80%: the 10% and 90% quantiles
    assert iv.low_ratio == pytest.approx(math.exp(-0.4)) and iv.high_ratio == pytest.approx(math.exp(0.4))
    iv50 = U.interval("decode", "llamacpp", acc, 1, 0.5)
    assert iv50.low_ratio == pytest.approx(math.exp(-0.25)) and iv50.high_ratio == pytest.approx(math.exp(0.25))
    # 70%: levels 15% and 85%, linear between the stored levels: -0.4 + 0.1 * 0.5 = -0.35; 0.3 + 0.1 * 0.5 = 0.35
    iv70 = U.interval("decode", "llamacpp", acc, 1, 0.7)
    assert iv70.low_ratio == pytest.approx(math.exp(-0.35)) and iv70.high_ratio == pytest.approx(math.exp(0.35))
    # beyond the stored levels: clamped to the 5% / 95% quantiles
    iv99 = U.interval("decode", "llamacpp", acc, 1, 0.99)
    assert iv99.low_ratio == pytest.approx(math.exp(-0.5))
    with pytest.raises(ValueError):
        U.interval("decode", "llamacpp", acc, 1, 1.0)


@pytest.mark.usefixtures("table")
def test_backoff_never_borrows_another_regime():
    """Batched llama.cpp, another engine, another hardware class and offloaded experts all get the all-rows
    interval, never the narrower llama.cpp/consumer one."""
    acc = get_accelerator("rtx-4090")
    for engine, a, batch, off in (("llamacpp", acc, 8, False), ("vllm", acc, 1, False),
                                  ("llamacpp", get_accelerator("h100-sxm"), 1, False), ("llamacpp", acc, 1, True)):
        iv = U.interval("decode", engine, a, batch, 0.8, offload=off)
        assert iv.regime == "*" and iv.low_ratio == pytest.approx(math.exp(-0.8)), (engine, batch, off)
    assert U.interval("ttft", "vllm", acc, 1) is None  # no rows at all: no interval


@pytest.mark.usefixtures("table")
def test_planning_ratios_never_loosen_a_target():
    acc = get_accelerator("rtx-4090")
    speed, ttft = U.planning_ratios("llamacpp", acc, 1, 0.8, served=False, spec=_SPEC8B)
    assert speed == pytest.approx(math.exp(-0.4))
    # prefill quantiles shifted +0.1: the 10% level is -0.3, so TTFT x 1/exp(-0.3)
    assert ttft == pytest.approx(1 / math.exp(-0.3))
    assert U.planning_ratios("llamacpp", acc, 1, 0.0, served=False, spec=_SPEC8B) == (1.0, 1.0)
    # a regime where rigopt under-predicts (low end above the prediction) does not make the planner optimistic
    U._TABLE["intervals"]["decode"]["llamacpp/nvidia-consumer/b1"]["log_ratio_quantiles"] = [x + 1 for x in QS]
    assert U.planning_ratios("llamacpp", acc, 1, 0.8, served=False, spec=_SPEC8B)[0] == 1.0
    # served TTFT without a ttft interval: unchanged
    assert U.planning_ratios("vllm", acc, 1, 0.8, served=True, spec=_SPEC8B)[1] == 1.0


def test_shipped_table_has_every_kind_and_sane_widths():
    U._TABLE = None
    t = U.table()["intervals"]
    assert set(t) == set(U.KINDS)
    for kind, rows in t.items():
        assert "*" in rows
        for key, r in rows.items():
            qs = r["log_ratio_quantiles"]
            assert qs == sorted(qs) and len(qs) == len(U.QUANTILE_LEVELS), (kind, key)
            assert key == "*" or r["n_rows"] >= 8


def _estimate_json(*args: str) -> dict:
    res = CliRunner().invoke(app, ["estimate", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_estimate_reports_intervals_beside_figures():
    h = _estimate_json("llama-3.1-8b", "--gpu", "rtx-4090", "-q", "q4_k_m", "-e", "llamacpp", "--context", "4096",
                       "--confidence", "0.8")["hardware"]
    d, tr = h["decode"], h["trust"]
    iv = U.interval("decode", "llamacpp", get_accelerator("rtx-4090"), 1, 0.8)
    assert tr["decode"]["regime"] == iv.regime and tr["decode"]["n_rows"] == iv.n_rows
    assert d["tok_s_per_seq_low"] == pytest.approx(d["tok_s_per_seq"] * iv.low_ratio)
    assert d["tok_s_per_seq_high"] == pytest.approx(d["tok_s_per_seq"] * iv.high_ratio)
    assert d["ttft_s_low"] < d["ttft_s"] < d["ttft_s_high"]
    wide = _estimate_json("llama-3.1-8b", "--gpu", "rtx-4090", "-q", "q4_k_m", "-e", "llamacpp", "--context", "4096",
                          "--confidence", "0.9")["hardware"]["decode"]
    assert wide["tok_s_per_seq_low"] <= d["tok_s_per_seq_low"] and wide["tok_s_per_seq_high"] >= d["tok_s_per_seq_high"]
    # an out-of-range --confidence is one error line and exit 2 (tests/test_cli.py test_bad_input_one_line_exit_2)


def test_cheapest_confidence_holds_the_target_at_the_low_end():
    """At --confidence 0.8 the plan's expected decode speed times its regime's low ratio meets the target, the
    independent check agrees, and the plan costs no less than the one planned on expected figures."""
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    from optimizer.solver.validate import check
    base = dict(model="qwen3-30b-a3b", context=32768, tok_s=25.0, gpus=["rtx-3090", "rtx-4090", "rtx-5090"],
                top=1, headline_min_bits=3.9)
    q0 = Query(**base, confidence=0.0)
    q8 = Query(**base, confidence=0.8)
    r0, r8 = cheapest(q0), cheapest(q8)
    assert r0.plan is not None and r8.plan is not None
    p8 = r8.plan
    assert p8.trust is not None and p8.trust.planned_at_low_end and p8.trust.confidence == 0.8
    offload = p8.offload.mode != "none"
    spec = resolve_model(p8.model).spec
    speed, _ = U.planning_ratios(p8.engine, get_accelerator(p8.hardware.accelerator), 1, 0.8, False, offload, spec=spec)
    assert speed < 1.0
    assert p8.speed.tok_s_per_seq * speed >= 25.0 * (1 - 1e-6)
    assert check(p8, q8) == []
    assert p8.costs.objective_value >= r0.plan.costs.objective_value
    # the expected-figure plan, checked at 0.8: rejected unless it already had the margin
    ok0 = r0.plan.speed.tok_s_per_seq * U.planning_ratios(
        r0.plan.engine, get_accelerator(r0.plan.hardware.accelerator), 1, 0.8, False,
        r0.plan.offload.mode != "none", spec=spec)[0] >= 25.0
    assert (check(r0.plan, q8) == []) == ok0


_MODELS = ("llama-3.1-8b", "qwen3-30b-a3b", "gpt-oss-120b", "deepseek-v4-pro", "llama-3.1-70b",
           "qwen3-next-80b-a3b", "deepseek-r1")
_GPUS = ("rtx-4090", "rtx-3090", "h100-sxm", "l40s", "mi300x", "b200", "dgx-spark", "m3-ultra-512gb")


def _inside(lo: float | None, x: float | None, hi: float | None) -> bool:
    if lo is None or x is None or hi is None or not all(map(math.isfinite, (lo, x, hi))):
        return True  # no interval, or an unbounded figure
    return lo * (1 - 1e-9) <= x <= hi * (1 + 1e-9)


def _check_inside(res) -> int:
    """Every expected figure of an estimate lies inside its own interval; returns how many were checked."""
    h = res.hardware
    if h is None:
        return 0
    d, n = h.decode, 0
    for lo, x, hi in ((d.tok_s_per_seq_low, d.tok_s_per_seq, d.tok_s_per_seq_high),
                      (d.ttft_s_low, d.ttft_s, d.ttft_s_high)):
        assert _inside(lo, x, hi), (lo, x, hi)
        n += lo is not None
    s = h.serving
    if s is not None:
        for lo, x, hi in ((s.tpot_s_low, s.tpot_s, s.tpot_s_high), (s.ttft_s_low, s.ttft_s, s.ttft_s_high),
                          (s.output_tok_s_low, s.output_tok_s, s.output_tok_s_high)):
            assert _inside(lo, x, hi), (lo, x, hi)
            n += lo is not None
    return n


def _biased(shift: float) -> dict:
    """The shipped table with every regime's bias set to `shift` (a hypothetical, strongly biased fit)."""
    U._TABLE = None
    t = U.table()
    out = dict(t, intervals={k: {key: dict(r, bias_log=shift) for key, r in rows.items()}
                             for k, rows in t["intervals"].items()})
    U._TABLE = None
    return out


def test_expected_figure_inside_its_interval_issue_example():
    """The issue's example printed expected 38.8 tok/s with an interval of 47.1-120.8."""
    d = _estimate_json("deepseek-v4-pro", "--gpu", "l40s", "--gpus", "8", "--engine", "sglang", "--quant", "int4",
                       "--context", "384K")["hardware"]["decode"]
    assert d["tok_s_per_seq_low"] <= d["tok_s_per_seq"] <= d["tok_s_per_seq_high"]
    assert d["ttft_s_low"] <= d["ttft_s"] <= d["ttft_s_high"]


@given(model=st.sampled_from(_MODELS), gpu=st.sampled_from(_GPUS), gpus=st.sampled_from((1, 2, 4, 8)),
       engine=st.sampled_from(("vllm", "sglang", "llamacpp", "ollama")),
       context=st.sampled_from((4096, 32768, 131072, 393216)), concurrency=st.sampled_from((1, 4, 64)),
       served=st.booleans(), confidence=st.floats(0.05, 0.95), shift=st.sampled_from((None, -0.9, 0.6, 1.5)))
@settings(max_examples=examples(200, 25))
def test_expected_figure_always_inside_its_interval(model, gpu, gpus, engine, context, concurrency, served,
                                                    confidence, shift, monkeypatch_module):
    """Over many estimate inputs and confidence levels, with the shipped intervals and with tables whose every
    regime is strongly biased (the estimate then moves its expected figures by the bias), each expected figure
    (decode tok/s, TTFT, served TPOT / TTFT / output tok/s) lies inside its own interval."""
    from optimizer.catalog.models import resolve_model
    from optimizer.errors import InputError
    from optimizer.estimate.serving import Workload
    from optimizer.report.estimate import estimate
    tab = None if shift is None else _biased(shift)
    monkeypatch_module.setattr(U, "_TABLE", tab)
    try:
        res = estimate(resolve_model(model), context=min(context, 131072 if gpu.startswith("rtx") else context),
                       concurrency=concurrency, engine=engine, gpu=gpu, gpus=gpus if gpu != "dgx-spark" else 1,
                       confidence=confidence,
                       workload=Workload(isl=1024, osl=256, concurrency=concurrency) if served else None)
    except InputError:
        assume(False)
        return
    finally:
        monkeypatch_module.setattr(U, "_TABLE", None)
    n = _check_inside(res)
    if shift is not None and n and res.hardware is not None and res.hardware.trust is not None:
        assert res.hardware.trust.decode is None or \
            res.hardware.trust.decode.bias == pytest.approx(math.exp(shift), rel=1e-6)


def test_cheapest_and_estimate_print_the_same_interval_for_the_same_plan():
    """One question, one answer: qwen3-30b-a3b (moe/s) on a DGX Spark with llama.cpp at batch 1 has a model-class
    regime (llamacpp/unified/b1/moe/s) finer than the engine x hardware x batch one; the plan cheapest returns, the
    planner's target margin, the hetero planner and `estimate` of that plan all use that same regime and bounds."""
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    U._TABLE = None
    acc = get_accelerator("dgx-spark")
    spec = resolve_model("qwen3-30b-a3b").spec
    mclass = U.model_class(spec)
    assert mclass == "moe/s"
    fine = U.interval("decode", "llamacpp", acc, 1, 0.8, mclass=mclass)
    coarse = U.interval("decode", "llamacpp", acc, 1, 0.8)
    # the case only tests something while the shipped table keeps the two regimes apart
    assert fine is not None and coarse is not None and fine.regime != coarse.regime
    r = cheapest(Query(model="qwen3-30b-a3b", context=8192, tok_s=10.0, gpus=["dgx-spark"], engines=["llamacpp"],
                       top=1, confidence=0.8))
    p = r.plan
    assert p is not None and p.engine == "llamacpp" and p.offload.mode == "none" and p.trust is not None
    assert p.trust.decode_regime == fine.regime
    h = _estimate_json("qwen3-30b-a3b", "--gpu", "dgx-spark", "-e", "llamacpp", "-q", p.quant, "--context", "8192",
                       "--confidence", "0.8")["hardware"]
    d = h["decode"]
    assert h["trust"]["decode"]["regime"] == p.trust.decode_regime
    assert d["tok_s_per_seq_low"] == pytest.approx(p.trust.tok_s_per_seq_low, rel=1e-6)
    assert d["tok_s_per_seq_high"] == pytest.approx(p.trust.tok_s_per_seq_high, rel=1e-6)
    assert h["trust"]["prefill"]["regime"] == p.trust.ttft_regime
    # the planner's margin is the same regime's low end
    speed, _ = U.planning_ratios("llamacpp", acc, 1, 0.8, False, spec=spec)
    assert speed == pytest.approx(min(1.0, fine.low_ratio))


def test_a_served_plan_is_held_to_the_served_tpot_interval_it_prints():
    """One question, one answer for served workloads: the planner's speed margin, the plan's printed interval and
    `estimate`'s served TPOT use the served-TPOT interval (Trust.served_tpot), not the single-stream decode one.
    The question is also the one that used to end in `internal error: OverflowError` (an H20 candidate whose served
    TPOT was infinite while the workload counted as sustainable reached the integer table)."""
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    U._TABLE = None
    spec = resolve_model("llama-3.1-70b").spec
    h100 = get_accelerator("h100-sxm")
    tp = U.interval("tpot", "sglang", h100, 16, 0.8, mclass=U.model_class(spec))
    dec = U.interval("decode", "sglang", h100, 16, 0.8, mclass=U.model_class(spec))
    assert tp is not None and dec is not None and tp.regime != dec.regime  # otherwise this case tests nothing
    speed, _ = U.planning_ratios("sglang", h100, 16, 0.8, served=True, spec=spec)
    assert speed == pytest.approx(1.0 / max(1.0, tp.high_ratio))
    assert U.planning_ratios("sglang", h100, 16, 0.8, served=False, spec=spec)[0] == pytest.approx(
        min(1.0, dec.low_ratio))
    q = Query(model="llama-3.1-70b", context=2500, tok_s=20.0, concurrency=16, top=1, confidence=0.8, isl=2000,
              osl=500)
    p = cheapest(q).plan
    assert p is not None and p.trust is not None and p.serving is not None
    acc = get_accelerator(p.hardware.accelerator)
    served_iv, is_speed = U.trust(p.engine, acc, q.planning_batch, 0.8, spec=spec).served_tpot()
    assert served_iv is not None and p.trust.decode_regime == served_iv.regime
    # the printed low end is 1 / (TPOT x the interval's high ratio) and holds the target
    if not is_speed:
        assert p.trust.tok_s_per_seq_low == pytest.approx(1.0 / (p.serving.tpot_s * served_iv.high_ratio), rel=1e-6)
    assert p.trust.tok_s_per_seq_low >= 20.0 * (1 - 1e-6)


@settings(max_examples=examples(200, 40), deadline=None)
@given(x=st.floats(1e-4, 1e4), bias_log=st.floats(-2.0, 2.0), time=st.booleans())
def test_model_figure_inverts_expected_figure(x, bias_log, time):
    """verify reads a plan's stored expected figures back into model figures with model_figure: the inverse of
    expected_figure, for speeds and for times a speed interval implies (bias 1: both are the identity)."""
    iv = U.Interval("decode", 0.8, 0.5, 2.0, "r", 10, 3, math.exp(bias_log))
    e = U.expected_figure(iv, x, time)
    assert e == pytest.approx(x * math.exp(-bias_log if time else bias_log), rel=1e-12)
    assert U.model_figure(iv, e, time) == pytest.approx(x, rel=1e-12)
    assert U.model_figure(None, x, time) == U.expected_figure(None, x, time) == x
