"""Integer table: each candidate's coefficients at the solver's scales (conservatively rounded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from optimizer.solver.scaling import COST_UNIT, MIB, NS, down, up

if TYPE_CHECKING:  # the integer layer never needs the float candidate code at run time
    from optimizer.solver.candidates import Candidate
    from optimizer.solver.query import Query
HOST_UNIT = 10**6   # host memory in MB so that a purchased GB is exactly 1000 units
GB_UNITS = 1000


@dataclass(frozen=True)
class IntRow:
    index: int
    qrank: int             # quality rank (0 = best: more expert bits, then attention bits, then mean bits); ties share it
    idrank: int            # unique final tie-break (quality, then id)
    L: int                 # max offloaded expert layers
    E: int                 # max extra DRAM per node, in GB
    cost: int              # objective units (cents, milli-USD/h or W)
    dram_cost_per_gb: int  # objective units per GB per node, times n_nodes
    mem0: int              # MiB, per device, at x = 0 (rounded up)
    mem_slope: int         # MiB freed per offloaded layer (rounded down)
    budget: int            # MiB (rounded down)
    host_fixed: int        # MB (up)
    host_slope: int        # MB per layer (up)
    dram_base: int         # MB (down)
    t_lines: tuple[tuple[int, int, int], ...]  # decode step (ns) <= limit for every plane a + b*x + c*z (rounded up)
    ttft0: int             # ns
    ttft_slope: int
    Z: int = 0             # max expert layers on NVMe (x + z <= L)
    nvme_cap: int = 0      # MB (down)
    ttft_nvme_slope: int = 0


def to_rows(cands: list["Candidate"], q: "Query") -> list[IntRow]:
    unit = COST_UNIT[q.objective]
    # among equal costs prefer higher quality (more bits for experts, then attention, then on average), then a
    # faster step (decided by the solver at the chosen offload level), then the id
    def quality(i):
        return (-cands[i].expert_bits, -cands[i].attn_bits, -round(cands[i].mean_bits, 6))
    order = sorted(range(len(cands)), key=lambda i: (quality(i), cands[i].id))
    rank = {i: r for r, i in enumerate(order)}
    levels = sorted({quality(i) for i in range(len(cands))})
    qrank = {i: levels.index(quality(i)) for i in range(len(cands))}
    rows = []
    for i, c in enumerate(cands):
        rows.append(IntRow(
            index=i, qrank=qrank[i], idrank=rank[i], L=c.max_offload_layers,
            E=max(0, down(c.dram_max_bytes - c.dram_base_bytes, 1e9)),
            cost=up(c.cost, unit), dram_cost_per_gb=up(c.dram_usd_per_byte * 1e9 * c.n_nodes, unit),
            mem0=up(c.mem0, MIB), mem_slope=down(c.mem_slope, MIB) if c.mem_slope >= 0 else -up(-c.mem_slope, MIB),
            budget=down(c.budget_bytes, MIB), host_fixed=up(c.host_fixed, HOST_UNIT),
            host_slope=up(c.host_slope, HOST_UNIT), dram_base=down(c.dram_base_bytes, HOST_UNIT),
            t_lines=tuple((up(a, NS), up(b, NS), up(cz, NS)) for a, b, cz in c.step_lines),
            ttft0=up(c.ttft0, NS), ttft_slope=up(c.ttft_slope, NS), Z=c.max_nvme_layers,
            nvme_cap=down(c.nvme_capacity_bytes, HOST_UNIT), ttft_nvme_slope=up(c.ttft_nvme_slope, NS)))
    return rows


@dataclass(frozen=True)
class Limits:
    step_ns: int | None
    ttft_ns: int | None
    budget: int | None


def limits(q: "Query") -> Limits:
    return Limits(step_ns=down(1.0 / q.tok_s, NS) if q.tok_s else None,
                  ttft_ns=down(q.ttft_s, NS) if q.ttft_s else None,
                  budget=down(q.max_budget, COST_UNIT[q.objective]) if q.max_budget else None)


def extra_gb_needed(r: IntRow, x: int) -> int:
    need = r.host_fixed + r.host_slope * x - r.dram_base
    return 0 if need <= 0 else -(-need // GB_UNITS)


def step_ns(r: IntRow, x: int, z: int = 0) -> int:
    """Decode step time of row r with x expert layers in DRAM and z on NVMe, in the solver's integer units."""
    return max(a + b * x + c * z for a, b, c in r.t_lines)


def points(r: IntRow):
    for x in range(r.L + 1):
        for z in range(min(r.Z, r.L - x) + 1):
            yield x, z


def row_feasible(r: IntRow, lim: Limits, x: int, z: int = 0) -> tuple[bool, int]:
    """(feasible, cost) of row r at offload (x, z), in integers (the same arithmetic as the CP-SAT model)."""
    e = extra_gb_needed(r, x)
    if e > r.E:
        return False, 0
    if r.mem0 - r.mem_slope * (x + z) > r.budget:
        return False, 0
    if z and r.host_slope * z > r.nvme_cap:
        return False, 0
    if lim.step_ns is not None and step_ns(r, x, z) > lim.step_ns:
        return False, 0
    if lim.ttft_ns is not None and r.ttft0 + r.ttft_slope * x + r.ttft_nvme_slope * z > lim.ttft_ns:
        return False, 0
    cost = r.cost + r.dram_cost_per_gb * e
    if lim.budget is not None and cost > lim.budget:
        return False, 0
    return True, cost
