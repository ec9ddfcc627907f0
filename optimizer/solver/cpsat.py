"""CP-SAT model over the integer candidate table. Integers only; no physics here.

Variable-container style (CP-SAT Primer): `RowVars` holds one candidate row's decision variables, and
`DeploymentModel.vars[row.index]` is the container for that row. Per row:

    use            bool    this candidate is the plan (exactly one row is used)
    dram_layers    int     expert layers in host DRAM, 0..max_offload_layers (0 when unused)
    nvme_layers    int     expert layers on NVMe, 0..max_nvme_layers, dram + nvme <= max_offload_layers
    extra_dram_gb  int     DRAM bought per node, 0..max_extra_dram_gb (0 when unused)
    step_ns        int     decode step time, only in the tie-break stages: >= every plane of the row when used,
                           0 when unused; its domain is the row's own range (IntRow.step_bounds_ns)
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.solver import sat
from optimizer.solver.scaling import DRAM_GB_IN_HOST_UNITS
from optimizer.solver.table import IntRow, Limits, extra_gb_needed, points, row_feasible

STATUS = {sat.OPTIMAL: "OPTIMAL", sat.FEASIBLE: "FEASIBLE", sat.INFEASIBLE: "INFEASIBLE",
          sat.MODEL_INVALID: "MODEL_INVALID", sat.UNKNOWN: "UNKNOWN"}

IntTerm = sat.IntVar | int


@dataclass(frozen=True)
class Solution:
    status: str
    index: int | None          # chosen row (candidate index), None when nothing was found
    dram_layers: int
    extra_dram_gb: int
    cost: int | None
    bound: float | None        # proven lower bound on cost (objective units)
    wall_s: float
    nvme_layers: int = 0

    # short names used by the oracle tests and benches
    @property
    def x(self) -> int:
        return self.dram_layers

    @property
    def z(self) -> int:
        return self.nvme_layers

    @property
    def extra_gb(self) -> int:
        return self.extra_dram_gb


@dataclass(frozen=True)
class RowVars:
    """The decision variables of one candidate row (see the module docstring)."""
    use: sat.IntVar
    dram_layers: sat.IntVar
    nvme_layers: IntTerm
    extra_dram_gb: sat.IntVar
    step_ns: IntTerm


class DeploymentModel:
    """One bool per candidate (exactly one chosen), an offload level and a DRAM purchase per candidate.

    Optimised lexicographically in stages: cost, then quality rank, then decode step time, then the tie rank and
    the offload level. Each stage fixes the previous optimum, so answers are unique and deterministic."""

    def __init__(self, rows: list[IntRow], lim: Limits, exclude: frozenset[int] = frozenset(),
                 tie_breaks: bool = False) -> None:
        self.rows = rows
        self.by_index = {r.index: r for r in rows}
        self.lim = lim
        self.model = sat.CpModel()
        self.vars: dict[int, RowVars] = {}
        cost_terms: list[sat.LinearExprT] = []
        quality_terms: list[sat.LinearExprT] = []
        step_terms: list[IntTerm] = []
        order_terms: list[sat.LinearExprT] = []
        for r in rows:
            if r.index in exclude:
                continue
            v = self._add_row(r, lim, tie_breaks)
            self.vars[r.index] = v
            cost_terms += [r.cost * v.use, r.dram_cost_per_gb * v.extra_dram_gb]
            quality_terms.append(r.quality_rank * v.use)
            step_terms.append(v.step_ns)
            # tie ranks are unique, so (dram, nvme) only order plans within a row
            span = r.max_offload_layers + 1
            order_terms += [r.tie_rank * span**2 * v.use, span * v.dram_layers, v.nvme_layers]
        self.stages: list[sat.LinearExprT]
        if not self.vars:
            self.model.add_bool_or([])  # nothing to choose: infeasible
            self.cost: sat.LinearExprT = 0
            self.stages = []
        else:
            self.model.add_exactly_one([v.use for v in self.vars.values()])
            self.cost = sum(cost_terms)
            if lim.budget is not None:
                self.model.add(self.cost <= lim.budget)
            self.stages = ([self.cost, sum(quality_terms), sum(step_terms), sum(order_terms)] if tie_breaks
                           else [self.cost])

    def _add_row(self, r: IntRow, lim: Limits, tie_breaks: bool) -> RowVars:
        m = self.model
        use = m.new_bool_var(f"use_{r.index}")
        dram = m.new_int_var(0, r.max_offload_layers, f"dram_layers_{r.index}")
        extra = m.new_int_var(0, r.max_extra_dram_gb, f"extra_dram_gb_{r.index}")
        step: IntTerm = 0
        if tie_breaks:
            lo, hi = r.step_bounds_ns()
            step = m.new_int_var(lo, hi, f"step_ns_{r.index}")
            m.add(step == 0).only_enforce_if(~use)
        nvme: IntTerm = 0
        if r.max_nvme_layers:
            nvme = m.new_int_var(0, r.max_nvme_layers, f"nvme_layers_{r.index}")
            m.add(dram + nvme <= r.max_offload_layers)
            m.add(nvme == 0).only_enforce_if(~use)
            m.add(r.host_mb_per_layer * nvme <= r.nvme_capacity_mb).only_enforce_if(use)
        m.add(dram == 0).only_enforce_if(~use)
        if r.min_offload_layers:
            m.add(dram + nvme >= r.min_offload_layers).only_enforce_if(use)
        m.add(extra == 0).only_enforce_if(~use)
        m.add(r.device_mib - r.device_mib_per_layer * (dram + nvme) <= r.device_budget_mib).only_enforce_if(use)
        m.add(r.host_mb + r.host_mb_per_layer * dram <= r.host_dram_mb + DRAM_GB_IN_HOST_UNITS * extra
              ).only_enforce_if(use)
        for a, b, c in r.step_planes_ns:
            if tie_breaks:
                m.add(step >= a + b * dram + c * nvme).only_enforce_if(use)
            if lim.step_ns is not None:
                m.add(a + b * dram + c * nvme <= lim.step_ns).only_enforce_if(use)
        if lim.ttft_ns is not None:
            m.add(r.ttft_ns + r.ttft_ns_per_dram_layer * dram + r.ttft_ns_per_nvme_layer * nvme <= lim.ttft_ns
                  ).only_enforce_if(use)
        return RowVars(use=use, dram_layers=dram, nvme_layers=nvme, extra_dram_gb=extra, step_ns=step)

    def hint(self, index: int, dram_layers: int, nvme_layers: int = 0) -> None:
        for i, v in self.vars.items():
            self.model.add_hint(v.use, i == index)
        chosen = self.vars[index]
        self.model.add_hint(chosen.dram_layers, dram_layers)
        if not isinstance(chosen.nvme_layers, int):
            self.model.add_hint(chosen.nvme_layers, nvme_layers)
        self.model.add_hint(chosen.extra_dram_gb, extra_gb_needed(self.by_index[index], dram_layers))

    def _values(self, s: sat.CpSolver) -> tuple[int, int, int, int]:
        """(row index, dram layers, extra DRAM GB, nvme layers) of the solver's current solution."""
        idx = next(i for i, v in self.vars.items() if s.boolean_value(v.use))
        v = self.vars[idx]
        nvme = v.nvme_layers if isinstance(v.nvme_layers, int) else int(s.value(v.nvme_layers))
        return idx, int(s.value(v.dram_layers)), int(s.value(v.extra_dram_gb)), nvme

    def solve(self, time_limit_s: float = 20.0, workers: int = 2, seed: int = 0) -> Solution:
        first = self._solve_stages(time_limit_s, workers, seed, stages=1)
        if first.index is None or first.status != "OPTIMAL" or first.cost is None:
            return first
        # tie-breaks only among rows that can reach the optimal cost: a much smaller model
        keep = {r.index for r in self.rows if r.index in self.vars and r.cost <= first.cost}
        sub = DeploymentModel([r for r in self.rows if r.index in keep], self.lim, tie_breaks=True)
        sub.model.add(sub.cost == first.cost)
        sub.hint(first.index, first.dram_layers, first.nvme_layers)
        rest = sub._solve_stages(time_limit_s, workers, seed, stages=4, start=1)
        if rest.index is None:
            return first
        return Solution(first.status, rest.index, rest.dram_layers, rest.extra_dram_gb, first.cost, first.bound,
                        first.wall_s + rest.wall_s, rest.nvme_layers)

    def _solve_stages(self, time_limit_s: float, workers: int, seed: int, stages: int, start: int = 0) -> Solution:
        wall = 0.0
        status, bound, cost = "INFEASIBLE", None, None
        chosen: tuple[int, int, int, int] | None = None
        objectives: list[sat.LinearExprT] = list(self.stages) or [0]
        for k in range(start, min(stages, len(objectives))):
            expr = objectives[k]
            s = sat.CpSolver()
            s.parameters.max_time_in_seconds = time_limit_s
            s.parameters.num_workers = workers
            s.parameters.random_seed = seed
            if self.stages:
                self.model.minimize(expr)
            st = s.solve(self.model)
            wall += s.wall_time
            if st not in (sat.OPTIMAL, sat.FEASIBLE):
                if k == start:
                    return Solution(STATUS.get(st, str(st)), None, 0, 0, None, None, wall)
                break  # keep the previous stage's solution (a later stage ran out of time)
            chosen = self._values(s)
            if k == start:
                status = STATUS.get(st, str(st))
                cost = int(s.value(self.cost))
                bound = min(float(s.best_objective_bound), cost) if k == 0 else float(cost)
            if st != sat.OPTIMAL:
                break  # not proven: later stages would only refine a non-optimal cost
            # fix this stage's optimum, hint the solution, and go on to the next tie-break
            self.model.add(expr == round(s.objective_value))  # objective_value is a float: round, never truncate
            self.model.clear_hints()
            self.hint(chosen[0], chosen[1], chosen[3])
        if chosen is None:
            return Solution(status, None, 0, 0, cost, bound, wall)
        idx, dram, extra, nvme = chosen
        return Solution(status, idx, dram, extra, cost, bound, wall, nvme)


def greedy_hint(rows: list[IntRow], lim: Limits) -> tuple[int, int, int] | None:
    """Cheapest row at its least offload that is feasible, scanning rows in cost order (a good first solution):
    (row index, dram layers, nvme layers)."""
    for r in sorted(rows, key=lambda r: (r.cost, r.quality_rank, r.tie_rank)):
        for x, z in points(r):
            ok, _ = row_feasible(r, lim, x, z)
            if ok:
                return r.index, x, z
    return None
