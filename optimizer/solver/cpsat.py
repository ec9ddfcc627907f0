"""CP-SAT model over the integer candidate table. Integers only; no physics here."""

from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

from optimizer.solver.table import GB_UNITS, IntRow, Limits, extra_gb_needed, points, row_feasible

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
    z: int = 0                 # expert layers read from NVMe


class DeploymentModel:
    """One bool per candidate (exactly one chosen), an offload level and a DRAM purchase per candidate.

    Optimised lexicographically in stages: cost, then quality rank, then decode step time, then the id rank and
    the offload level. Each stage fixes the previous optimum, so answers are unique and deterministic."""

    def __init__(self, rows: list[IntRow], lim: Limits, exclude: frozenset[int] = frozenset(),
                 tie_breaks: bool = False):
        self.rows = rows
        self.by_index = {r.index: r for r in rows}
        self.lim = lim
        m = cp_model.CpModel()
        self.model = m
        self.y, self.x, self.e, self.t, self.z = {}, {}, {}, {}, {}
        cost_terms, q_terms, t_terms, last_terms = [], [], [], []
        big = 2**50
        for r in rows:
            if r.index in exclude:
                continue
            y = m.new_bool_var(f"use_{r.index}")
            x = m.new_int_var(0, r.L, f"off_{r.index}")
            e = m.new_int_var(0, r.E, f"dram_{r.index}")
            t = m.new_int_var(-big, big, f"step_{r.index}") if tie_breaks else 0
            if r.Z:
                z = m.new_int_var(0, r.Z, f"nvme_{r.index}")
                m.add(x + z <= r.L)
                m.add(z == 0).only_enforce_if(~y)
                m.add(r.host_slope * z <= r.nvme_cap).only_enforce_if(y)
            else:
                z = 0
            m.add(x == 0).only_enforce_if(~y)
            m.add(e == 0).only_enforce_if(~y)
            if tie_breaks:
                m.add(t == 0).only_enforce_if(~y)
            m.add(r.mem0 - r.mem_slope * (x + z) <= r.budget).only_enforce_if(y)
            m.add(r.host_fixed + r.host_slope * x <= r.dram_base + GB_UNITS * e).only_enforce_if(y)
            for a, b, c in r.t_lines:
                if tie_breaks:
                    m.add(t >= a + b * x + c * z).only_enforce_if(y)
                if lim.step_ns is not None:
                    m.add(a + b * x + c * z <= lim.step_ns).only_enforce_if(y)
            if lim.ttft_ns is not None:
                m.add(r.ttft0 + r.ttft_slope * x + r.ttft_nvme_slope * z <= lim.ttft_ns).only_enforce_if(y)
            self.y[r.index], self.x[r.index], self.e[r.index], self.t[r.index] = y, x, e, t
            self.z[r.index] = z
            cost_terms += [r.cost * y, r.dram_cost_per_gb * e]
            q_terms.append(r.qrank * y)
            t_terms.append(t)
            # idranks are unique, so (x, z) only order plans within a row
            last_terms += [r.idrank * (r.L + 1) ** 2 * y, (r.L + 1) * x, z]
        if not self.y:
            m.add_bool_or([])  # nothing to choose: infeasible
            self.cost = 0
            self.stages = []
        else:
            m.add_exactly_one(list(self.y.values()))
            self.cost = sum(cost_terms)
            if lim.budget is not None:
                m.add(self.cost <= lim.budget)
            self.stages = [self.cost, sum(q_terms), sum(t_terms), sum(last_terms)] if tie_breaks else [self.cost]

    def hint(self, index: int, x: int, z: int = 0) -> None:
        for i, y in self.y.items():
            self.model.add_hint(y, i == index)
        r = self.by_index[index]
        self.model.add_hint(self.x[index], x)
        if not isinstance(self.z[index], int):
            self.model.add_hint(self.z[index], z)
        self.model.add_hint(self.e[index], extra_gb_needed(r, x))

    def _values(self, s: cp_model.CpSolver) -> tuple[int, int, int, int]:
        idx = next(i for i, y in self.y.items() if s.boolean_value(y))
        z = self.z[idx]
        return idx, s.value(self.x[idx]), s.value(self.e[idx]), (z if isinstance(z, int) else s.value(z))

    def solve(self, time_limit_s: float = 20.0, workers: int = 2, seed: int = 0) -> Solution:
        first = self._solve_stages(time_limit_s, workers, seed, stages=1)
        if first.index is None or first.status != "OPTIMAL":
            return first
        # tie-breaks only among rows that can reach the optimal cost: a much smaller model
        keep = {r.index for r in self.rows if r.index in self.y and r.cost <= first.cost}
        sub = DeploymentModel([r for r in self.rows if r.index in keep], self.lim, tie_breaks=True)
        sub.model.add(sub.cost == first.cost)
        sub.hint(first.index, first.x, first.z)
        rest = sub._solve_stages(time_limit_s, workers, seed, stages=4, start=1)
        if rest.index is None:
            return first
        return Solution(first.status, rest.index, rest.x, rest.extra_gb, first.cost, first.bound,
                        first.wall_s + rest.wall_s, rest.z)

    def _solve_stages(self, time_limit_s: float, workers: int, seed: int, stages: int, start: int = 0) -> Solution:
        wall = 0.0
        status, bound, cost, chosen = "INFEASIBLE", None, None, None
        for k, expr in list(enumerate(self.stages or [0]))[start:stages]:
            s = cp_model.CpSolver()
            s.parameters.max_time_in_seconds = time_limit_s
            s.parameters.num_workers = workers
            s.parameters.random_seed = seed
            if self.stages:
                self.model.minimize(expr)
            st = s.solve(self.model)
            wall += s.wall_time
            if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                if k == start:
                    return Solution(STATUS.get(st, str(st)), None, 0, 0, None, None, wall)
                break  # keep the previous stage's solution (a later stage ran out of time)
            chosen = self._values(s)
            if k == start:
                status = STATUS.get(st, str(st))
                cost = int(s.value(self.cost))
                bound = min(float(s.best_objective_bound), cost) if k == 0 else float(cost)
            if st != cp_model.OPTIMAL:
                break  # not proven: later stages would only refine a non-optimal cost
            # fix this stage's optimum, hint the solution, and go on to the next tie-break
            self.model.add(expr == round(s.objective_value))  # objective_value is a float: round, never truncate
            self.model.clear_hints()
            self.hint(chosen[0], chosen[1], chosen[3])
        idx, x, e, z = chosen
        return Solution(status, idx, x, e, cost, bound, wall, z)


def greedy_hint(rows: list[IntRow], lim: Limits) -> tuple[int, int, int] | None:
    """Cheapest row at its least offload that is feasible, scanning rows in cost order (a good first solution)."""
    for r in sorted(rows, key=lambda r: (r.cost, r.qrank, r.idrank)):
        for x, z in points(r):
            ok, _ = row_feasible(r, lim, x, z)
            if ok:
                return r.index, x, z
    return None
