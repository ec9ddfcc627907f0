"""Exhaustive enumerator of mixed-hardware assignments: the test oracle of `optimizer/hetero/model.py`.

Every ordered sequence of distinct devices, every split of the layers into contiguous non-empty blocks in that
order, every (GPU, DRAM, NVMe) count of each block's MoE layers, with the least DRAM purchase that makes it fit,
evaluated with the model's own integer arithmetic (`table.evaluate_int`). No pruning, no bounds: only for small
instances (a few devices, ~10 layers). `count_assignments` gives the size of the space for any instance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

from optimizer.hetero.table import Assignment, Instance, evaluate_int, min_dram_gb, period_int


def _compositions(n: int, k: int) -> Iterator[tuple[int, ...]]:
    """Cut points of n layers into k non-empty contiguous blocks."""
    for cuts in itertools.combinations(range(1, n), k - 1):
        yield (0, *cuts, n)


def _tiers(m: int, nvme: bool, host: bool = True) -> list[tuple[int, int, int]]:
    if not host:
        return [(m, 0, 0)]
    return [(g, c, m - g - c) for g in range(m + 1) for c in range(m - g + 1) if nvme or m - g - c == 0]


def assignments(inst: Instance) -> Iterator[Assignment]:
    D, L = len(inst.devs), inst.n_layers
    for k in range(1, min(D, L) + 1):
        for order in itertools.permutations(range(D), k):
            for cuts in _compositions(L, k):
                blocks = [(order[i], cuts[i], cuts[i + 1]) for i in range(k)]
                options = [
                    _tiers(
                        sum(inst.moe[s:e]),
                        bool(inst.boxes[inst.devs[d].box].nvme_time),
                        inst.host_tiers(inst.devs[d].box),
                    )
                    for d, s, e in blocks
                ]
                for tiers in itertools.product(*options):
                    stages = tuple((d, s, e, *t) for (d, s, e), t in zip(blocks, tiers, strict=True))
                    yield Assignment(stages=stages, dram_gb=min_dram_gb(inst, stages))


def brute_force(inst: Instance, objective: str = "latency") -> tuple[int, int, Assignment] | None:
    """(step time units, cost, assignment) of the optimum: least time (latency), least (cost, time) (cost) or least
    (pipelined period, time) (throughput)."""
    best = None
    for a in assignments(inst):
        ok, t, cost, _ = evaluate_int(inst, a)
        if not ok:
            continue
        key = {"latency": (t,), "cost": (cost, t), "throughput": (period_int(inst, a), t)}[objective]
        if best is None or key < best[0]:
            best = (key, t, cost, a)
    return None if best is None else best[1:]


def count_assignments(inst: Instance) -> int:
    """How many assignments `assignments(inst)` enumerates (exact; computed without enumerating)."""
    D, L = len(inst.devs), inst.n_layers
    pre = [0]
    for x in inst.moe:
        pre.append(pre[-1] + int(x))

    # a block's tier options depend on its device only through (host tiers allowed, NVMe present): its class
    def cls(d: int) -> tuple[bool, bool]:
        b = inst.devs[d].box
        host = inst.host_tiers(b)
        return host, host and bool(inst.boxes[b].nvme_time)

    def opts(m: int, c: tuple[bool, bool]) -> int:
        host, nv = c
        if not host:
            return 1
        return (m + 1) * (m + 2) // 2 if nv else m + 1

    sizes: dict[tuple[bool, bool], int] = {}
    for d in range(D):
        sizes[cls(d)] = sizes.get(cls(d), 0) + 1
    classes = sorted(sizes)
    total = 0
    # the count depends on the order only through the class of the device at each position
    for k in range(1, min(D, L) + 1):
        for pattern in itertools.product(classes, repeat=k):
            ways = 1
            for c in classes:
                ways *= math.perm(sizes[c], pattern.count(c))
            if not ways:
                continue
            # sum over compositions of the product of options: DP over blocks
            f = [0] * (L + 1)
            f[0] = 1
            for i in range(k):
                g = [0] * (L + 1)
                for s in range(L + 1):
                    if f[s]:
                        for e in range(s + 1, L + 1):
                            g[e] += f[s] * opts(pre[e] - pre[s], pattern[i])
                f = g
            total += ways * f[L]
    return total
