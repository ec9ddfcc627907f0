"""Fit the decode and prefill factors on every sourced speed measurement (least squares in log space, coordinate
grid search), and apply a fitted set temporarily (for leave-one-source-out cross-validation, crossval.py).

The rows: measurements/speed_measurements.yaml and the single-stream rows of measurements/local_measurements.yaml
(llama-bench tables, server timing lines), measured with an engine rigopt models exactly (llama.cpp, vLLM,
SGLang; ik_llama.cpp and Ollama rows are predicted but never fitted on). There is no fit/check split any more:
the error rigopt reports is cross-validated (every row predicted by factors fitted without its own source).

Decode parameters:
  * achieved fraction of memory bandwidth per device family (factors.BW_EFFICIENCY keys, bounded to [0.30, 1.00]),
    fitted on llama.cpp rows only (single-device or layer-split, batch-1, memory-bound: the rows that isolate
    bandwidth);
  * per engine group, fixed decode costs (all >= 0, factors.ENGINE_*):
      step   per decode step (scheduler, sampling, launches)            ENGINE_STEP_OVERHEAD_S
      layer  per layer                                                  ENGINE_LAYER_OVERHEAD_S
      moe    per MoE layer (routing, top-k, grouped GEMM)               ENGINE_MOE_LAYER_OVERHEAD_S
      tp     per layer when TP > 1 (synchronisation beyond the all-reduce term)  ENGINE_TP_LAYER_SYNC_S
    llama.cpp fits `layer` and `moe` (its rows are batch 1 without TP; a per-step cost is not separable from the
    per-layer one). vLLM and SGLang share one group ("serving") until SGLang has MIN_ROWS_PER_ENGINE rows.

The loss is a Huber loss on log(predicted / measured) (quadratic within HUBER_DELTA, linear beyond), so one row
that rigopt cannot model (a fork's kernels, an unstated offload) does not drag every other prediction.

The decode step is re-assembled from the terms rigopt's decode_speed returns, so a candidate parameter set is
evaluated exactly as decode_speed would with those factor values:

    t = max( max(gpu_memory * e_old / e_new, gpu_compute) + step + layers * layer + moe_layers * moe
             + [tp > 1] * layers * tp + other terms, bound )

A family with fewer than MIN_ROWS_PER_FAMILY rows keeps its current value (one row cannot separate a family's
efficiency from that row's own quirks). Prefill MFU: per engine and model kind (dense / MoE), and per device
family where it has MIN_ROWS_PER_FAMILY rows. Pure Python, deterministic.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from optimizer.estimate import factors as F
from optimizer.fidelity.cases import speed_rows
from optimizer.fidelity.predict import SpeedCase, predict_speed

EFF_BOUNDS = (0.30, 1.00)
PARAM_BOUNDS = {"step": (0.0, 3e-3), "layer": (0.0, 300e-6), "moe": (0.0, 300e-6), "tp": (0.0, 200e-6)}
LO_BOUNDS, MO_BOUNDS = PARAM_BOUNDS["layer"], PARAM_BOUNDS["moe"]
MIN_ROWS_PER_FAMILY = 2
MIN_ROWS_PER_ENGINE = 4
HUBER_DELTA = 0.5  # log-space residual beyond which the loss grows linearly (|log| 0.5 = a factor 1.65)
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


def pool() -> list[dict]:
    """Every speed row a factor may be fitted on, in the speed-row form predict_speed reads: the rows of
    speed_measurements.yaml and the single-stream rows of local_measurements.yaml measured with an engine rigopt
    models exactly (known gaps excluded)."""
    from optimizer.fidelity.heldout import local_rows, speed_rows_of
    out = [r for r in speed_rows() if not r.get("known_gap")]
    for lr in local_rows():
        if lr.get("engine") not in FITTED_ENGINES or lr.get("known_gap"):
            continue
        rows, _ = speed_rows_of(lr)
        out += rows
    return out


def fit_rows(rows: list[dict] | None = None) -> list[dict]:
    """Decode rows for the predicted engines, known gaps excluded (default: the whole pool)."""
    rows = pool() if rows is None else rows
    return [r for r in rows if r["metric"] == "decode_tok_s" and not r.get("known_gap")
            and r["engine"] in FITTED_ENGINES]


def prefill_rows(rows: list[dict] | None = None) -> list[dict]:
    rows = pool() if rows is None else rows
    return [r for r in rows if r["metric"] == "prefill_tok_s" and not r.get("known_gap")
            and r["engine"] in FITTED_ENGINES]


def _huber(x: float) -> float:
    a = abs(x)
    return a * a if a <= HUBER_DELTA else HUBER_DELTA * (2 * a - HUBER_DELTA)


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
        return sum(_huber(math.log((1.0 / _step_time(c, eff_, p)) / r["measured"])) for r, c in sel)

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
    total = sum(math.log((1.0 / _step_time(c, eff, params[g])) / r["measured"]) ** 2
                for g, sel in by_group.items() for r, c in sel)
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


def _prefill_keys(row: dict) -> tuple[str, str, str]:
    """(engine, model kind, device family) of a prefill row."""
    from optimizer.catalog.hardware import get_accelerator
    from optimizer.catalog.models import resolve_model
    from optimizer.fidelity.predict import family_of
    kind = "moe" if resolve_model(row["model"]).spec.is_moe else "dense"
    return row["engine"], kind, family_of(get_accelerator(row["accelerator"]))


def fit_prefill_mfu(rows: list[dict] | None = None, iterations: int = 30) -> dict[str, dict[str, float]]:
    """Prefill MFU per engine and model kind ("dense" / "moe", over all device families) and per device family
    and kind ("nvidia/dense", where that family has MIN_ROWS_PER_FAMILY rows): the median of the MFU each row
    implies (its current MFU x measured / predicted), iterated to a fixed point (rows whose prefill is partly
    weight-bound do not scale exactly with 1/MFU), so a refit from the stored values returns them."""
    from optimizer.estimate.speed import prefill_mfu
    rows = prefill_rows(rows)
    keys = {r["id"]: _prefill_keys(r) for r in rows}
    saved = {e: dict(t) for e, t in F.PREFILL_MFU_BY_ENGINE.items()}
    out: dict[str, dict[str, float]] = {}
    try:
        for _ in range(iterations):
            implied: dict[tuple[str, str], list[float]] = {}
            for r in rows:
                engine, kind, family = keys[r["id"]]
                v = prefill_mfu(engine, kind == "moe", family) * float(r["measured"]) / predict_speed(r).predicted
                implied.setdefault((engine, kind), []).append(v)
                implied.setdefault((engine, f"{family}/{kind}"), []).append(v)
            new: dict[str, dict[str, float]] = {}
            for (engine, key), vals in sorted(implied.items()):
                if "/" in key and len(vals) < MIN_ROWS_PER_FAMILY:
                    continue
                new.setdefault(engine, {})[key] = min(1.0, statistics.median(vals))
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


def serving_pool(tpot: bool = True) -> list[dict]:
    """Served-benchmark rows (measurements/serving_measurements.yaml) with a TTFT or (tpot=True) a TPOT: the
    TTFT overhead and the per-sequence step cost are fitted on them."""
    from optimizer.fidelity import serving
    keys = ("ttft_ms", "tpot_ms") if tpot else ("ttft_ms",)
    return [r for r in serving.serving_rows() if serving.comparable(r) and any(k in serving._measured(r)
                                                                                for k in keys)]


def fit_ttft_overhead(rows: list[dict], decode: FitResult, prefill_mfu: dict[str, dict[str, float]]) -> float:
    """The vLLM/SGLang fixed TTFT overhead: the median over served rows of measured - predicted TTFT (predicted
    with no overhead and with the given decode/prefill factors), floored at 0."""
    from optimizer.fidelity import serving
    diffs = []
    with applied(FitSet(decode, prefill_mfu, ttft_overhead_s=0.0)):
        for r in rows:
            try:
                pred = serving.predict(r).predicted["ttft_ms"]
            except Exception:
                continue
            if math.isfinite(pred):
                diffs.append(serving._measured(r)["ttft_ms"] / 1e3 - pred / 1e3)
    return max(0.0, statistics.median(diffs)) if diffs else 0.0


@dataclass(frozen=True)
class FitSet:
    """Everything the fit produces: decode factors, prefill MFUs, the served per-sequence step cost and the
    served-TTFT overhead (None: leave the stored value)."""
    decode: FitResult
    prefill_mfu: dict[str, dict[str, float]]
    ttft_overhead_s: float | None = None
    seq_step_s: float | None = None
    mlx: tuple[float, float] | None = None  # (per-layer decode cost, prefill MFU) of mlx-lm (fidelity/mlx_fit.py)
    seq_saturation: float | None = None  # N_sat of the per-sequence cost (0: linear; None: leave the stored value)
    cpu_experts: dict[str, float] | None = None  # "engine/host class" -> CPU-expert DRAM efficiency (fit_cpu_experts)


SEQ_FIT_ITERATIONS = 3
# candidate saturation points of the per-sequence cost (sequences per step); 0 = linear (no saturation). The data
# decides by the batch sweeps' shape error (_shape_error): on the 17 sweeps of measurements/serving_measurements.yaml
# (2026-12-08) it is N_sat = 128.
SEQ_SATURATION_GRID = (0.0, 32.0, 64.0, 128.0, 256.0, 512.0)


def _sweep_points(groups: list[list[dict]], saturation: float) -> list[list[tuple[float, float, float]]]:
    """Per batch sweep, its points (measured TPOT s, predicted TPOT s, dTPOT / d(per-sequence cost)) under the
    factors in place: a = g(n) / (1 - rho), g the saturating per-sequence count of n decoding sequences per replica
    (speed.per_seq_step_s) and rho the prefill share of engine time (TPOT = step / (1 - rho))."""
    from optimizer.estimate.deployment import evaluate
    from optimizer.estimate.speed import per_seq_step_s
    from optimizer.fidelity import serving
    out = []
    for g in groups:
        pts = []
        for r in g:
            m = serving._measured(r).get("tpot_ms")
            if not m:
                continue
            try:
                d = serving.deployment_of(r)
                sv = evaluate(d).serving
            except Exception:
                continue
            if sv is None or not math.isfinite(sv.tpot_s) or sv.tpot_s <= 0:
                continue
            n = sv.decoding_seqs / max(d.parallel.dp, 1)
            pts.append((m / 1e3, sv.tpot_s, per_seq_step_s(n, 1.0, saturation) / (1.0 - sv.prefill_share)))
        if len(pts) >= 2:
            out.append(pts)
    return out


def fit_seq_step(rows: list[dict], decode: FitResult, prefill_mfu: dict[str, dict[str, float]],
                 saturation: float = 0.0) -> float:
    """The vLLM/SGLang per-sequence decode step cost, fitted on the SHAPE of published batch sweeps (issue 21:
    "fit it on published batch sweeps"): within a sweep (serving.sweep_rows: one source, model, engine,
    accelerator and request lengths at three or more concurrencies), each later point k against the sweep's lowest
    point 1 implies the cost c at which the predicted growth p_k / p_1 equals the measured growth R = m_k / m_1,
    so an error of the base step common to the sweep (the per-layer costs, the hardware's efficiency) cancels
    instead of being charged to the batch. Linear in c about the current value (a_i = dTPOT_i / dc, _sweep_points):
    c_k = c + (p_k - R p_1) / (R a_1 - a_k). The median over every sweep's points, iterated to a fixed point,
    floored at 0. Fitted on the rows' absolute TPOT instead (the level), the base step's over-prediction on the
    sweeps of 2026-12 (+44-49% at their lowest concurrency) drove the cost to 0."""
    from optimizer.fidelity import serving
    groups = serving.sweep_rows(rows)
    c = 0.0
    for _ in range(SEQ_FIT_ITERATIONS):
        implied = []
        with applied(FitSet(decode, prefill_mfu, None, c, seq_saturation=saturation)):
            for pts in _sweep_points(groups, saturation):
                (m1, p1, a1), rest = pts[0], pts[1:]
                for mk, pk, ak in rest:
                    ratio = mk / m1
                    den = ratio * a1 - ak
                    if abs(den) > 1e-12:
                        implied.append(c + (pk - ratio * p1) / den)
        if not implied:
            return 0.0
        c = max(0.0, statistics.median(implied))
    return c


def fit_all(rows: list[dict] | None = None, serving_rows: list[dict] | None = None) -> FitSet:
    """Decode, prefill, per-sequence and TTFT factors fitted on `rows` and `serving_rows` (default: the whole
    pools), from the stored factors' start. The decode fit runs twice: first with no per-sequence cost, then
    with the one fitted from the first pass (so no stored value leaks into a cross-validation fold)."""
    from optimizer.fidelity import serving
    rows = pool() if rows is None else rows
    serving_rows = serving_pool(tpot=True) if serving_rows is None else serving_rows
    saved = dict(F.ENGINE_SEQ_STEP_S)
    saved_sat = dict(F.ENGINE_SEQ_SATURATION)
    try:
        for e in ("vllm", "sglang"):
            F.ENGINE_SEQ_STEP_S[e] = F.Factor(0.0, "fit in progress")
            F.ENGINE_SEQ_SATURATION[e] = F.Factor(0.0, "fit in progress")
        d = fit(rows)
        p = fit_prefill_mfu(rows)
        best: tuple[float, float, float] | None = None  # (median |TPOT shape error|, N_sat, c)
        for sat in SEQ_SATURATION_GRID:  # N_sat: the grid point whose fitted cost predicts the served TPOT best
            c_sat = fit_seq_step(serving_rows, d, p, sat)
            err = _shape_error(serving_rows, FitSet(d, p, None, c_sat, seq_saturation=sat))
            if best is None or err < best[0] - 1e-12:
                best = (err, sat, c_sat)
        assert best is not None
        _, sat, c = best
        for e in ("vllm", "sglang"):
            F.ENGINE_SEQ_STEP_S[e] = F.Factor(c, "fit in progress")
            F.ENGINE_SEQ_SATURATION[e] = F.Factor(sat, "fit in progress")
        d = fit(rows)  # the decode and prefill factors again, with the per-sequence cost in place
        p = fit_prefill_mfu(rows)
        c = round(fit_seq_step(serving_rows, d, p, sat), 7)
        for e in ("vllm", "sglang"):
            F.ENGINE_SEQ_STEP_S[e] = F.Factor(c, "fit in progress")
        d = fit(rows)  # once more at the stored cost, so the stored decode factors are the decode fit's at it
        p = fit_prefill_mfu(rows)
        ttft_rows = [r for r in serving_rows if "ttft_ms" in serving._measured(r)]
        t = round(fit_ttft_overhead(ttft_rows, d, p), 4)
    finally:
        F.ENGINE_SEQ_STEP_S.clear()
        F.ENGINE_SEQ_STEP_S.update(saved)
        F.ENGINE_SEQ_SATURATION.clear()
        F.ENGINE_SEQ_SATURATION.update(saved_sat)
    return FitSet(d, p, t, c, seq_saturation=sat)


def _shape_error(rows: list[dict], fs: FitSet) -> float:
    """Median |(p_k / p_1) / (m_k / m_1) - 1| over the later points of every batch sweep of `rows` (the growth of
    TPOT with concurrency, predicted against measured; the saturation grid's score, as fit_seq_step's objective)."""
    from optimizer.fidelity import serving
    errs = []
    with applied(fs):
        for pts in _sweep_points(serving.sweep_rows(rows), fs.seq_saturation or 0.0):
            errs += [abs(e) for e in serving.shape_errors([(m, p) for m, p, _ in pts])]
    return statistics.median(errs) if errs else math.inf


@contextmanager
def applied(fs: FitSet) -> Iterator[None]:
    """Within the block, rigopt's physics uses the factors of `fs` (restored afterwards, also on error)."""
    note = "cross-validation fold"
    saved_bw = dict(F.BW_EFFICIENCY)
    saved_tables = {t: dict(getattr(F, t)) for t in _TABLES.values()}
    saved_mfu = {e: dict(t) for e, t in F.PREFILL_MFU_BY_ENGINE.items()}
    saved_ttft = dict(F.ENGINE_TTFT_OVERHEAD_S)
    saved_seq = dict(F.ENGINE_SEQ_STEP_S)
    saved_sat = dict(F.ENGINE_SEQ_SATURATION)
    saved_cpu = dict(F.CPU_EXPERT_BW_EFFICIENCY)
    try:
        for cell, v in (fs.cpu_experts or {}).items():
            eng, cls = cell.split("/")
            F.CPU_EXPERT_BW_EFFICIENCY[(eng, cls)] = F.Factor(v, note)
        if fs.seq_step_s is not None:
            for e in ("vllm", "sglang"):
                F.ENGINE_SEQ_STEP_S[e] = F.Factor(fs.seq_step_s, note)
        if fs.seq_saturation is not None:
            for e in ("vllm", "sglang"):
                F.ENGINE_SEQ_SATURATION[e] = F.Factor(fs.seq_saturation, note)
        if fs.ttft_overhead_s is not None:
            for e in ("vllm", "sglang"):
                F.ENGINE_TTFT_OVERHEAD_S[e] = F.Factor(fs.ttft_overhead_s, note)
        for k, v in fs.decode.bw_efficiency.items():
            F.BW_EFFICIENCY[k] = F.Factor(v, note)
        for engine, params in fs.decode.engine.items():
            for name, table in _TABLES.items():
                getattr(F, table)[engine] = F.Factor(params[name], note)
        F.PREFILL_MFU_BY_ENGINE.clear()
        for engine, old in saved_mfu.items():
            F.PREFILL_MFU_BY_ENGINE[engine] = dict(old)
        for engine, new in fs.prefill_mfu.items():
            F.PREFILL_MFU_BY_ENGINE[engine] = {k: F.Factor(v, note) for k, v in new.items()}
        if fs.mlx is not None:
            F.ENGINE_LAYER_OVERHEAD_S["mlx"] = F.Factor(fs.mlx[0], note)
            F.PREFILL_MFU_BY_ENGINE["mlx"] = {k: F.Factor(fs.mlx[1], note) for k in ("dense", "moe")}
        yield
    finally:
        F.BW_EFFICIENCY.clear()
        F.BW_EFFICIENCY.update(saved_bw)
        for name, values in saved_tables.items():
            getattr(F, name).clear()
            getattr(F, name).update(values)
        F.PREFILL_MFU_BY_ENGINE.clear()
        F.PREFILL_MFU_BY_ENGINE.update(saved_mfu)
        F.ENGINE_TTFT_OVERHEAD_S.clear()
        F.ENGINE_TTFT_OVERHEAD_S.update(saved_ttft)
        F.ENGINE_SEQ_STEP_S.clear()
        F.ENGINE_SEQ_STEP_S.update(saved_seq)
        F.ENGINE_SEQ_SATURATION.clear()
        F.ENGINE_SEQ_SATURATION.update(saved_sat)
        F.CPU_EXPERT_BW_EFFICIENCY.clear()
        F.CPU_EXPERT_BW_EFFICIENCY.update(saved_cpu)


def _sig(v: float, digits: int = 4) -> float:
    return float(f"{v:.{digits}g}")


def factors_document(result: FitResult, prefill_mfu: dict[str, dict[str, float]], fitted_on: str,
                     ttft_overhead_s: float = 0.0, seq_step_s: float = 0.0, seq_saturation: float = 0.0) -> dict:
    """The content of optimizer/estimate/factors.yaml for a decode fit and a prefill fit."""
    rows = fit_rows()
    engine_of = {r["id"]: r["engine"] for r in rows}
    source_of = {r["id"]: r.get("source") for r in pool()}
    prefill = prefill_rows()
    per_kind: dict[str, dict[str, int]] = {}
    for r in prefill:
        engine, kind, family = _prefill_keys(r)
        for key in (kind, f"{family}/{kind}"):
            per_kind.setdefault(engine, {}).setdefault(key, 0)
            per_kind[engine][key] += 1
    n_sources = len({source_of[r] for r in engine_of} | {source_of[r["id"]] for r in prefill})
    with applied(FitSet(result, prefill_mfu, ttft_overhead_s, seq_step_s)):  # on the factors being written
        cpu = fit_cpu_experts()
    return {
        "schema_id": F.FACTORS_SCHEMA,
        "written_by": "python bench/fidelity.py --fit (optimizer/fidelity/calibrate.py); refit instead of editing",
        "fitted_on": fitted_on,
        "rows_from": f"measurements/speed_measurements.yaml and the llama.cpp/vLLM/SGLang single-stream rows of "
                     f"measurements/local_measurements.yaml ({len(engine_of) + len(prefill)} rows, {n_sources} "
                     f"sources); error figures are leave-one-source-out cross-validated (python bench/fidelity.py)",
        "decode": {
            "rms_log_error": round(result.rms_log_error, 4),
            "bw_efficiency": dict(sorted(result.bw_efficiency.items())),
            "engine": {e: dict(sorted(p.items())) for e, p in sorted(result.engine.items())},
            "groups": {g: list(es) for g, es in sorted(result.groups.items())},
            "row_engines": {rid: engine_of[rid] for rid in result.rows},
        },
        "prefill": {
            "rows": [r["id"] for r in prefill],
            "rows_per_kind": {e: dict(sorted(k.items())) for e, k in sorted(per_kind.items())},
            "mfu": {e: {k: _sig(v) for k, v in sorted(t.items())} for e, t in sorted(prefill_mfu.items())},
        },
        "serving": {
            "ttft_overhead_s": ttft_overhead_s,
            "seq_step_s": seq_step_s,
            "seq_saturation": seq_saturation,
            "rows": [r["id"] for r in serving_pool()],
        },
        "cpu_experts": cpu,
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
    fs = fit_all()
    text = render_factors(factors_document(fs.decode, fs.prefill_mfu, fitted_on, fs.ttft_overhead_s or 0.0,
                                           fs.seq_step_s or 0.0, fs.seq_saturation or 0.0))
    old = target.read_text() if target.exists() else ""
    target.write_text(text)
    return str(target), text != old


MIN_CPU_EXPERT_ROWS = 3
MIN_CPU_EXPERT_SOURCES = 3  # a median resists one outlying vote only from three votes (the median of two is their mean)


def _source_median(by_source: dict[str, list[float]]) -> float:
    """The median over sources of each source's median: one vote per source (page / thread / file), so a source
    with many rows of one host cannot set a value alone, and leaving one source out moves it by one vote."""
    return min(1.0, statistics.median(statistics.median(v) for v in by_source.values()))


def fit_cpu_experts(exclude: Callable[[dict], bool] | None = None) -> dict:
    """Per host class (efficiency_class: desktop, server, server-2s), the DRAM efficiency the measured decode rows
    with experts in host memory imply, over every CPU-expert engine's rows: the median over the class's sources of
    each source's median. A class with fewer than MIN_CPU_EXPERT_ROWS rows or MIN_CPU_EXPERT_SOURCES sources is not
    fitted (its engines keep the hand estimates).

    One value per class, not per engine x class: what differs between llama.cpp, ik_llama.cpp and KTransformers (NUMA
    handling, the overlap of CPU experts with GPU work, prefill streaming) is in the physics (cpu_experts.py). Fitted
    per engine x class (with the class value filling a cell's missing votes), the cells predicted held-out sources
    worse: cpu-experts decode leave-one-source-out median 28.1% per cell against 23.6% per class, leave-one-family-out
    28.2% against 26.9% (the 2026-12-08 comparison in the fidelity notes of the README). Fourteen sources cannot
    tell an engine's efficiency from its hosts'.

    A row implies the efficiency at which its CPU-expert time fills exactly the measured step minus the predicted
    rest of the step: eff x dram_s / needed_s, with needed_s the measured step less the non-CPU terms plus the part
    of the CPU time the engine hides behind GPU work. Rows bound by the socket link or threads imply nothing.

    `exclude` leaves out every derived speed row (speed_rows_of) for which it is true (a cross-validation fold's
    held-out source, model family or hardware class)."""
    from optimizer.estimate.deployment import evaluate
    from optimizer.fidelity.crossval import source_key
    from optimizer.fidelity.heldout import offload_rows, speed_rows_of
    from optimizer.fidelity.predict import deployment_of
    classes: dict[str, dict[str, list[float]]] = {}
    for r in offload_rows():
        src = source_key(r.get("source"))
        rows, why = speed_rows_of(r)
        for s in rows if not why else []:
            if s["metric"] != "decode_tok_s" or (exclude is not None and exclude(s)):
                continue
            d = deployment_of(s)
            sp = evaluate(d).decode
            c, h = sp.cpu_experts, (d.hardware.links.host if d.hardware.links else None)
            if c is None or h is None or c.bandwidth.limit != "dram" or c.compute_s > c.dram_s:
                continue
            needed = 1.0 / s["measured"] - (sp.step_time_s - c.exposed_s) + (c.time_s - c.exposed_s)
            if needed <= 0:
                continue
            implied = c.bandwidth.efficiency * c.dram_s / needed
            classes.setdefault(c.bandwidth.host_class, {}).setdefault(src, []).append(implied)

    def enough(by_source: dict[str, list[float]]) -> bool:
        return (sum(len(v) for v in by_source.values()) >= MIN_CPU_EXPERT_ROWS
                and len(by_source) >= MIN_CPU_EXPERT_SOURCES)

    return {"bw_efficiency": {cls: {"value": round(_source_median(v), 4), "rows": sum(len(x) for x in v.values()),
                                    "sources": len(v)} for cls, v in sorted(classes.items()) if enough(v)}}


CPU_EXPERT_ENGINES = ("llamacpp", "ik_llama", "ktransformers")


def cpu_expert_cells(doc: dict) -> dict[str, float]:
    """The "engine/host class" -> efficiency map of a fit_cpu_experts document (for FitSet.cpu_experts): every
    engine of a fitted host class gets the class's value."""
    return {f"{eng}/{cls}": float(v["value"]) for cls, v in (doc.get("bw_efficiency") or {}).items()
            for eng in CPU_EXPERT_ENGINES}


def cpu_expert_sources() -> set[str]:
    """Sources of the offload rows the CPU-expert efficiencies are fitted on (their cross-validation folds)."""
    from optimizer.fidelity.crossval import source_key
    from optimizer.fidelity.heldout import offload_rows
    return {source_key(r.get("source")) for r in offload_rows()}
