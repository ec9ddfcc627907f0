"""The serving model (optimizer/estimate/serving.py) against hand calculations, and the published serving rows."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.estimate.serving import Workload, serve
from optimizer.fidelity.serving import comparable, medians, run, serving_rows


def test_closed_loop_single_request_is_prefill_plus_decode():
    """One request in flight, constant 10 ms/token, 0.5 s prefill: each request takes 0.5 + 100 x 0.01 = 1.5 s, so
    0.667 req/s; prefill occupies 0.333 of the time, stretching TPOT to 10 / (1 - 1/3) = 15 ms; with it the cycle
    is 0.5 + 1.5 + wait and the fixed point lands below 0.667 req/s."""
    w = Workload(isl=1000, osl=100, concurrency=1)
    s = serve(w, world=1, dp=1, admitted_per_replica=10, step_time=lambda _n: 0.010, prefill_single_s=0.5,
              prefill_work_s=0.5)
    # fixed point: x = 1 / (0.5 + wait(rho) + 100 * 0.01 / (1 - 0.5 x)), rho = 0.5 x
    x = s.request_rate_rps
    rho = 0.5 * x
    wait = rho / (2 * (1 - rho)) * 0.5
    assert x == pytest.approx(1 / (0.5 + wait + 1.0 / (1 - rho)), rel=1e-3)
    assert s.tpot_s == pytest.approx(0.010 / (1 - rho), rel=1e-6)
    assert s.output_tok_s == pytest.approx(x * 100)
    assert s.total_tok_s == pytest.approx(x * 1100)
    assert s.stable


def test_open_loop_littles_law_and_overload():
    """At 2 req/s with 0.1 s prefill work: rho = 0.2; decoding sequences = rate x osl x TPOT (Little's law)."""
    w = Workload(isl=512, osl=200, rate_rps=2.0)
    s = serve(w, world=2, dp=1, admitted_per_replica=1000, step_time=lambda n: 0.01 + 0.001 * n,
              prefill_single_s=0.1, prefill_work_s=0.1)
    assert s.prefill_share == pytest.approx(0.2)
    assert s.decoding_seqs == pytest.approx(2.0 * 200 * s.tpot_s, rel=1e-3)
    assert s.tpot_s == pytest.approx((0.01 + 0.001 * s.decoding_seqs) / 0.8, rel=1e-3)
    assert s.output_tok_s_per_gpu == pytest.approx(2.0 * 200 / 2)
    over = serve(Workload(isl=512, osl=200, rate_rps=20.0), world=1, dp=1, admitted_per_replica=1000,
                 step_time=lambda _n: 0.01, prefill_single_s=0.1, prefill_work_s=0.1)
    assert not over.stable and over.output_tok_s == 0 and math.isinf(over.ttft_s)


def test_kv_capacity_queues_the_rest():
    w = Workload(isl=100, osl=100, concurrency=64)
    s = serve(w, world=1, dp=1, admitted_per_replica=16, step_time=lambda _n: 0.01, prefill_single_s=0.01,
              prefill_work_s=0.01)
    assert s.binding == "kv_capacity" and s.decoding_seqs <= 16 + 1e-9
    assert s.ttft_s > 0.01 + 1.0  # queued behind whole requests of ~1 s


def test_published_serving_rows_are_all_evaluated():
    """bench/serving.py's rows: at least 10 benchmarks from 5+ sources, none skipped by an error."""
    rows = [r for r in serving_rows() if comparable(r)]
    cases, skipped = run()
    assert not skipped, skipped
    assert len(cases) == len(rows) >= 10
    assert len({c.source for c in cases}) >= 5
    m = medians(cases)
    assert set(m) == {"tpot_ms", "ttft_ms", "output_tok_s_per_gpu"}


def test_scenario_fields_cover_every_query_field():
    """The cheapest question is one thing: every Query field can be set from a scenario file (except `loads`,
    whose files are not yet resolved relative to the scenario) and the CLI offers the workload fields."""
    from optimizer.scenarios.schema import QuestionFields
    from optimizer.solver.query import Query
    # `calibration` is the user profile the CLI loads (rigopt calibrate), not a field of the question itself
    missing = set(Query.model_fields) - set(QuestionFields.model_fields) - {"loads", "calibration"}
    assert not missing, missing


def test_cheapest_workload_plan_agrees_with_the_checker_and_estimate():
    """A served-workload question: the plan's serving figures are evaluate()'s, the checker passes it, and
    `estimate` on the same hardware gives the same TPOT and weights per device."""
    from optimizer.catalog.models import resolve_model
    from optimizer.estimate.serving import Workload
    from optimizer.report.estimate import estimate
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    from optimizer.solver.validate import check
    q = Query(model="qwen3-8b", context=4096 + 512, isl=4096, osl=512, concurrency=8, tok_s=20,
              gpus=["h100-sxm"], engines=["vllm"], quants=["native"], top=1, workers=1)
    r = cheapest(q)
    p = r.plan
    assert p is not None and p.serving is not None and p.settings is not None
    assert check(p, q) == []
    assert 1 / p.serving.tpot_s >= 20
    from optimizer.estimate.deployment import EngineSettings
    e = estimate(resolve_model("qwen3-8b"), context=q.context, concurrency=8, quants=["native"], engine="vllm",
                 engine_explicit=True, gpu="h100-sxm", gpus=p.hardware.n_nodes * p.hardware.gpus_per_node,
                 workload=Workload(isl=4096, osl=512, concurrency=8),
                 settings=EngineSettings(max_num_seqs=p.settings.max_num_seqs))
    h = e.hardware
    assert h is not None and h.serving is not None
    assert h.per_device.weights_bytes == p.memory.weights_bytes
    assert h.serving.tpot_s == pytest.approx(p.serving.tpot_s, rel=1e-12)
    assert h.settings.max_num_seqs == p.settings.max_num_seqs


@settings(max_examples=6, deadline=None, derandomize=True)
@given(model=st.sampled_from(["qwen3-8b", "gpt-oss-20b", "qwen3-30b-a3b", "llama-3.1-8b"]),
       context=st.sampled_from([4096, 32768]), concurrency=st.sampled_from([1, 4]),
       engine=st.sampled_from(["vllm", "sglang"]), workload=st.booleans(), calibrated=st.booleans())
def test_cheapest_estimate_and_checker_agree_to_the_byte(model, context, concurrency, engine, workload, calibrated):
    """The same plan evaluated three ways (the solver's build, `estimate` with the plan's hardware and layout, the
    independent checker) gives identical memory, decode, TTFT and serving figures: one evaluate() behind all; also
    with a user calibration profile (rigopt calibrate) correcting both GPU types."""
    from optimizer.catalog.models import resolve_model
    from optimizer.estimate.calibration import Calibration, CalibrationEntry
    from optimizer.estimate.memory import Parallel
    from optimizer.report.estimate import estimate
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    from optimizer.solver.validate import evaluate as check_eval
    kw = dict(isl=context // 2, osl=256) if workload else {}
    cal = Calibration(tuple(CalibrationEntry(g, 1, engine, decode=0.7, decode_runs=2, prefill=1.3, prefill_runs=1)
                            for g in ("h100-sxm", "l40s")), profile="test") if calibrated else None
    q = Query(model=model, context=context, concurrency=concurrency, gpus=["h100-sxm", "l40s"], engines=[engine],
              quants=["native"], top=1, workers=1, calibration=cal, **kw)
    p = cheapest(q).plan
    assert p is not None
    par = Parallel(tp=p.parallel.tp, pp=p.parallel.pp, dp=p.parallel.dp, ep=p.parallel.ep)
    gpus = p.hardware.n_nodes * p.hardware.gpus_per_node
    from optimizer.estimate.deployment import EngineSettings
    assert p.settings is not None
    e = estimate(resolve_model(model), context=context, concurrency=q.kv_sequences, quants=["native"],
                 kv_dtype=p.kv_dtype, engine=engine, engine_explicit=True, gpu=p.hardware.accelerator, gpus=gpus,
                 parallel=par, workload=q.workload, cpu_moe_layers=p.offload.expert_layers_offloaded or None,
                 settings=EngineSettings(max_num_seqs=p.settings.max_num_seqs), calibration=cal).hardware
    c = check_eval(p, q)
    assert e is not None and e.node == p.hardware.node
    assert (e.calibration is not None) == calibrated == (c.physics.calibration is not None)
    for field in ("capacity_bytes", "budget_bytes", "weights_bytes", "kv_bytes", "runtime_bytes", "headroom_bytes"):
        assert getattr(e.per_device, field) == getattr(p.memory, field) == getattr(c.mem, field), field
    # expected figures: estimate and the plan print the model's figure (the checker's) times its regime's bias
    from optimizer.catalog.hardware import get_accelerator
    from optimizer.estimate.uncertainty import expected_figure, trust
    tr = trust(engine, get_accelerator(p.hardware.accelerator), q.planning_batch, 0.8,
               offload=p.offload.mode != "none", spec=resolve_model(model).spec)
    assert e.decode.tok_s_per_seq == p.speed.tok_s_per_seq == expected_figure(tr.decode, c.speed.tok_s_per_seq)
    assert e.decode.ttft_s == p.speed.ttft_s == expected_figure(tr.prefill, c.prefill.ttft_s, time=True)
    assert e.decode.terms_s == p.speed.terms_s
    if workload:
        assert e.serving is not None and p.serving is not None
        iv, is_speed = tr.served_tpot()
        assert e.serving.tpot_s == p.serving.tpot_s == expected_figure(iv, c.physics.tpot_s, time=is_speed)
        assert e.serving.output_tok_s == p.serving.output_tok_s
        assert e.settings.max_num_batched_tokens == p.settings.max_num_batched_tokens


def test_held_out_local_rows_are_predicted_or_skipped_with_a_reason():
    """Every local row is either compared or skipped with a stated reason; none fails inside the physics."""
    from optimizer.fidelity import heldout
    cases, skipped = heldout.run()
    assert len(cases) >= 40
    assert not [why for _, why in skipped if "Error" in why], skipped
    assert {c.metric for c in cases} == {"decode_tok_s", "prefill_tok_s"}
    assert all(c.predicted > 0 and c.measured > 0 for c in cases)
