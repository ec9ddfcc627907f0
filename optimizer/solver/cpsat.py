"""CP-SAT model over the integer candidate table. Integers only; no physics here."""

from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

from optimizer.solver.table import GB_UNITS, IntRow, Limits, extra_gb_needed, row_feasible

STATUS = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE", cp_model.INFEASIBLE: "INFEASIBLE",
          cp_model.MODEL_INVALID: "MODEL_INVALID", cp_model.UNKNOWN: "UNKNOWN"}


@dataclass(frozen=True)
class Solution:
    status: str
    index: int | None
    x: int
    extra_gb: int
    cost: int | None
    bound: float | None        # proven lower bound on cost (objective units)
    wall_s: float


class DeploymentModel:
    """One bool per candidate (exactly one chosen), an offload level and a DRAM purchase per candidate."""

    def __init__(self, rows: list[IntRow], lim: Limits, exclude: frozenset[int] = frozenset()):
        self.rows = rows
        self.lim = lim
        m = cp_model.CpModel()
        self.model = m
        lmax = max((r.L for r in rows), default=0)
        self.k2 = lmax + 1                       # one rank step outweighs any offload difference
        self.k = (len(rows) + 1) * self.k2 + lmax  # one cost unit outweighs any (rank, offload) tie-break

        self.y, self.x, self.e = {}, {}, {}
        cost_terms = []
        tie_terms = []
        for r in rows:
            if r.index in exclude:
                continue
            y = m.new_bool_var(f"use_{r.index}")
            x = m.new_int_var(0, r.L, f"off_{r.index}")
            e = m.new_int_var(0, r.E, f"dram_{r.index}")
            m.add(x == 0).only_enforce_if(~y)
            m.add(e == 0).only_enforce_if(~y)
            m.add(r.mem0 - r.mem_slope * x <= r.budget).only_enforce_if(y)
            m.add(r.host_fixed + r.host_slope * x <= r.dram_base + GB_UNITS * e).only_enforce_if(y)
            if lim.step_ns is not None:
                for a, b in r.t_lines:
                    m.add(a + b * x <= lim.step_ns).only_enforce_if(y)
            if lim.ttft_ns is not None:
                m.add(r.ttft0 + r.ttft_slope * x <= lim.ttft_ns).only_enforce_if(y)
            self.y[r.index], self.x[r.index], self.e[r.index] = y, x, e
            cost_terms += [r.cost * y, r.dram_cost_per_gb * e]
            tie_terms += [r.rank * self.k2 * y, x]
        if not self.y:
            m.add_bool_or([])  # nothing to choose: infeasible
            self.cost = 0
        else:
            m.add_exactly_one(list(self.y.values()))
            self.cost = sum(cost_terms)
            if lim.budget is not None:
                m.add(self.cost <= lim.budget)
            m.minimize(self.cost * self.k + sum(tie_terms))

    def hint(self, index: int, x: int) -> None:
        for i, y in self.y.items():
            self.model.add_hint(y, i == index)
        r = self.rows[index]
        self.model.add_hint(self.x[index], x)
        self.model.add_hint(self.e[index], extra_gb_needed(r, x))

    def solve(self, time_limit_s: float = 20.0, workers: int = 2, seed: int = 0) -> Solution:
        s = cp_model.CpSolver()
        s.parameters.max_time_in_seconds = time_limit_s
        s.parameters.num_workers = workers
        s.parameters.random_seed = seed
        st = s.solve(self.model)
        status = STATUS.get(st, str(st))
        if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return Solution(status, None, 0, 0, None, None, s.wall_time)
        idx = next(i for i, y in self.y.items() if s.boolean_value(y))
        x = s.value(self.x[idx])
        e = s.value(self.e[idx])
        cost = int(s.value(self.cost))
        bound = s.best_objective_bound / self.k
        return Solution(status, idx, x, e, cost, min(bound, cost), s.wall_time)


def greedy_hint(rows: list[IntRow], lim: Limits) -> tuple[int, int] | None:
    """Cheapest row at its least offload that is feasible, scanning rows in cost order (a good first solution)."""
    for r in sorted(rows, key=lambda r: (r.cost, r.rank)):
        for x in range(r.L + 1):
            ok, _ = row_feasible(r, lim, x)
            if ok:
                return r.index, x
    return None
