"""The fleet search's shortcuts change nothing: `Evaluator` is `evaluate()` at every rate, the rate-free bound is
above every feasible rate, the root finder brackets the capacity, and the cost-bound pruning never removes the
optimum (against brute force)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from optimizer.catalog.models import resolve_model
from optimizer.estimate.deployment import Evaluator, evaluate
from optimizer.estimate.serving import Workload
from optimizer.fleet import model as M
from optimizer.fleet.capacity import REL_TOL, SLA, Config, Replica
from optimizer.fleet.solve import _cost_bound_drop
from optimizer.layout import Parallel

CASES = [
    # dense TP on one node; MoE with DP-attention + EP; PP across two nodes; a small card
    ("qwen3-32b", Config("hgx-h100-8", "h100-sxm", 2, 1, "vllm", "fp8", None, Parallel(tp=2))),
    ("qwen3-30b-a3b", Config("hgx-h200-8", "h200-sxm", 4, 1, "sglang", "native", None, Parallel(tp=1, dp=4, ep=True))),
    ("llama-3.1-70b", Config("hgx-h100-8", "h100-sxm", 8, 2, "vllm", "fp8", None, Parallel(tp=8, pp=2))),
    ("qwen3-8b", Config("pcie-l40s-8", "l40s", 1, 1, "vllm", "native", None, Parallel(tp=1))),
]
SLAS = [SLA(2048, 512, 1.0, 0.04), SLA(8000, 1000, 3.0, 0.06, 0.95)]


def _fields(ev):
    s = ev.serving
    return (ev.deployment, ev.decode, ev.prefill, ev.memory, ev.notes,
            None if s is None else (s.tpot_s, s.ttft_s, s.ttft_p90_s, s.request_rate_rps, s.decoding_seqs,
                                    s.admitted_seqs, s.prefill_share, s.stable, s.binding))


@pytest.mark.parametrize("model,cfg", CASES[:2])
def test_evaluator_is_evaluate_at_every_rate(model, cfg):
    rep = Replica(resolve_model(model), cfg, SLAS[0])
    d = rep.deployment(Workload(2048, 512, rate_rps=1.0))
    ev = Evaluator(d)
    for rate in (0.05, 1.0, 7.0, 40.0, 1.0):  # the memo shared across rates must not leak between them
        w = Workload(2048, 512, rate_rps=rate)
        assert _fields(ev.at(w)) == _fields(evaluate(replace(d, workload=w)))
    for w in (Workload(2048, 1, rate_rps=3.0), Workload(2048, 512, rate_rps=3.0, prefix_hit=0.5)):
        assert _fields(ev.sibling(w).at(w)) == _fields(evaluate(replace(d, workload=w)))
    with pytest.raises(ValueError):
        ev.at(Workload(1024, 512, rate_rps=1.0))  # another shape needs its own Evaluator


@pytest.mark.parametrize("model,cfg", CASES)
@pytest.mark.parametrize("sla", SLAS)
def test_rate_free_bound_and_root_finder(model, cfg, sla):
    rep = Replica(resolve_model(model), cfg, sla)
    if not rep.fits():
        pytest.skip("does not fit")
    budget = sla.ttft_s - sla.tpot_s
    for role, b in (("aggregated", None), ("decode", None), ("prefill", budget)):
        ub = rep.bound(role, b)
        cap = rep.capacity(role, b)
        assert ub >= cap
        if cap > 0:
            assert rep.ok(role, cap, b)
        if ub > 0:  # a scan in 2% steps from the bound down finds nothing feasible above the bracket
            x = ub
            while x > cap * (1 + REL_TOL):
                assert not rep.ok(role, x, b) or x == ub == cap
                x *= 0.98
            assert not rep.ok(role, ub * 4.0, b)
        lo, up = rep.bracket(role, b)
        if lo > 0:  # the root finder's bracket: feasible low end, infeasible (or the bound itself) high end
            assert up <= lo * (1 + REL_TOL) + 1e-12
            assert up == lo == ub or not rep.ok(role, up, b)


def _rows(rng: random.Random) -> list[M.Row]:
    rows = []
    for role in ("aggregated", "prefill", "decode"):
        for _ in range(rng.randint(1, 2)):
            link = None if role == "aggregated" else rng.randint(0, 1)
            rows.append(M.Row(role, rng.randint(600, 2500), rng.randint(5, 60), rng.choice((1, 2, 4, 8)), link))
    return rows


def _without(rows: list[M.Row], drop: set[int]) -> list[M.Row]:
    return [M.Row(r.role, 0, r.cost, r.gpus, r.link_class) if i in drop else r for i, r in enumerate(rows)]


@pytest.mark.parametrize("seed", range(40))
def test_cost_bound_pruning_keeps_the_optimum(seed):
    rng = random.Random(seed)
    true = _rows(rng)
    rate = rng.randint(500, 3000)
    # some rows are known only by an optimistic capacity (>= the true one), as in the lazy search
    exact = {i for i in range(len(true)) if rng.random() < 0.5}
    seen = [r if i in exact else replace(r, cap=int(r.cap * rng.uniform(1.0, 2.0))) for i, r in enumerate(true)]
    for disagg in (True, False):
        want = M.brute_force(true, rate, allow_disagg=disagg)
        for ub in (float("inf"), want):
            if ub is None:
                continue
            drop = _cost_bound_drop(seen, exact, rate, disagg, ub)
            assert M.brute_force(_without(true, drop), rate, allow_disagg=disagg) == want


def test_cost_bound_by_hand():
    # rate 1,000; A: cap 1,000 at $30 (exact: a fleet of $30, the UB); B: cap 400 at $11 (best $/cap 0.0275);
    # C: cap 100 at $29: LB_C = 29 + (1,000 - 100) x 0.0275 = 53.75 > 30, dropped; B: 11 + 600 x 0.0275 = 27.5 kept
    rows = [M.Row("aggregated", 1000, 30, 8, None), M.Row("aggregated", 400, 11, 1, None),
            M.Row("aggregated", 100, 29, 1, None)]
    assert _cost_bound_drop(rows, {0}, 1000, False) == {2}


@pytest.mark.parametrize("seed", range(15))
def test_dropping_duplicate_rows_changes_no_answer(seed):
    from optimizer.fleet.solve import _duplicates

    rng = random.Random(seed)
    rows = _rows(rng)
    rows += [rows[rng.randrange(len(rows))] for _ in range(3)]  # exact copies, later in the table
    rate = rng.randint(500, 3000)
    drop = _duplicates(rows, set())
    assert all(any(rows[k] == rows[i] for k in range(i)) for i in drop)  # only later copies go
    full = M.solve(rows, rate, 2, time_limit_s=5)
    cut = M.solve(_without(rows, drop), rate, 2, time_limit_s=5)
    assert (full is None) == (cut is None)
    if full is not None:
        assert (full.cost, full.gpus, full.counts) == (cut.cost, cut.gpus, cut.counts)


def test_affordable_cut_changes_no_fleet(monkeypatch):
    """Candidates dearer than a fleet found among the cheaper half are skipped: the same fleet as searching all."""
    import optimizer.fleet.solve as S
    from optimizer.fleet import FleetQuery, solve_fleet

    q = FleetQuery("qwen3-8b", 2000, 200, 30.0, 0.5, 0.03, objective="capex", compare_other=False)
    cut = solve_fleet(q)
    monkeypatch.setattr(S, "AFFORDABLE_MIN", 10**9)  # search every candidate
    whole = solve_fleet(q)
    assert cut.candidates == whole.candidates >= 40
    assert cut.rows < whole.rows  # the cut did skip candidates
    assert cut.fleet is not None and cut.fleet.model_dump() == whole.fleet.model_dump()
