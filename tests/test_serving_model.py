"""The serving model (optimizer/estimate/serving.py) against hand calculations, and the published serving rows."""

from __future__ import annotations

import math

import pytest

from optimizer.estimate.serving import Workload, serve
from optimizer.fidelity.serving import comparable, medians, run, serving_rows


def test_closed_loop_single_request_is_prefill_plus_decode():
    """One request in flight, constant 10 ms/token, 0.5 s prefill: each request takes 0.5 + 100 x 0.01 = 1.5 s, so
    0.667 req/s; prefill occupies 0.333 of the time, stretching TPOT to 10 / (1 - 1/3) = 15 ms; with it the cycle
    is 0.5 + 1.5 + wait and the fixed point lands below 0.667 req/s."""
    w = Workload(isl=1000, osl=100, concurrency=1)
    s = serve(w, world=1, dp=1, admitted_per_replica=10, step_time=lambda n: 0.010, prefill_single_s=0.5,
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
                 step_time=lambda n: 0.01, prefill_single_s=0.1, prefill_work_s=0.1)
    assert not over.stable and over.output_tok_s == 0 and math.isinf(over.ttft_s)


def test_kv_capacity_queues_the_rest():
    w = Workload(isl=100, osl=100, concurrency=64)
    s = serve(w, world=1, dp=1, admitted_per_replica=16, step_time=lambda n: 0.01, prefill_single_s=0.01,
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
