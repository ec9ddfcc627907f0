"""Fit the decode efficiency factors on the `fit` split (least squares in log space, coordinate grid search).

Parameters: achieved fraction of memory bandwidth per device family (factors.BW_EFFICIENCY keys, bounded to
[0.30, 1.00]), fixed cost per layer and per MoE layer (factors.LAYER_OVERHEAD_S / MOE_LAYER_OVERHEAD_S, >= 0).
The decode step is re-assembled from the terms rigopt's decode_speed returns, so a candidate parameter set is
evaluated exactly as decode_speed would with those factor values:

    t = max( max(gpu_memory * e_old / e_new, gpu_compute) + layers * LO + moe_layers * MO + other terms, bound )

A family with fewer than MIN_ROWS_PER_FAMILY fit rows keeps its current value (one row cannot separate a
family's efficiency from that row's own quirks). Pure Python, deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimizer.estimate import factors as F
from optimizer.fidelity.cases import speed_rows, split_of
from optimizer.fidelity.predict import SpeedCase, predict_speed

EFF_BOUNDS = (0.30, 1.00)
LO_BOUNDS = (0.0, 100e-6)
MO_BOUNDS = (0.0, 300e-6)
MIN_ROWS_PER_FAMILY = 2


@dataclass(frozen=True)
class FitResult:
    bw_efficiency: dict[str, float]
    layer_overhead_s: float
    moe_layer_overhead_s: float
    rows: tuple[str, ...]
    rms_log_error: float


def _step_time(c: SpeedCase, eff: dict[str, float], lo: float, mo: float) -> float:
    t = c.terms_s
    e_old = F.BW_EFFICIENCY.get(c.family, F.BW_EFFICIENCY["nvidia"]).value
    gm = t["gpu_memory"] * e_old / eff.get(c.family, e_old)
    other = sum(v for k, v in t.items() if k not in ("gpu_memory", "gpu_compute", "layer_overhead"))
    return max(max(gm, t["gpu_compute"]) + c.n_layers * lo + c.n_moe_layers * mo + other, c.bound_step_s)


def fit_rows(rows: list[dict] | None = None) -> list[dict]:
    """Decode rows of the fit split (llama.cpp's, the only engine with enough rows), known gaps excluded."""
    rows = speed_rows() if rows is None else rows
    return [r for r in rows if r["metric"] == "decode_tok_s" and split_of(r) == "fit" and not r.get("known_gap")]


def _grid(lo: float, hi: float, n: int) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def fit(rows: list[dict] | None = None, sweeps: int = 6) -> FitResult:
    rows = fit_rows(rows)
    cases = [(r, predict_speed(r)) for r in rows]
    counts: dict[str, int] = {}
    for _, c in cases:
        counts[c.family] = counts.get(c.family, 0) + 1
    eff = {k: F.BW_EFFICIENCY[k].value for k in counts}
    families = sorted(k for k, n in counts.items() if n >= MIN_ROWS_PER_FAMILY)
    lo, mo = F.LAYER_OVERHEAD_S.value, F.MOE_LAYER_OVERHEAD_S.value

    def loss(eff_, lo_, mo_) -> float:
        return sum(math.log((1.0 / _step_time(c, eff_, lo_, mo_)) / r["measured"]) ** 2 for r, c in cases)

    for sweep in range(sweeps):
        n = 71 if sweep == 0 else 41
        for k in families:
            lo_k, hi_k = EFF_BOUNDS
            eff[k] = min(_grid(lo_k, hi_k, n), key=lambda v: loss({**eff, k: v}, lo, mo))
        lo = min(_grid(*LO_BOUNDS, n), key=lambda v: loss(eff, v, mo))
        mo = min(_grid(*MO_BOUNDS, n), key=lambda v: loss(eff, lo, v))
    # final 1-D refinement around each optimum
    for k in families:
        eff[k] = min(_grid(max(EFF_BOUNDS[0], eff[k] - 0.02), min(EFF_BOUNDS[1], eff[k] + 0.02), 41),
                     key=lambda v: loss({**eff, k: v}, lo, mo))
    rms = math.sqrt(loss(eff, lo, mo) / max(len(cases), 1))
    return FitResult(bw_efficiency={k: round(eff[k], 3) for k in families}, layer_overhead_s=round(lo, 7),
                     moe_layer_overhead_s=round(mo, 7), rows=tuple(r["id"] for r, _ in cases), rms_log_error=rms)
