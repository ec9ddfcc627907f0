"""Branch and bound on cost before the speed model: the rows `cheapest` answers from, without finishing the rest.

Every candidate row exists or not by its cost and memory tests alone (`candidates._prepare`: no speed model; with
a served workload existence also needs the rate to be sustainable, so such questions finish every row). Its cost
with no DRAM bought is known then too, and in the solver's integer units it is exactly the finished row's
`IntRow.cost` (`round_up(cost, COST_UNIT)`, the same function of the same float). A row's own optimum costs
`IntRow.cost + dram_cost_per_gb * extra_gb` with both terms of the sum at least 0 (`oracle.row_optimum`), so
**`lb = round_up(cost, unit)` is a lower bound of every cost the row can reach**.

What `search.cheapest` returns is read off the rows ranked by their own optimum key
`(cost, quality rank, step, tie rank, x, z)`: the headline and its alternatives are the first `q.top` rows of the
allowed set (the tier or quality floor, or every row) that pass the independent check; the frontier is, per
quality tier, the first row of that tier that passes it; the allowed set is the floor's rows when one of them is
feasible at all, else every row. Each of these is a *group* (a predicate on the row's expert bits, known before
the speed model, and a number k of rows wanted). The bound argument, for one group:

    Let the finished rows of the group hold k feasible rows whose largest optimum cost is C, and let every
    unfinished row of the group have a lower bound > C (its lb, or its probe's optimum, below) or be proven
    infeasible. An unfinished row's optimum costs at least its bound > C, so it ranks after each of those k rows
    (cost is the key's first term), whatever the rest of its speed model says; an infeasible row is never ranked.
    The first k rows of the group in the full ranking are therefore finished rows, and they are the first k in the
    ranking of the finished rows alone: the integer quality and tie ranks `to_rows` gives a subset order the rows
    exactly as the full set's do (ranks of the same sort keys), and each row's own optimum does not depend on other
    rows (the table is separable). If the check rejects some of those k rows, the group reaches further down: the
    search verifies on the answer itself (the costs of the rows it actually picked) and finishes more rows when the
    argument does not hold for them.

Rows move through three stages: memory tests only (bound: `lb`), decode figures without prefill (`Pending.probe`:
the row's own optimum with the TTFT target ignored, a larger lower bound, exact when there is no TTFT target, and
None when no offload level meets the decode target, so the row can never be picked), then finished. Each step
advances only rows whose bound does not yet exceed the cost the group needs.

A group with no unfinished row that may be feasible is complete. The allowed set is decided once a floor row is
known feasible, or once no floor row that may be feasible is left unfinished. An answer with no plan (infeasible:
its relaxation report reads every row) is only given once every row is finished, so it is the exhaustive answer. The
printed candidate count is the number of rows that exist (`enumerate_pending`), finished or not: the exhaustive
list's length. CP-SAT proves the headline over the finished rows; the rows left out cost more than it, so the proof
of optimality holds over all of them (the proven bound is the optimum's cost as long as the solver reports OPTIMAL).

`tests/test_bounded.py` compares the bounded and the exhaustive answers on the shipped scenarios and on
generated questions.
"""

from __future__ import annotations

from collections.abc import Callable

from optimizer.catalog.models import ResolvedModel
from optimizer.solver.candidates import Candidate, Pending, enumerate_pending
from optimizer.solver.oracle import row_optimum
from optimizer.solver.query import Query
from optimizer.solver.scaling import COST_UNIT, round_up
from optimizer.solver.table import IntRow, Limits, limits, to_rows

Holds = Callable[[float], bool]  # a group's predicate on a row's expert bits per weight
BATCH = 64  # rows advanced at least per step while a group has fewer than k rows of known cost

PENDING, PROBED, FINISHED = 0, 1, 2  # a row's stage: memory tests only, decode figures, speed model finished


class Space:
    """The candidate rows of one question after their memory tests, advanced stage by stage on demand."""

    def __init__(self, q: Query, m: ResolvedModel) -> None:
        self.q = q
        self.rows: list[Pending] = enumerate_pending(q, m)
        unit = COST_UNIT[q.objective]
        self.lim = limits(q)
        self.relaxed = Limits(step_ns=self.lim.step_ns, ttft_ns=None, budget=self.lim.budget)
        self.probe_exact = not self.lim.ttft_ns  # with no TTFT target the probe's optimum is the row's own
        self.stage = [FINISHED if p.done else PENDING for p in self.rows]
        self._ids: dict[str, int] | None = None
        self._members: dict[Holds, list[int]] = {}
        # a lower bound of each row's own optimum cost (solver units), None once the row is known infeasible
        self.bound: list[int | None] = [round_up(p.cost, unit) for p in self.rows]
        for i, p in enumerate(self.rows):
            if p.done:
                self._finish(i)

    @property
    def count(self) -> int:
        """Rows that exist: every row unless a served workload's rate makes one unsustainable (then every row
        was finished by `enumerate_pending`)."""
        return sum(1 for p in self.rows if not p.done or p.finish() is not None)

    @property
    def complete(self) -> bool:
        return all(s == FINISHED for s in self.stage)

    def finished(self) -> list[Candidate]:
        """The finished rows, sorted by id like `enumerate_candidates` (a stable sort of the enumeration order)."""
        out = [c for p in self.rows if p.done and (c := p.finish()) is not None]
        out.sort(key=lambda c: c.id)
        return out

    def _optimum(self, c: Candidate | None, lim: Limits) -> int | None:
        if c is None or too_slow_float(c, self.q.tok_s):
            return None
        row = to_rows([c], self.q)[0]
        if too_slow(row, lim):
            return None
        best = row_optimum(row, lim)
        return None if best is None else best[3]

    def _finish(self, i: int) -> None:
        self.bound[i] = self._optimum(self.rows[i].finish(), self.lim)
        self.stage[i] = FINISHED
        self._ids = None

    def advance(self, i: int) -> None:
        """Row i one stage on: its decode figures (a lower bound of its cost that ignores the TTFT target, exact
        without one; None: infeasible at every offload level whatever its TTFT), then its whole speed model."""
        if self.stage[i] == PENDING and self.bound[i] is not None:
            self.bound[i] = self._optimum(self.rows[i].probe(), self.relaxed)
            self.stage[i] = PROBED
        elif self.stage[i] != FINISHED:
            self._finish(i)

    def exact(self, i: int) -> bool:
        return self.stage[i] == FINISHED or (self.stage[i] == PROBED and self.probe_exact)

    def members(self, holds: Holds) -> list[int]:
        if holds not in self._members:
            self._members[holds] = [i for i, p in enumerate(self.rows) if holds(p.expert_bits)]
        return self._members[holds]

    def open_rows(self, holds: Holds) -> list[int]:
        """Rows of a group that may still be feasible and are not finished."""
        return [i for i in self.members(holds) if self.stage[i] != FINISHED and self.bound[i] is not None]

    def has_feasible(self, holds: Holds) -> bool:
        return any(self.exact(i) and self.bound[i] is not None for i in self.members(holds))

    def settled(self, holds: Holds, k: int, picked: int | None = None) -> list[int]:
        """Rows to advance before the group's first k rows are known ([] when they are): `picked` is the largest
        cost among the rows the answer took for it (default: the k-th cheapest row of known cost)."""
        todo = self.open_rows(holds)
        if not todo:
            return []
        bound = self.bound
        if picked is None:
            costs = sorted(b for i in self.members(holds) if (b := bound[i]) is not None and self.exact(i))
            picked = costs[k - 1] if len(costs) >= k else None
        if picked is not None:
            return [i for i in todo if (b := bound[i]) is not None and b <= picked]
        unknown = [i for i in todo if not self.exact(i)]
        if not unknown:
            return todo  # fewer than k rows may be feasible and each one's cost is known: finish them all
        unknown.sort(key=lambda i: (bound[i], i))
        known = sum(1 for i in self.members(holds) if self.exact(i))
        return unknown[:max(BATCH, known)]

    def advance_all(self, rows: list[int]) -> None:
        for i in rows:
            self.advance(i)

    def finish_all(self) -> None:
        for i in range(len(self.rows)):
            if self.stage[i] != FINISHED:
                self._finish(i)

    def cost_of(self, candidate_id: str) -> int | None:
        """A finished row's own optimum cost, by id (ids are unique: the enumeration names every choice)."""
        if self._ids is None:
            self._ids = {c.id: i for i, p in enumerate(self.rows) if p.done and (c := p.finish()) is not None}
        i = self._ids.get(candidate_id)
        return None if i is None else self.bound[i]


def _corners(max_offload: int, max_nvme: int) -> set[tuple[int, int]]:
    """The corners (x, z) of a row's offload domain: x expert layers in DRAM, z on NVMe, x + z <= max_offload."""
    zm = min(max_nvme, max_offload)
    return {(0, 0), (max_offload, 0), (0, zm), (max_offload - zm, zm)}


def too_slow(r: IntRow, lim: Limits) -> bool:
    """True when no offload split of row r meets the decode target: the step time at a point is the max of the
    row's planes, at least each plane's value there, so it is at least every plane's minimum over the whole
    (x, z) domain; a linear plane takes its minimum over that polygon at one of its corners. (A quick test ahead
    of `row_optimum`: it proves infeasibility or says nothing.)"""
    if lim.step_ns is None:
        return False
    corners = _corners(r.max_offload_layers, r.max_nvme_layers)
    return any(min(a + b * x + c * z for x, z in corners) > lim.step_ns for a, b, c in r.step_planes_ns)


SLOW_MARGIN_S = 1e-6  # far above what the integer rounding tolerance can move a step time (scaling.py)


def too_slow_float(c: Candidate, tok_s: float) -> bool:
    """`too_slow` on the float row, before its integer row is built: the integer planes round every coefficient up
    and the integer limit rounds 1/tok_s down, so a float row slower than the target by more than SLOW_MARGIN_S at
    every corner is too slow in integers too."""
    if not tok_s:
        return False
    corners = _corners(c.max_offload_layers, c.max_nvme_layers)
    limit = 1.0 / tok_s + SLOW_MARGIN_S
    return any(min(a + b * x + cz * z for x, z in corners) > limit for a, b, cz in c.step_lines)
