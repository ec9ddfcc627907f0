"""Brute-force enumerator: the test oracle for the CP-SAT model (same integer table, every choice tried)."""

from __future__ import annotations

from optimizer.solver.table import IntRow, Limits, row_feasible, step_ns


def brute_force(rows: list[IntRow], lim: Limits, exclude: frozenset[int] = frozenset()) -> tuple[int, int, int] | None:
    """Return (row index, offloaded layers x, cost) minimising (cost, quality rank, step time, id rank, x)
    lexicographically; None if nothing is feasible."""
    best = None
    for r in rows:
        if r.index in exclude:
            continue
        for x in range(r.L + 1):
            ok, cost = row_feasible(r, lim, x)
            if ok:
                key = (cost, r.qrank, step_ns(r, x), r.idrank, x)
                if best is None or key < best[0]:
                    best = (key, r.index, x, cost)
    return None if best is None else (best[1], best[2], best[3])
