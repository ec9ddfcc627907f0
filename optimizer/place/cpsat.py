"""CP-SAT models for one layer: packing with fixed replicas (polish, time-capped, warm-started) and an exact
model that also chooses the replica counts (small instances)."""

from __future__ import annotations

import math
import time
from itertools import pairwise

import numpy as np
from ortools.sat.python import cp_model


def _scale(values: np.ndarray, exact_ints: bool, kmax: int) -> float:
    if exact_ints and np.all(values == np.round(values)) and values.sum() * math.lcm(*range(1, kmax + 1)) < 2**50:
        return float(math.lcm(*range(1, kmax + 1)))
    return 1e9 / max(float(values.sum()), 1e-300)


def _solver(time_limit: float, workers: int, seed: int = 0) -> cp_model.CpSolver:
    s = cp_model.CpSolver()
    s.parameters.max_time_in_seconds = max(time_limit, 0.01)
    s.parameters.num_workers = max(1, workers)
    s.parameters.random_seed = seed
    return s


def pack(ex: np.ndarray, ld: np.ndarray, caps: np.ndarray, hint: np.ndarray | None, time_limit: float,
         workers: int = 1) -> tuple[np.ndarray | None, bool]:
    """Assign fixed items (replicas) to GPUs: exactly caps[g] items per GPU, replicas of one expert on
    different GPUs, minimise the largest GPU load. Returns (GPU per item or None, proven optimal)."""
    n, G = len(ld), len(caps)
    S = _scale(ld, False, 1)
    q = [int(round(v * S)) for v in ld]
    m = cp_model.CpModel()
    x = [[m.new_bool_var("") for _ in range(G)] for _ in range(n)]
    for i in range(n):
        m.add_exactly_one(x[i])
    by_exp: dict[int, list[int]] = {}
    for i, e in enumerate(ex):
        by_exp.setdefault(int(e), []).append(i)
    M = m.new_int_var(0, sum(q), "M")
    for g in range(G):
        m.add(sum(x[i][g] for i in range(n)) == int(caps[g]))
        m.add(sum(q[i] * x[i][g] for i in range(n)) <= M)
        for its in by_exp.values():
            if len(its) > 1:
                m.add_at_most_one([x[i][g] for i in its])
    # identical replicas of one expert: order them by GPU index (symmetry breaking)
    for its in by_exp.values():
        for a, b in pairwise(its):
            m.add(sum(g * x[a][g] for g in range(G)) < sum(g * x[b][g] for g in range(G)))
    if hint is not None:
        # the hint must respect the symmetry order: re-sort replicas of each expert by GPU
        h = hint.copy()
        for its in by_exp.values():
            h[its] = np.sort(hint[its])
        for i in range(n):
            for g in range(G):
                m.add_hint(x[i][g], int(h[i] == g))
    m.minimize(M)
    s = _solver(time_limit, workers)
    st = s.solve(m)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, False
    out = np.array([next(g for g in range(G) if s.value(x[i][g])) for i in range(n)])
    return out, st == cp_model.OPTIMAL


def exact(w: np.ndarray, caps: np.ndarray, time_limit: float = 10.0, workers: int = 1
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None:
    """Choose replica counts and packing together (no two replicas of one expert on one GPU); minimise the
    largest GPU load. For small instances. Returns (item experts, item loads, item GPUs, proven optimal), or
    None when the time cap hits before any solution."""
    E, G = len(w), len(caps)
    P = int(caps.sum())
    kmax = min(G, P - E + 1)
    S = _scale(w, True, kmax)
    m = cp_model.CpModel()
    ks = range(1, kmax + 1)
    y = {(e, k): m.new_bool_var("") for e in range(E) for k in ks}
    z = {(e, g, k): m.new_bool_var("") for e in range(E) for g in range(G) for k in ks}
    for e in range(E):
        m.add_exactly_one([y[e, k] for k in ks])
        for k in ks:
            m.add(sum(z[e, g, k] for g in range(G)) == k * y[e, k])
            for g in range(G):
                m.add_implication(z[e, g, k], y[e, k])
        for g in range(G):
            m.add_at_most_one([z[e, g, k] for k in ks])
    m.add(sum(k * y[e, k] for e in range(E) for k in ks) == P)
    M = m.new_int_var(0, int(math.ceil(float(w.sum()) * S)) + 1, "M")
    for g in range(G):
        m.add(sum(z[e, g, k] for e in range(E) for k in ks) == int(caps[g]))
        m.add(sum(int(round(w[e] * S / k)) * z[e, g, k] for e in range(E) for k in ks) <= M)
    m.minimize(M)
    s = _solver(time_limit, workers)
    st = s.solve(m)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None  # time cap hit before any solution (e.g. a loaded machine): the caller uses the heuristic
    ex, gp, ld = [], [], []
    for e in range(E):
        k = next(k for k in ks if s.value(y[e, k]))
        for g in range(G):
            if s.value(z[e, g, k]):
                ex.append(e)
                gp.append(g)
                ld.append(w[e] / k)
    return np.array(ex), np.array(ld, dtype=float), np.array(gp), st == cp_model.OPTIMAL


def exact_size(E: int, G: int, P: int) -> int:
    """Boolean variables of the exact model (used to decide when it is affordable)."""
    return E * G * min(G, P - E + 1)


def now() -> float:
    return time.perf_counter()
