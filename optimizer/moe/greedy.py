"""DeepSeek-EPLB-style baseline: replicate the expert with the highest load per replica, then balanced packing
(heaviest replica first onto the lightest GPU that still has a free slot)."""

from __future__ import annotations

import heapq

import numpy as np


def replicate(w: np.ndarray, n_physical: int, max_replicas: int | None = None) -> np.ndarray:
    """Replica count per expert (>= 1, <= max_replicas, summing to n_physical) minimising the largest
    per-replica load w_e / r_e. Greedy by current load per replica; optimal for that min-max (each step lowers
    the current maximum, which no other choice can do better)."""
    E = len(w)
    if n_physical < E:
        raise ValueError(f"{n_physical} physical slots cannot hold {E} experts")
    cap = max_replicas or n_physical
    if E * cap < n_physical:
        raise ValueError(f"{n_physical} physical slots need more than {cap} replicas of some expert")
    r = np.ones(E, dtype=int)
    heap = [(-float(w[e]), e) for e in range(E)]
    heapq.heapify(heap)
    for _ in range(n_physical - E):
        _, e = heapq.heappop(heap)
        r[e] += 1
        if r[e] < cap:
            heapq.heappush(heap, (-float(w[e]) / r[e], e))
    return r


def items_of(w: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Physical replicas as (expert id, load) arrays; traffic of an expert splits evenly over its replicas."""
    ex = np.repeat(np.arange(len(w)), r)
    return ex, (w / r)[ex]


def balanced_packing(loads: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Heaviest item first onto the lightest GPU with a free slot (EPLB balanced_packing, generalised to
    per-GPU slot counts). Returns the GPU of each item."""
    order = np.argsort(-loads, kind="stable")
    gpu_load = np.zeros(len(caps))
    free = caps.astype(int).copy()
    where = np.empty(len(loads), dtype=int)
    big = np.inf
    for i in order:
        cand = np.where(free > 0, gpu_load, big)
        g = int(np.argmin(cand))
        where[i] = g
        gpu_load[g] += loads[i]
        free[g] -= 1
    return where


def eplb_layer(w: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(experts of the items, item loads, GPU of each item) for one layer."""
    r = replicate(w, int(caps.sum()), len(caps))
    ex, ld = items_of(w, r)
    return ex, ld, balanced_packing(ld, caps)
