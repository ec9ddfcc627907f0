"""Brute-force enumerator: the test oracle for the CP-SAT model (same integer table, every choice tried)."""

from __future__ import annotations

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
