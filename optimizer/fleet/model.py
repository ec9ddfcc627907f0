"""The fleet as an integer program (CP-SAT), and a brute-force oracle over the same table.

Rows are (role, replica candidate) with an integer capacity (milli-requests/s within the SLA) and an integer
cost (milli-USD/h or USD). One integer count per row. The request rate R is split between aggregated replicas
(R_a) and disaggregated prefill/decode pools (R_pd); each role's pools must carry their share:

    sum_agg cap_i n_i >= R_a,   sum_prefill cap_j n_j >= R_pd,   sum_decode cap_k n_k >= R_pd,   R_a + R_pd = R

Prefill capacities depend on the KV link between the pools, so prefill rows exist per link class b (the TTFT
budget left after a transfer over a link of class b); a prefill row of class b may be used only with decode pools
whose links are of class <= b (at least as fast; classes are ordered fastest first). At most `max_types`
candidates per role (Mélange-style mixing of GPU types). Minimise cost, then GPUs, then a fixed row order (unique
answers; one worker, fixed seed).

A router sends each replica a share of its role's rate proportional to its capacity, so every replica runs at
or below the rate its capacity was measured at (the independent check re-evaluates each at its share).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from optimizer.solver import sat

RATE_SCALE = 1000  # capacities and the rate in milli-requests/s (capacities floored, the rate ceiled)
COST_SCALE = {"hourly": 1000, "capex": 1}  # milli-USD/h, USD


@dataclass(frozen=True)
class Row:
    role: str  # aggregated | prefill | decode
    cap: int  # milli-req/s
    cost: int  # scaled cost of one replica
    gpus: int
    link_class: int | None  # prefill: the class it was measured for; decode: the best class it supports
    ref: object = None  # the candidate behind the row (solve.py)
    order: int = -1  # the tie-break rank (lower first; -1: the row's index)
    group: str | None = None  # prefill/decode: the pairing key (pairing.py); one key per disaggregated fleet

    def rank(self, index: int) -> int:
        return self.order if self.order >= 0 else index


@dataclass(frozen=True)
class Solution:
    counts: tuple[int, ...]  # per row
    cost: int
    gpus: int
    rate_agg: int
    rate_pd: int
    link_class: int | None
    status: str
    bound: float


def scaled_rate(rate_rps: float) -> int:
    return max(1, math.ceil(rate_rps * RATE_SCALE - 1e-9))


def _ub(rate: int, cap: int) -> int:
    return -(-rate // cap)


def solve(
    rows: list[Row],
    rate: int,
    n_classes: int,
    *,
    allow_disagg: bool = True,
    max_types: int = 2,
    time_limit_s: float = 10.0,
    workers: int = 1,
    hint: dict[int, int] | None = None,
    tie_break: bool = True,
) -> Solution | None:
    """Least cost (then, with `tie_break`, fewest GPUs and the first rows in order) meeting the rate."""
    rows_ok = [(i, r) for i, r in enumerate(rows) if r.cap > 0 and (allow_disagg or r.role == "aggregated")]
    if not rows_ok:
        return None
    m = sat.CpModel()
    n, used = {}, {}
    for i, r in rows_ok:
        n[i] = m.new_int_var(0, _ub(rate, r.cap), f"n{i}")
        used[i] = m.new_bool_var(f"u{i}")
        m.add(n[i] <= _ub(rate, r.cap) * used[i])
        m.add(n[i] >= 1).only_enforce_if(used[i])
    ra = m.new_int_var(0, rate, "rate_agg")
    rpd = m.new_int_var(0, rate if allow_disagg else 0, "rate_pd")
    m.add(ra + rpd == rate)
    by_role = {role: [(i, r) for i, r in rows_ok if r.role == role] for role in ("aggregated", "prefill", "decode")}
    m.add(sum(r.cap * n[i] for i, r in by_role["aggregated"]) >= ra)
    m.add(sum(r.cap * n[i] for i, r in by_role["prefill"]) >= rpd)
    m.add(sum(r.cap * n[i] for i, r in by_role["decode"]) >= rpd)
    # link classes, fastest first: slow[k] = some decode pool has a link of class k; a prefill row measured at
    # class b needs every decode pool at class <= b (at least as fast as the link its TTFT budget assumed)
    slow = [m.new_bool_var(f"dec_link{k}") for k in range(max(1, n_classes))]
    for i, r in by_role["decode"]:
        m.add_implication(used[i], slow[r.link_class or 0])
    for i, r in by_role["prefill"]:
        for k in range(len(slow)):
            if k > (r.link_class or 0):
                m.add_implication(used[i], slow[k].Not())
    for rs in by_role.values():
        if rs:
            m.add(sum(used[i] for i, _ in rs) <= max_types)
    # pairing (pairing.py): the prefill and decode pools of one fleet share one pairing key
    keys = sorted({r.group for _, r in by_role["prefill"] + by_role["decode"] if r.group is not None})
    if len(keys) > 1:
        pick = {g: m.new_bool_var(f"pair_{g}") for g in keys}
        m.add(sum(pick.values()) <= 1)
        for i, r in by_role["prefill"] + by_role["decode"]:
            if r.group is not None:
                m.add_implication(used[i], pick[r.group])
    cost = sum(r.cost * n[i] for i, r in rows_ok)
    gpus = sum(r.gpus * n[i] for i, r in rows_ok)
    if hint:
        for i, v in hint.items():
            if i in n:
                m.add_hint(n[i], v)
    solver = sat.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = 0
    solver.parameters.linearization_level = 2  # the LP relaxation of the cover constraints proves optimality fast
    m.minimize(cost)
    st = solver.solve(m)
    if st not in (sat.OPTIMAL, sat.FEASIBLE):
        return None
    status = "OPTIMAL" if st == sat.OPTIMAL else "FEASIBLE"
    best, bound = int(round(solver.objective_value)), solver.best_objective_bound
    # stage 2: among the cheapest, fewest GPUs; stage 3: lexicographically smallest counts (row order)
    m.add(cost <= best)
    m.minimize(gpus)
    m.clear_hints()
    first = {i: solver.value(n[i]) for i in n}
    for i in n:
        m.add_hint(n[i], first[i])
    st2 = solver.solve(m) if tie_break else None
    if st2 in (sat.OPTIMAL, sat.FEASIBLE):
        g = int(round(solver.objective_value))
        m.add(gpus <= g)
        weights = {i: rows[i].rank(i) + 1 for i in n}  # by the row's own rank: dropped rows change no preference
        m.clear_hints()
        for i in n:
            m.add_hint(n[i], solver.value(n[i]))
        m.minimize(sum(weights[i] * used[i] for i in n))
        st3 = solver.solve(m)
        if st3 not in (sat.OPTIMAL, sat.FEASIBLE):  # pragma: no cover - stage 2's answer is a solution
            st3 = solver.solve(m)
    values = {i: solver.value(n[i]) for i in n} if tie_break else first
    counts = tuple(values.get(i, 0) for i in range(len(rows)))
    used_classes = [k for k, v in enumerate(slow) if solver.value(v)]
    link = max(used_classes) if used_classes else None
    return Solution(
        counts=counts,
        cost=sum(rows[i].cost * c for i, c in enumerate(counts)),
        gpus=sum(rows[i].gpus * c for i, c in enumerate(counts)),
        rate_agg=solver.value(ra),
        rate_pd=solver.value(rpd),
        link_class=link if solver.value(rpd) else None,
        status=status,
        bound=bound,
    )


def brute_force(
    rows: list[Row], rate: int, *, allow_disagg: bool = True, max_types: int = 2
) -> int | None:
    """Least cost over every count vector (small tables only): the oracle the CP-SAT model is tested against."""
    best = None
    ubs = [(_ub(rate, r.cap) if r.cap > 0 and (allow_disagg or r.role == "aggregated") else 0) for r in rows]
    for counts in itertools.product(*(range(u + 1) for u in ubs)):
        cap = {"aggregated": 0, "prefill": 0, "decode": 0}
        types = {"aggregated": 0, "prefill": 0, "decode": 0}
        dec = [r.link_class or 0 for r, c in zip(rows, counts, strict=True) if c and r.role == "decode"]
        pre = [r.link_class or 0 for r, c in zip(rows, counts, strict=True) if c and r.role == "prefill"]
        if dec and pre and max(dec) > min(pre):
            continue
        groups = {r.group for r, c in zip(rows, counts, strict=True)
                  if c and r.role != "aggregated" and r.group is not None}
        if len(groups) > 1:
            continue
        for r, c in zip(rows, counts, strict=True):
            if c:
                cap[r.role] += r.cap * c
                types[r.role] += 1
        if any(t > max_types for t in types.values()):
            continue
        pd = min(cap["prefill"], cap["decode"]) if allow_disagg else 0
        if cap["aggregated"] + pd >= rate:
            cost = sum(r.cost * c for r, c in zip(rows, counts, strict=True))
            best = cost if best is None else min(best, cost)
    return best
