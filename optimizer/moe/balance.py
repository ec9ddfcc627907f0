"""Expert-parallel balancing of one MoE layer's experts (plus redundant replicas) over the EP ranks: the pure
numpy part (no CP-SAT), shared by `place` (which adds CP-SAT polishing on top) and by the planner's
load-aware step-time factor (`optimizer.moe.imbalance`).

Model: each physical slot holds one logical expert; an expert's traffic splits evenly over its replicas (what
SGLang's static dispatch and vLLM's EPLB do); a rank's work is the load of the replicas it holds, and the
layer's step time follows the busiest rank. Heuristic: replicate by load per replica (optimal for the largest
replica), LPT packing with no two replicas of one expert on one rank (and replicas spread over fast domains
when that costs nothing), then swap local search on the busiest rank.

Lower bound per layer: max(total load / ranks, the largest replica load of the min-max replication).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.moe.greedy import balanced_packing, items_of, replicate

REL_TOL = 1e-9


@dataclass
class LayerPlacement:
    experts: np.ndarray     # per physical replica: logical expert id
    loads: np.ndarray       # per physical replica: its expected load
    gpu: np.ndarray         # per physical replica: EP rank
    n_gpus: int
    method: str = ""
    optimal: bool = False

    def gpu_loads(self) -> np.ndarray:
        return np.bincount(self.gpu, weights=self.loads, minlength=self.n_gpus)

    @property
    def max_load(self) -> float:
        return float(self.gpu_loads().max())

    def slots(self) -> list[list[int]]:
        """Logical expert of each physical slot, per rank (heaviest replica first)."""
        out: list[list[tuple[float, int]]] = [[] for _ in range(self.n_gpus)]
        for e, w, g in zip(self.experts, self.loads, self.gpu, strict=True):
            out[int(g)].append((-float(w), int(e)))
        return [[e for _, e in sorted(s)] for s in out]

    def replicas(self) -> dict[int, int]:
        ids, cnt = np.unique(self.experts, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, cnt, strict=True) if c > 1}

    def colocated(self) -> bool:
        pairs = self.experts.astype(np.int64) * self.n_gpus + self.gpu
        return len(np.unique(pairs)) < len(pairs)


def slot_caps(n_experts: int, redundant: int, n_gpus: int) -> np.ndarray:
    """Slots per rank: (E + R) / G, the first (E + R) mod G ranks one more."""
    P = n_experts + redundant
    base, rem = divmod(P, n_gpus)
    if base == 0:
        raise ValueError(f"{P} physical experts for {n_gpus} ranks: every rank needs at least one")
    return np.array([base + (1 if g < rem else 0) for g in range(n_gpus)])


def lower_bound(w: np.ndarray, caps: np.ndarray) -> float:
    """max(total / ranks, t* + S): t* is the largest replica under the min-max replication (no replication
    does better), and the rank holding the largest replica holds at least min(caps) - 1 other replicas,
    whose loads sum to at least S = the min(caps) - 1 smallest values of {w_e / (R + 1)} with each value
    counted R + 1 times (a replica of e never carries less than w_e / (R + 1))."""
    G = len(caps)
    P = int(caps.sum())
    R = P - len(w)
    r = replicate(w, P, G)
    m = int(caps.min()) - 1
    k = min(R + 1, G)
    small = np.sort(w)[:m] / k          # the m smallest distinct-expert values, each repeatable k times
    S = float(np.sort(np.repeat(small, k))[:m].sum()) if m > 0 else 0.0
    return max(float(w.sum()) / G, float((w / r).max()) + S)


def lpt(ex: np.ndarray, ld: np.ndarray, caps: np.ndarray, domain: np.ndarray,
        target: float) -> np.ndarray:
    """Heaviest first onto the lightest rank with a free slot that does not hold that expert yet; when that
    rank's fast domain already has the expert and a rank in another domain stays within `target`, use it."""
    G = len(caps)
    E = int(ex.max()) + 1
    has = np.zeros((E, G), dtype=bool)
    dom_has = np.zeros((E, int(domain.max()) + 1), dtype=bool)
    L = np.zeros(G)
    free = caps.astype(int).copy()
    where = np.empty(len(ld), dtype=int)
    for i in np.argsort(-ld, kind="stable"):
        e = ex[i]
        ok = (free > 0) & ~has[e]
        if not ok.any():
            ok = free > 0
        cand = np.where(ok, L, np.inf)
        g = int(np.argmin(cand))
        if dom_has[e, domain[g]]:
            alt = ok & ~dom_has[e][domain] & (L + ld[i] <= target)
            if alt.any():
                g = int(np.argmin(np.where(alt, L, np.inf)))
        where[i] = g
        L[g] += ld[i]
        free[g] -= 1
        has[e, g] = True
        dom_has[e, domain[g]] = True
    return where


def improve(ex: np.ndarray, ld: np.ndarray, gpu: np.ndarray, G: int, target: float,
            max_iter: int = 5000) -> np.ndarray:
    """Swap local search: repeatedly swap a replica on the busiest rank with a lighter one elsewhere when
    that lowers the larger of the two ranks' loads; never puts two replicas of one expert on one rank."""
    gpu = gpu.copy()
    E = int(ex.max()) + 1
    cnt = np.zeros((E, G), dtype=int)
    np.add.at(cnt, (ex, gpu), 1)
    L = np.bincount(gpu, weights=ld, minlength=G)
    for _ in range(max_iter):
        g = int(np.argmax(L))
        cur = L[g]
        if cur <= target * (1 + REL_TOL):
            break
        best, best_pair = cur * (1 - REL_TOL), None
        on_g = np.where(gpu == g)[0]
        other = gpu != g
        # a rank must not already hold the expert it receives
        b_ok_on_g = cnt[ex, g] == 0
        for a in on_g:
            delta = ld[a] - ld
            valid = other & (delta > 0) & b_ok_on_g & (cnt[ex[a], gpu] == 0)
            if not valid.any():
                continue
            pair = np.maximum(cur - delta, L[gpu] + delta)
            pair = np.where(valid, pair, np.inf)
            b = int(np.argmin(pair))
            if pair[b] < best:
                best, best_pair = pair[b], (a, b)
        if best_pair is None:
            break
        swap(cnt, ex, gpu, ld, L, *best_pair)
    return gpu


def swap(cnt: np.ndarray, ex: np.ndarray, gpu: np.ndarray, ld: np.ndarray, L: np.ndarray, a: int, b: int) -> None:
    """Exchange the ranks of replicas a and b in place, keeping per-rank expert counts and loads in step."""
    g, h = gpu[a], gpu[b]
    cnt[ex[a], g] -= 1
    cnt[ex[b], h] -= 1
    cnt[ex[a], h] += 1
    cnt[ex[b], g] += 1
    gpu[a], gpu[b] = h, g
    d = ld[a] - ld[b]
    L[g] -= d
    L[h] += d


def improve_secondary(ex: np.ndarray, ld: np.ndarray, hit: np.ndarray, gpu: np.ndarray, G: int,
                      max_iter: int = 2000, slack: float = 0.0) -> np.ndarray:
    """Second pass: swaps that lower the busiest rank's expected distinct replicas read per step (`hit` per
    replica) without raising any rank's load above the current maximum load."""
    gpu = gpu.copy()
    E = int(ex.max()) + 1
    cnt = np.zeros((E, G), dtype=int)
    np.add.at(cnt, (ex, gpu), 1)
    L = np.bincount(gpu, weights=ld, minlength=G)
    T = np.bincount(gpu, weights=hit, minlength=G)
    cap = max(L.max() * (1 + 1e-12), (1 + slack) * L.sum() / G)
    for _ in range(max_iter):
        g = int(np.argmax(T))
        cur = T[g]
        best, best_pair = cur * (1 - 1e-9), None
        other = gpu != g
        b_ok = cnt[ex, g] == 0
        for a in np.where(gpu == g)[0]:
            dt = hit[a] - hit
            dl = ld[a] - ld
            valid = other & (dt > 0) & b_ok & (cnt[ex[a], gpu] == 0) & (L[g] - dl <= cap) & (L[gpu] + dl <= cap)
            if not valid.any():
                continue
            pair = np.where(valid, np.maximum(cur - dt, T[gpu] + dt), np.inf)
            b = int(np.argmin(pair))
            if pair[b] < best:
                best, best_pair = pair[b], (a, b)
        if best_pair is None:
            break
        a, b = best_pair
        h = gpu[b]
        swap(cnt, ex, gpu, ld, L, a, b)
        T[g] -= hit[a] - hit[b]
        T[h] += hit[a] - hit[b]
    return gpu


def item_hits(w: np.ndarray, ex: np.ndarray, k: int, tokens: int) -> np.ndarray:
    """Probability each replica is read in a decode step of `tokens` tokens."""
    r = np.bincount(ex, minlength=len(w))
    q = np.minimum(1.0, k * w / w.sum())[ex] / r[ex]
    hits: np.ndarray = 1.0 - (1.0 - q) ** max(tokens, 1)
    return hits


def greedy_layer(w: np.ndarray, caps: np.ndarray) -> LayerPlacement:
    r = replicate(w, int(caps.sum()), len(caps))
    ex, ld = items_of(w, r)
    return LayerPlacement(ex, ld, balanced_packing(ld, caps), len(caps), "greedy (EPLB)")

def heuristic_layer(w: np.ndarray, caps: np.ndarray, domain: np.ndarray | None = None,
                    baseline: LayerPlacement | None = None) -> LayerPlacement:
    """Replication + LPT + swap local search (never worse than `baseline` when given): `place`'s placement
    without its CP-SAT stages, which is what the planner uses per layer."""
    G = len(caps)
    P = int(caps.sum())
    domain = np.zeros(G, dtype=int) if domain is None else domain
    lb = lower_bound(w, caps)
    r = replicate(w, P, G)
    ex, ld = items_of(w, r)
    cands = [improve(ex, ld, lpt(ex, ld, caps, domain, lb), G, lb)]
    if baseline is not None and not baseline.colocated():
        # baseline items are the same multiset in the same order (same replication, same expansion)
        cands.append(improve(ex, ld, baseline.gpu, G, lb))
    gpu = min(cands, key=lambda gp: np.bincount(gp, weights=ld, minlength=G).max())
    best = LayerPlacement(ex, ld, gpu, G, "greedy+local search")
    if best.max_load <= lb * (1 + 1e-6):
        best.optimal = True
        best.method += " (at bound)"
    return best


def touched(p: LayerPlacement, w: np.ndarray, k: int, tokens: int) -> tuple[np.ndarray, float]:
    """Distinct replicas each rank reads in one decode step of `tokens` tokens (memory-bound work): a replica
    of e is read when at least one token picks it (p_e = k * share_e / r_e per token). Returns (expected
    count per rank, expected count on the busiest rank of a step: max over ranks of mean + sqrt(2 var ln G),
    the same Gaussian tail the speed model's balls-in-bins uses)."""
    r = np.bincount(p.experts, minlength=len(w))
    q = np.minimum(1.0, k * w / w.sum())[p.experts] / r[p.experts]
    hit = 1.0 - (1.0 - q) ** max(tokens, 1)
    mean = np.bincount(p.gpu, weights=hit, minlength=p.n_gpus)
    var = np.bincount(p.gpu, weights=hit * (1 - hit), minlength=p.n_gpus)
    busiest = float((mean + np.sqrt(2.0 * var * np.log(max(p.n_gpus, 1)))).max()) if p.n_gpus > 1 else float(mean.sum())
    return mean, busiest


def remote_fraction(p: LayerPlacement, w: np.ndarray, domain: np.ndarray) -> float:
    """Expected share of token-expert dispatches that leave the sender's fast domain when tokens are spread
    evenly over the ranks and a replica in the sender's domain is used when there is one."""
    D = int(domain.max()) + 1
    if D <= 1:
        return 0.0
    dom = np.zeros((len(w), D), dtype=bool)
    dom[p.experts, domain[p.gpu]] = True
    covered = dom.sum(axis=1) / D
    return float((w / w.sum() * (1 - covered)).sum())
