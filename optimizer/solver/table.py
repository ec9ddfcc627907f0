"""Integer table: each candidate's coefficients at the solver's scales (`scaling.py`, conservatively rounded).

A row describes one candidate as linear functions of two decisions the solver makes for it:
    dram_layers  x  routed-expert layers held in host DRAM (computed on the CPU or streamed to the GPU)
    nvme_layers  z  routed-expert layers read from NVMe (llama.cpp mmap); x + z <= max_offload_layers
and of the host DRAM it buys, extra_dram_gb (whole GB per node).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from optimizer.solver.scaling import (
    COST_UNIT,
    DEVICE_MEMORY_UNIT_BYTES,
    DRAM_GB_IN_HOST_UNITS,
    DRAM_PURCHASE_UNIT_BYTES,
    HOST_MEMORY_UNIT_BYTES,
    TIME_UNIT_S,
    round_down,
    round_up,
)

if TYPE_CHECKING:  # the integer layer never needs the float candidate code at run time
    from optimizer.solver.candidates import Candidate
    from optimizer.solver.query import Query

# Kept for existing callers: host memory unit (MB) and how many of them one purchased GB is.
HOST_UNIT = HOST_MEMORY_UNIT_BYTES
GB_UNITS = DRAM_GB_IN_HOST_UNITS


@dataclass(frozen=True)
class IntRow:
    """One candidate in integers. Units: MiB of device memory, MB of host memory, ns, objective units."""
    index: int                   # position of the candidate in the float table
    quality_rank: int            # 0 = best: more expert bits, then attention bits, then mean bits; ties share it
    tie_rank: int                # unique final tie-break (quality, then candidate id)
    max_offload_layers: int      # x + z never exceeds this
    max_extra_dram_gb: int       # most DRAM that can be bought per node, in GB
    cost: int                    # objective units (cents, milli-USD/h or W)
    dram_cost_per_gb: int        # objective units per purchased GB per node, times n_nodes
    device_mib: int              # device memory per GPU at x = z = 0, MiB (rounded up)
    device_mib_per_layer: int    # device MiB freed per offloaded layer (rounded down)
    device_budget_mib: int       # usable device memory per GPU, MiB (rounded down)
    host_mb: int                 # host DRAM used with nothing offloaded, MB (up)
    host_mb_per_layer: int       # host DRAM per DRAM-resident expert layer, MB (up)
    host_dram_mb: int            # DRAM installed before any purchase, MB (down)
    step_planes_ns: tuple[tuple[int, int, int], ...]  # decode step (ns) >= a + b*x + c*z for every plane (up)
    ttft_ns: int                 # time to first token at x = z = 0, ns
    ttft_ns_per_dram_layer: int
    max_nvme_layers: int = 0     # most expert layers on NVMe
    nvme_capacity_mb: int = 0    # NVMe space for expert layers, MB (down)
    ttft_ns_per_nvme_layer: int = 0
    min_offload_layers: int = 0  # x + z at least this (SGLang+KTransformers-only plans: the CPU experts are what
    #                              makes the engine run the model on this GPU)

    def step_bounds_ns(self) -> tuple[int, int]:
        """The range decode step time can take on this row over every offload level (a tight CP-SAT domain)."""
        L, Z = self.max_offload_layers, self.max_nvme_layers
        lo = max(a + min(b, 0) * L + min(c, 0) * Z for a, b, c in self.step_planes_ns)
        hi = max(a + max(b, 0) * L + max(c, 0) * Z for a, b, c in self.step_planes_ns)
        return min(lo, 0), max(hi, 0)


def to_rows(cands: list[Candidate], q: Query) -> list[IntRow]:
    unit = COST_UNIT[q.objective]

    # among equal costs prefer higher quality (more bits for experts, then attention, then on average), then a
    # faster step (decided by the solver at the chosen offload level), then the id
    def quality(i: int) -> tuple[float, float, float]:
        return (-cands[i].expert_bits, -cands[i].attn_bits, -round(cands[i].mean_bits, 6))

    order = sorted(range(len(cands)), key=lambda i: (quality(i), cands[i].id))
    tie_rank = {i: r for r, i in enumerate(order)}
    levels = sorted({quality(i) for i in range(len(cands))})
    quality_rank = {i: levels.index(quality(i)) for i in range(len(cands))}
    mib, mb, ns = DEVICE_MEMORY_UNIT_BYTES, HOST_MEMORY_UNIT_BYTES, TIME_UNIT_S
    rows = []
    for i, c in enumerate(cands):
        freed = c.mem_slope
        rows.append(IntRow(
            index=i, quality_rank=quality_rank[i], tie_rank=tie_rank[i], max_offload_layers=c.max_offload_layers,
            max_extra_dram_gb=max(0, round_down(c.dram_max_bytes - c.dram_base_bytes, DRAM_PURCHASE_UNIT_BYTES)),
            cost=round_up(c.cost, unit),
            dram_cost_per_gb=round_up(c.dram_usd_per_byte * DRAM_PURCHASE_UNIT_BYTES * c.n_nodes, unit),
            device_mib=round_up(c.mem0, mib),
            device_mib_per_layer=round_down(freed, mib) if freed >= 0 else -round_up(-freed, mib),
            device_budget_mib=round_down(c.budget_bytes, mib), host_mb=round_up(c.host_fixed, mb),
            host_mb_per_layer=round_up(c.host_slope, mb), host_dram_mb=round_down(c.dram_base_bytes, mb),
            step_planes_ns=tuple((round_up(a, ns), round_up(b, ns), round_up(cz, ns)) for a, b, cz in c.step_lines),
            ttft_ns=round_up(c.ttft0, ns), ttft_ns_per_dram_layer=round_up(c.ttft_slope, ns),
            max_nvme_layers=c.max_nvme_layers, nvme_capacity_mb=round_down(c.nvme_capacity_bytes, mb),
            ttft_ns_per_nvme_layer=round_up(c.ttft_nvme_slope, ns), min_offload_layers=c.min_offload_layers))
    return rows


@dataclass(frozen=True)
class Limits:
    """The query's targets in solver units: decode step time (ns), TTFT (ns), budget (objective units)."""
    step_ns: int | None
    ttft_ns: int | None
    budget: int | None


def limits(q: Query) -> Limits:
    return Limits(step_ns=round_down(1.0 / q.tok_s, TIME_UNIT_S) if q.tok_s else None,
                  ttft_ns=round_down(q.ttft_s, TIME_UNIT_S) if q.ttft_s else None,
                  budget=round_down(q.max_budget, COST_UNIT[q.objective]) if q.max_budget else None)


def extra_gb_needed(r: IntRow, dram_layers: int) -> int:
    """Whole GB of DRAM to buy per node so host memory holds `dram_layers` expert layers."""
    need = r.host_mb + r.host_mb_per_layer * dram_layers - r.host_dram_mb
    return 0 if need <= 0 else -(-need // DRAM_GB_IN_HOST_UNITS)


def step_ns(r: IntRow, dram_layers: int, nvme_layers: int = 0) -> int:
    """Decode step time of row r with x expert layers in DRAM and z on NVMe, in the solver's integer units."""
    return max(a + b * dram_layers + c * nvme_layers for a, b, c in r.step_planes_ns)


def points(r: IntRow) -> Iterator[tuple[int, int]]:
    """Every (dram_layers, nvme_layers) the row allows."""
    for x in range(r.max_offload_layers + 1):
        for z in range(min(r.max_nvme_layers, r.max_offload_layers - x) + 1):
            yield x, z


def row_feasible(r: IntRow, lim: Limits, dram_layers: int, nvme_layers: int = 0) -> tuple[bool, int]:
    """(feasible, cost) of row r at offload (x, z), in integers (the same arithmetic as the CP-SAT model)."""
    x, z = dram_layers, nvme_layers
    if x + z < r.min_offload_layers:
        return False, 0
    e = extra_gb_needed(r, x)
    if e > r.max_extra_dram_gb:
        return False, 0
    if r.device_mib - r.device_mib_per_layer * (x + z) > r.device_budget_mib:
        return False, 0
    if z and r.host_mb_per_layer * z > r.nvme_capacity_mb:
        return False, 0
    if lim.step_ns is not None and step_ns(r, x, z) > lim.step_ns:
        return False, 0
    ttft = r.ttft_ns + r.ttft_ns_per_dram_layer * x + r.ttft_ns_per_nvme_layer * z
    if lim.ttft_ns is not None and ttft > lim.ttft_ns:
        return False, 0
    cost = r.cost + r.dram_cost_per_gb * e
    if lim.budget is not None and cost > lim.budget:
        return False, 0
    return True, cost
