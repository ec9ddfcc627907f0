"""Brute-force enumerator: the test oracle for the CP-SAT model (same integer table, every choice tried)."""

from __future__ import annotations

import numpy as np

from optimizer.solver.scaling import DRAM_GB_IN_HOST_UNITS
from optimizer.solver.table import IntRow, Limits, points, row_feasible, step_ns


def brute_force(rows: list[IntRow], lim: Limits,
                exclude: frozenset[int] = frozenset()) -> tuple[int, int, int, int] | None:
    """Return (row index, DRAM layers x, NVMe layers z, cost) minimising (cost, quality rank, step time, tie rank,
    x, z) lexicographically; None if nothing is feasible."""
    best: tuple[tuple[int, int, int, int, int, int], int, int, int, int] | None = None
    for r in rows:
        if r.index in exclude:
            continue
        for x, z in points(r):
            ok, cost = row_feasible(r, lim, x, z)
            if ok:
                key = (cost, r.quality_rank, step_ns(r, x, z), r.tie_rank, x, z)
                if best is None or key < best[0]:
                    best = (key, r.index, x, z, cost)
    return None if best is None else best[1:]


RowOptimum = tuple[tuple[int, int, int, int, int, int], int, int, int]  # (key, x, z, cost)


def row_optimum(r: IntRow, lim: Limits) -> RowOptimum | None:
    """Row r at its own best (x DRAM layers, z NVMe layers): the lexicographic key brute_force and the CP-SAT
    stages use, with the same integer arithmetic as `row_feasible`, evaluated over every point at once (numpy)."""
    L, Z = r.max_offload_layers, r.max_nvme_layers
    if L == 0:  # one point: the plain integer check (no arrays)
        ok0, cost0 = row_feasible(r, lim, 0, 0)
        return ((cost0, r.quality_rank, step_ns(r, 0, 0), r.tie_rank, 0, 0), 0, 0, cost0) if ok0 else None
    xs, zs = np.meshgrid(np.arange(L + 1, dtype=np.int64), np.arange(min(Z, L) + 1, dtype=np.int64), indexing="ij")
    ok = (xs + zs <= L) & (xs + zs >= r.min_offload_layers)
    need = r.host_mb + r.host_mb_per_layer * xs - r.host_dram_mb
    extra = np.where(need <= 0, 0, -(-need // DRAM_GB_IN_HOST_UNITS))
    ok &= extra <= r.max_extra_dram_gb
    ok &= r.device_mib - r.device_mib_per_layer * (xs + zs) <= r.device_budget_mib
    ok &= (zs == 0) | (r.host_mb_per_layer * zs <= r.nvme_capacity_mb)
    step = np.max(np.stack([a + b * xs + c * zs for a, b, c in r.step_planes_ns]), axis=0)
    if lim.step_ns is not None:
        ok &= step <= lim.step_ns
    if lim.ttft_ns is not None:
        ok &= r.ttft_ns + r.ttft_ns_per_dram_layer * xs + r.ttft_ns_per_nvme_layer * zs <= lim.ttft_ns
    cost = r.cost + r.dram_cost_per_gb * extra
    if lim.budget is not None:
        ok &= cost <= lim.budget
    if not ok.any():
        return None
    # lexicographic (cost, step, x, z) among feasible points (quality and tie ranks are the row's own)
    order = np.lexsort((zs[ok], xs[ok], step[ok], cost[ok]))
    i = order[0]
    x, z, c, t = int(xs[ok][i]), int(zs[ok][i]), int(cost[ok][i]), int(step[ok][i])
    return (c, r.quality_rank, t, r.tie_rank, x, z), x, z, c


def row_optima(rows: list[IntRow], lim: Limits) -> dict[int, RowOptimum]:
    """Every row's own optimum. The table is separable (exactly one row is chosen), so sorting these gives the
    optimum and its next-cheapest alternatives in the order brute_force and CP-SAT use (brute_force is their
    minimum; tests check both)."""
    out: dict[int, RowOptimum] = {}
    for r in rows:
        best = row_optimum(r, lim)
        if best is not None:
            out[r.index] = best
    return out
