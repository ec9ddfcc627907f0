"""Fit the decode factors on the `fit` split (least squares in log space, coordinate grid search).

Parameters:
  * achieved fraction of memory bandwidth per device family (factors.BW_EFFICIENCY keys, bounded to [0.30, 1.00]),
    fitted on llama.cpp rows only (single-device, batch-1, memory-bound: the rows that isolate bandwidth);
  * per engine group, fixed decode costs (all >= 0, factors.ENGINE_*):
      step   per decode step (scheduler, sampling, launches)            ENGINE_STEP_OVERHEAD_S
      layer  per layer                                                  ENGINE_LAYER_OVERHEAD_S
      moe    per MoE layer (routing, top-k, grouped GEMM)               ENGINE_MOE_LAYER_OVERHEAD_S
      tp     per layer when TP > 1 (synchronisation beyond the all-reduce term)  ENGINE_TP_LAYER_SYNC_S
    llama.cpp fits `layer` and `moe` only (its rows are one device at batch 1: no TP, and a per-step cost is not
    separable from the per-layer one). vLLM and SGLang share one group ("serving") until SGLang has
    MIN_ROWS_PER_ENGINE fit rows of its own.

The decode step is re-assembled from the terms rigopt's decode_speed returns, so a candidate parameter set is
evaluated exactly as decode_speed would with those factor values:

    t = max( max(gpu_memory * e_old / e_new, gpu_compute) + step + layers * layer + moe_layers * moe
             + [tp > 1] * layers * tp + other terms, bound )

A family with fewer than MIN_ROWS_PER_FAMILY fit rows keeps its current value (one row cannot separate a
family's efficiency from that row's own quirks). Pure Python, deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from optimizer.estimate import factors as F
from optimizer.fidelity.cases import speed_rows, split_of
from optimizer.fidelity.predict import SpeedCase, predict_speed

EFF_BOUNDS = (0.30, 1.00)
PARAM_BOUNDS = {"step": (0.0, 3e-3), "layer": (0.0, 100e-6), "moe": (0.0, 300e-6), "tp": (0.0, 200e-6)}
LO_BOUNDS, MO_BOUNDS = PARAM_BOUNDS["layer"], PARAM_BOUNDS["moe"]
MIN_ROWS_PER_FAMILY = 2
MIN_ROWS_PER_ENGINE = 4
FITTED_ENGINES = ("llamacpp", "vllm", "sglang")  # engines whose rows are predicted and fitted
GROUP_PARAMS = {"llamacpp": ("layer", "moe"), "serving": ("step","moe","tp")}
_TABLES = {"step": "ENGINE_STEP_OVERHEAD_S", "layer": "ENGINE_LAYER_OVERHEAD_S", "moe": "ENGINE_MOE_LAYER_OVERHEAD_S",
           "tp": "ENGINE_TP_LAYER_SYNC_S"}


@dataclass(frozen=True)
class FitResult:
    bw_efficiency: dict[str, float]
    layer_overhead_s: float          # llama.cpp (factors.LAYER_OVERHEAD_S)
    moe_layer_overhead_s: float      # llama.cpp (factors.MOE_LAYER_OVERHEAD_S)
    rows: tuple[str, ...]
    rms_log_error: float
    engine: dict[str, dict[str, float]] = field(default_factory=dict)  # engine -> {step, layer, moe, tp}
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)   # group -> engines sharing its values


def group_of(engine: str, sglang_own: bool = False) -> str:
    if engine == "llamacpp":
        return "llamacpp"
    if engine == "sglang" and sglang_own:
        return "sglang"
    return "serving"


def current_params(engine: str) -> dict[str, float]:
    return {k: F.engine_factor(getattr(F, t), engine) for k, t in _TABLES.items()}


def _step_time(c: SpeedCase, eff: dict[str, float], p: dict[str, float]) -> float:
    t = c.terms_s
    e_old = F.BW_EFFICIENCY.get(c.family, F.BW_EFFICIENCY["nvidia"]).value
    gm = t["gpu_memory"] * e_old / eff.get(c.family, e_old)
    other = sum(v for k, v in t.items() if k not in ("gpu_memory", "gpu_compute", "layer_overhead", "tp_sync"))
    fixed = (p["step"] + c.n_layers * p["layer"] + c.n_moe_layers * p["moe"]
             + (c.n_layers * p["tp"] if c.tp > 1 else 0.0))
    return max(max(gm, t["gpu_compute"]) + fixed + other, c.bound_step_s)


def fit_rows(rows: list[dict] | None = None) -> list[dict]:
    """Decode rows of the fit split for the predicted engines, known gaps excluded."""
    rows = speed_rows() if rows is None else rows
    return [r for r in rows if r["metric"] == "decode_tok_s" and split_of(r) == "fit" and not r.get("known_gap")
            and r["engine"] in FITTED_ENGINES]


def _grid(lo: float, hi: float, n: int) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def fit(rows: list[dict] | None = None, sweeps: int = 6) -> FitResult:
    rows = fit_rows(rows)
    cases = [(r, predict_speed(r)) for r in rows]
    sglang_own = sum(r["engine"] == "sglang" for r in rows) >= MIN_ROWS_PER_ENGINE
    by_group: dict[str, list] = {}
    for r, c in cases:
        by_group.setdefault(group_of(r["engine"], sglang_own), []).append((r, c))

    # 1) bandwidth efficiency per device family, with llama.cpp's fixed costs, on llama.cpp rows
    lc = by_group.get("llamacpp", [])
    counts: dict[str, int] = {}
    for _, c in lc:
        counts[c.family] = counts.get(c.family, 0) + 1
    eff = {k: v.value for k, v in F.BW_EFFICIENCY.items()}
    families = sorted(k for k, n in counts.items() if n >= MIN_ROWS_PER_FAMILY)
    # the loss is flat along layer-vs-MoE-layer (llama.cpp) and step-vs-MoE-layer (serving) directions, so the
    # start is fixed: llama.cpp from its stored values (as before engines had their own costs), the serving group
    # from zero costs; either way a refit reproduces the stored figures
    params = {g: (current_params("llamacpp") if g == "llamacpp" else {k: 0.0 for k in PARAM_BOUNDS}) for g in by_group}

    def loss(sel, eff_, p) -> float:
        return sum(math.log((1.0 / _step_time(c, eff_, p)) / r["measured"]) ** 2 for r, c in sel)

    for g, sel in by_group.items():
        names = GROUP_PARAMS.get(g, GROUP_PARAMS["serving"])
        p = params[g]
        for name in PARAM_BOUNDS:
            if name not in names:
                p[name] = 0.0
        for sweep in range(sweeps):
            n = 71 if sweep == 0 else 41
            if g == "llamacpp":
                for k in families:
                    eff[k] = min(_grid(*EFF_BOUNDS, n), key=lambda v: loss(sel, {**eff, k: v}, p))
            for name in names:
                p[name] = min(_grid(*PARAM_BOUNDS[name], n), key=lambda v: loss(sel, eff, {**p, name: v}))
        if g == "llamacpp":
            for k in families:
                eff[k] = min(_grid(max(EFF_BOUNDS[0], eff[k] - 0.02), min(EFF_BOUNDS[1], eff[k] + 0.02), 41),
                             key=lambda v: loss(sel, {**eff, k: v}, p))
        for name in names:  # final 1-D refinement around each optimum
            lo, hi = PARAM_BOUNDS[name]
            w = (hi - lo) / 40
            p[name] = min(_grid(max(lo, p[name] - w), min(hi, p[name] + w), 41),
                          key=lambda v: loss(sel, eff, {**p, name: v}))
    total = sum(loss(sel, eff, params[g]) for g, sel in by_group.items())
    rms = math.sqrt(total / max(len(cases), 1))
    engines = {e: {k: round(v, 7) for k, v in params.get(group_of(e, sglang_own), current_params(e)).items()}
               for e in FITTED_ENGINES}
    groups: dict[str, tuple[str, ...]] = {}
    for e in FITTED_ENGINES:
        groups[group_of(e, sglang_own)] = groups.get(group_of(e, sglang_own), ()) + (e,)
    lcp = engines["llamacpp"]
    return FitResult(bw_efficiency={k: round(eff[k], 3) for k in families}, layer_overhead_s=lcp["layer"],
                     moe_layer_overhead_s=lcp["moe"], rows=tuple(r["id"] for r, _ in cases), rms_log_error=rms,
                     engine=engines, groups=groups)


def fit_prefill_mfu(rows: list[dict] | None = None, iterations: int = 30) -> dict[str, dict[str, float]]:
    """Prefill MFU per engine and model kind (dense / moe), from the `fit` prefill rows: the median of the MFU
    each row implies (current MFU x measured / predicted), iterated to a fixed point (rows whose prefill is
    partly weight-bound do not scale exactly with 1/MFU), so a refit from the stored values returns them."""
    from optimizer.catalog.models import resolve_model
    rows = [r for r in (rows if rows is not None else speed_rows())
            if r["metric"] == "prefill_tok_s" and split_of(r) == "fit" and not r.get("known_gap")]
    kinds = {r["id"]: "moe" if resolve_model(r["model"]).spec.is_moe else "dense" for r in rows}
    saved = {e: dict(t) for e, t in F.PREFILL_MFU_BY_ENGINE.items()}
    out: dict[str, dict[str, float]] = {}
    try:
        for _ in range(iterations):
            implied: dict[tuple[str, str], list[float]] = {}
            for r in rows:
                cur = F.PREFILL_MFU_BY_ENGINE.get(r["engine"], {}).get(kinds[r["id"]], F.PREFILL_MFU).value
                implied.setdefault((r["engine"], kinds[r["id"]]), []).append(
                    cur * float(r["measured"]) / predict_speed(r).predicted)
            new: dict[str, dict[str, float]] = {}
            for (engine, kind), vals in sorted(implied.items()):
                vals = sorted(vals)
                n = len(vals)
                median = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
                new.setdefault(engine, {})[kind] = min(1.0, median)
            done = new == out
            out = new
            for engine, table in out.items():
                F.PREFILL_MFU_BY_ENGINE[engine] = {k: F.Factor(v, "fit in progress") for k, v in table.items()}
            if done:
                break
    finally:
        F.PREFILL_MFU_BY_ENGINE.clear()
        F.PREFILL_MFU_BY_ENGINE.update(saved)
    return out


def _sig(v: float, digits: int = 4) -> float:
    return float(f"{v:.{digits}g}")


def factors_document(result: FitResult, prefill_mfu: dict[str, dict[str, float]], fitted_on: str) -> dict:
    """The content of optimizer/estimate/factors.yaml for a decode fit and a prefill fit."""
    rows = fit_rows()
    engine_of = {r["id"]: r["engine"] for r in rows}
    prefill_rows = [r for r in speed_rows() if r["metric"] == "prefill_tok_s" and split_of(r) == "fit"
                    and not r.get("known_gap")]
    from optimizer.catalog.models import resolve_model
    per_kind: dict[str, dict[str, int]] = {}
    for r in prefill_rows:
        kind = "moe" if resolve_model(r["model"]).spec.is_moe else "dense"
        per_kind.setdefault(r["engine"], {}).setdefault(kind, 0)
        per_kind[r["engine"]][kind] += 1
    return {
        "schema_id": F.FACTORS_SCHEMA,
        "written_by": "python bench/fidelity.py --fit (optimizer/fidelity/calibrate.py); refit instead of editing",
        "fitted_on": fitted_on,
        "decode": {
            "rms_log_error": round(result.rms_log_error, 4),
            "bw_efficiency": dict(sorted(result.bw_efficiency.items())),
            "engine": {e: dict(sorted(p.items())) for e, p in sorted(result.engine.items())},
            "groups": {g: list(es) for g, es in sorted(result.groups.items())},
            "row_engines": {rid: engine_of[rid] for rid in result.rows},
        },
        "prefill": {
            "rows": [r["id"] for r in prefill_rows],
            "rows_per_kind": {e: dict(sorted(k.items())) for e, k in sorted(per_kind.items())},
            "mfu": {e: {k: _sig(v) for k, v in sorted(t.items())} for e, t in sorted(prefill_mfu.items())},
        },
    }


def render_factors(doc: dict) -> str:
    import yaml
    head = ("# Fitted factors (optimizer/estimate/factors.py reads this file). Written by `python bench/fidelity.py"
            " --fit`;\n# do not edit by hand: change the fit or the measurements and refit.\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=100)


def write_factors(fitted_on: str, path: str | None = None) -> tuple[str, bool]:
    """Refit decode and prefill factors and write factors.yaml. Returns (path, changed)."""
    from pathlib import Path
    target = Path(path) if path else F.FACTORS_FILE
    text = render_factors(factors_document(fit(), fit_prefill_mfu(), fitted_on))
    old = target.read_text() if target.exists() else ""
    target.write_text(text)
    return str(target), text != old
