"""CP-SAT against the brute-force oracle, on random integer tables and on real small catalogues.

The properties are checked on the CP-SAT model (the brute-force minimum satisfies them by construction, so they
would test nothing there): a looser budget never makes CP-SAT's answer dearer, excluding a row never makes it
cheaper, and the answer does not depend on the row order or on the hint.
"""

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.solver.cpsat import DeploymentModel, greedy_hint
from optimizer.solver.oracle import brute_force
from optimizer.solver.table import IntRow, Limits, row_feasible, step_ns
from tests.hyp import examples


@st.composite
def tables(draw):
    n = draw(st.integers(1, 7))
    rows = []
    ranks = draw(st.permutations(list(range(n))))
    for i in range(n):
        max_layers = draw(st.integers(0, 6))
        rows.append(IntRow(
            index=i, quality_rank=draw(st.integers(0, 2)), tie_rank=ranks[i], max_offload_layers=max_layers,
            max_extra_dram_gb=draw(st.integers(0, 5)), cost=draw(st.integers(1, 50)),
            dram_cost_per_gb=draw(st.integers(0, 7)), device_mib=draw(st.integers(10, 200)),
            device_mib_per_layer=draw(st.integers(0, 40)), device_budget_mib=draw(st.integers(10, 200)),
            host_mb=draw(st.integers(0, 3000)), host_mb_per_layer=draw(st.integers(0, 2500)),
            host_dram_mb=draw(st.integers(0, 6000)),
            step_planes_ns=tuple((draw(st.integers(1, 100)), draw(st.integers(-10, 30)), draw(st.integers(-10, 40)))
                                 for _ in range(draw(st.integers(1, 4)))),
            max_nvme_layers=draw(st.integers(0, 4)), nvme_capacity_mb=draw(st.integers(0, 9000)),
            ttft_ns_per_nvme_layer=draw(st.integers(-5, 20)),
            ttft_ns=draw(st.integers(1, 100)), ttft_ns_per_dram_layer=draw(st.integers(-5, 20))))
    lim = Limits(step_ns=draw(st.one_of(st.none(), st.integers(20, 200))),
                 ttft_ns=draw(st.one_of(st.none(), st.integers(20, 200))),
                 budget=draw(st.one_of(st.none(), st.integers(5, 100))))
    return rows, lim


def solve(rows, lim, exclude=frozenset(), hint=True):
    model = DeploymentModel(rows, lim, exclude)
    h = greedy_hint([r for r in rows if r.index not in exclude], lim) if hint else None
    if h:
        model.hint(*h)
    return model.solve(time_limit_s=10, workers=1)


@settings(max_examples=examples(150, 40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_cpsat_equals_brute_force(data):
    rows, lim = data
    oracle = brute_force(rows, lim)
    sol = solve(rows, lim)
    if oracle is None:
        assert sol.index is None and sol.status == "INFEASIBLE"
    else:
        assert sol.status == "OPTIMAL"
        assert (sol.index, sol.dram_layers, sol.nvme_layers, sol.cost) == oracle
        ok, cost = row_feasible(rows[sol.index], lim, sol.dram_layers, sol.nvme_layers)
        assert ok and cost == sol.cost


@settings(max_examples=examples(60, 15), deadline=None)
@given(tables(), st.integers(0, 60))
def test_cpsat_more_budget_never_costs_more(data, extra):
    rows, lim = data
    a = solve(rows, lim)
    looser = Limits(lim.step_ns, lim.ttft_ns, None if lim.budget is None else lim.budget + extra)
    b = solve(rows, looser)
    if a.index is not None:
        assert b.index is not None and b.cost <= a.cost
        if extra == 0 or lim.budget is None:      # same limits: the same unique answer
            assert (b.index, b.dram_layers, b.nvme_layers) == (a.index, a.dram_layers, a.nvme_layers)


@settings(max_examples=examples(60, 15), deadline=None)
@given(tables(), st.integers(0, 6))
def test_cpsat_excluding_a_row_never_lowers_cost(data, drop):
    rows, lim = data
    a = solve(rows, lim)
    b = solve(rows, lim, exclude=frozenset({drop}))
    if b.index is not None:
        assert b.index != drop
        assert a.index is not None and a.cost <= b.cost
    if a.index is not None and a.index != drop:   # dropping a row the answer does not use changes nothing
        assert (b.index, b.dram_layers, b.nvme_layers, b.cost) == (a.index, a.dram_layers, a.nvme_layers, a.cost)


@settings(max_examples=examples(60, 15), deadline=None)
@given(tables(), st.randoms(use_true_random=False))
def test_cpsat_answer_does_not_depend_on_row_order_or_hint(data, rnd):
    rows, lim = data
    a = solve(rows, lim)
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    b = solve(shuffled, lim, hint=False)
    assert (a.status, a.index, a.dram_layers, a.nvme_layers, a.cost) == \
           (b.status, b.index, b.dram_layers, b.nvme_layers, b.cost)


@settings(max_examples=examples(60, 15), deadline=None)
@given(tables())
def test_step_time_domain_covers_every_offload_level(data):
    """The tight CP-SAT domain of the step-time variable contains every value the row's planes can take."""
    rows, _ = data
    for r in rows:
        lo, hi = r.step_bounds_ns()
        assert lo <= 0 <= hi
        for x in range(r.max_offload_layers + 1):
            for z in range(min(r.max_nvme_layers, r.max_offload_layers - x) + 1):
                assert lo <= step_ns(r, x, z) <= hi


def test_tie_break_prefers_quality_then_speed_then_rank():
    base = IntRow(index=0, quality_rank=1, tie_rank=0, max_offload_layers=0, max_extra_dram_gb=0, cost=10,
                  dram_cost_per_gb=0, device_mib=10, device_mib_per_layer=0, device_budget_mib=100, host_mb=0,
                  host_mb_per_layer=0, host_dram_mb=0, step_planes_ns=((50, 0, 0),), ttft_ns=1,
                  ttft_ns_per_dram_layer=0)
    better_quality = dataclasses.replace(base, index=1, quality_rank=0, tie_rank=1, step_planes_ns=((90, 0, 0),))
    faster = dataclasses.replace(base, index=2, tie_rank=2, step_planes_ns=((20, 0, 0),))
    dearer = dataclasses.replace(base, index=3, quality_rank=0, tie_rank=3, cost=11, step_planes_ns=((1, 0, 0),))
    lim = Limits(None, None, None)
    assert solve([base, better_quality, faster, dearer], lim).index == 1   # equal cost: quality first
    assert solve([base, faster, dearer], lim).index == 2                   # then the faster step
    assert solve([base, dataclasses.replace(base, index=1, tie_rank=1)], lim).index == 0   # then the tie rank
