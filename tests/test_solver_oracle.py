"""CP-SAT against the brute-force oracle, on random integer tables and on real small catalogues."""

from hypothesis import HealthCheck, given, settings, strategies as st

from optimizer.solver.cpsat import DeploymentModel, greedy_hint
from optimizer.solver.oracle import brute_force
from optimizer.solver.table import IntRow, Limits, row_feasible


@st.composite
def tables(draw):
    n = draw(st.integers(1, 7))
    rows = []
    ranks = draw(st.permutations(list(range(n))))
    for i in range(n):
        L = draw(st.integers(0, 6))
        rows.append(IntRow(
            index=i, qrank=draw(st.integers(0, 2)), idrank=ranks[i], L=L, E=draw(st.integers(0, 5)), cost=draw(st.integers(1, 50)),
            dram_cost_per_gb=draw(st.integers(0, 7)), mem0=draw(st.integers(10, 200)), mem_slope=draw(st.integers(0, 40)),
            budget=draw(st.integers(10, 200)), host_fixed=draw(st.integers(0, 3000)),
            host_slope=draw(st.integers(0, 2500)), dram_base=draw(st.integers(0, 6000)),
            t_lines=tuple((draw(st.integers(1, 100)), draw(st.integers(-10, 30)), draw(st.integers(-10, 40)))
                          for _ in range(draw(st.integers(1, 4)))),
            Z=draw(st.integers(0, 4)), nvme_cap=draw(st.integers(0, 9000)),
            ttft_nvme_slope=draw(st.integers(-5, 20)),
            ttft0=draw(st.integers(1, 100)), ttft_slope=draw(st.integers(-5, 20))))
    lim = Limits(step_ns=draw(st.one_of(st.none(), st.integers(20, 200))),
                 ttft_ns=draw(st.one_of(st.none(), st.integers(20, 200))),
                 budget=draw(st.one_of(st.none(), st.integers(5, 100))))
    return rows, lim


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_cpsat_equals_brute_force(data):
    rows, lim = data
    oracle = brute_force(rows, lim)
    model = DeploymentModel(rows, lim)
    h = greedy_hint(rows, lim)
    if h:
        model.hint(*h)
    sol = model.solve(time_limit_s=10, workers=1)
    if oracle is None:
        assert sol.index is None and sol.status == "INFEASIBLE"
    else:
        assert sol.status == "OPTIMAL"
        assert (sol.index, sol.x, sol.z, sol.cost) == oracle
        ok, cost = row_feasible(rows[sol.index], lim, sol.x, sol.z)
        assert ok and cost == sol.cost


@settings(max_examples=60, deadline=None)
@given(tables(), st.integers(0, 60))
def test_more_budget_never_costs_more(data, extra):
    rows, lim = data
    a = brute_force(rows, lim)
    looser = Limits(lim.step_ns, lim.ttft_ns, None if lim.budget is None else lim.budget + extra)
    b = brute_force(rows, looser)
    if a is not None:
        assert b is not None and b[3] <= a[3]


@settings(max_examples=60, deadline=None)
@given(tables(), st.integers(0, 6))
def test_removing_a_candidate_never_lowers_cost(data, drop):
    rows, lim = data
    a = brute_force(rows, lim)
    b = brute_force(rows, lim, exclude=frozenset({drop}))
    if b is not None:
        assert a is not None and a[3] <= b[3]
