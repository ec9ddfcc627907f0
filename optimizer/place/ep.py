"""Expert-parallel placement of one MoE layer for `rigopt place`: the heuristic of `optimizer.moe.balance`
(replication, LPT, swap local search), then CP-SAT (warm-started, time capped) where a gap to the lower bound
remains. Small layers are solved exactly by CP-SAT (replica counts and packing together).
"""

from __future__ import annotations

import numpy as np

from optimizer.moe.balance import (
    REL_TOL,
    LayerPlacement,
    greedy_layer,
    heuristic_layer,
    improve_secondary,
    item_hits,
    lower_bound,
    remote_fraction,
    slot_caps,
    touched,
)
from optimizer.place import cpsat

# exact CP-SAT model (replicas + packing) when it has at most this many booleans
EXACT_MAX_VARS = 4000
# max load may rise to bound * (1 + this) to balance the experts read per step
STEP_SLACK = 0.0

__all__ = ["EXACT_MAX_VARS", "REL_TOL", "LayerPlacement", "STEP_SLACK", "greedy_layer", "lower_bound",
           "place_layer", "remote_fraction", "slot_caps", "touched"]


def place_layer(w: np.ndarray, caps: np.ndarray, domain: np.ndarray | None = None, time_limit: float = 0.5,
                workers: int = 1, baseline: LayerPlacement | None = None, polish_gap: float = 1e-3,
                step: tuple[int, int] | None = None) -> LayerPlacement:
    """rigopt placement of one layer (never worse than `baseline` when given). CP-SAT polishes only when
    local search leaves a gap to the bound above `polish_gap`. step=(k, tokens): afterwards lower the busiest
    rank's distinct replicas read per decode step without raising the max load."""
    p = _place_layer(w, caps, domain, time_limit, workers, baseline, polish_gap)
    if step is not None and p.method != "greedy (EPLB)" and not p.method.startswith("cp-sat exact"):
        hit = item_hits(w, p.experts, *step)
        lb = lower_bound(w, caps)
        slack = max(0.0, lb * (1 + STEP_SLACK) / (w.sum() / p.n_gpus) - 1)
        p.gpu = improve_secondary(p.experts, p.loads, hit, p.gpu, p.n_gpus, slack=slack)
    return p


def _place_layer(w: np.ndarray, caps: np.ndarray, domain: np.ndarray | None, time_limit: float, workers: int,
                 baseline: LayerPlacement | None, polish_gap: float) -> LayerPlacement:
    G = len(caps)
    P = int(caps.sum())
    E = len(w)
    domain = np.zeros(G, dtype=int) if domain is None else domain
    lb = lower_bound(w, caps)
    exact: LayerPlacement | None = None
    if cpsat.exact_size(E, G, P) <= EXACT_MAX_VARS and time_limit > 0:
        solved = cpsat.exact(w, caps, time_limit=max(time_limit, 1.0), workers=workers)
        if solved is not None:
            ex_e, ld_e, gp_e, opt_e = solved
            how = "cp-sat exact" if opt_e else "cp-sat exact model (time cap)"
            exact = LayerPlacement(ex_e, ld_e, gp_e, G, how, opt_e)
            if opt_e and (baseline is None or exact.max_load <= baseline.max_load):
                return exact
    best = heuristic_layer(w, caps, domain, baseline)
    if best.optimal:
        return best
    ex, ld, gpu = best.experts, best.loads, best.gpu
    if time_limit > 0 and best.max_load > lb * (1 + polish_gap):
        got, opt = cpsat.pack(ex, ld, caps, gpu, time_limit, workers)
        if got is not None:
            how = " (optimal for these replicas)" if opt else " (time cap)"
            cp = LayerPlacement(ex, ld, got, G, "cp-sat packing" + how)
            if cp.max_load < best.max_load:
                best = cp
    if exact is not None and exact.max_load < best.max_load:
        best = exact
    if baseline is not None and baseline.max_load < best.max_load:
        return baseline
    return best
