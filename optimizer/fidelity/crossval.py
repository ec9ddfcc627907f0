"""Leave-one-source-out cross-validation of rigopt's speed model, and the prediction intervals derived from it.

Every sourced measurement (measurements/*.yaml) is predicted by factors fitted WITHOUT any row of its own source
(a source is one page, thread or file: its URL without fragment or the parenthesised table name). Rows whose
source contributes no fit row are predicted by the factors fitted on everything, which is the same thing. The
errors reported by `rigopt validate` and `bench/fidelity.py` are these cross-validated errors, per metric and per
regime (engine x hardware class x batch regime).

The residuals log(measured / predicted) of the cross-validated predictions give the prediction intervals
(optimizer/estimate/uncertainty.yaml, written by `python bench/fidelity.py --fit`): empirical quantiles per
interval kind (decode, prefill, ttft, throughput) and regime, backed off to coarser regimes when a regime has
fewer than MIN_INTERVAL_ROWS rows.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, replace

import numpy as np

from optimizer.catalog.hardware import get_accelerator
from optimizer.estimate import factors as F
from optimizer.estimate.uncertainty import QUANTILE_LEVELS, regime_keys
from optimizer.fidelity.calibrate import (
    FitSet,
    applied,
    cpu_expert_cells,
    cpu_expert_sources,
    fit_all,
    fit_cpu_experts,
    pool,
    serving_pool,
)
from optimizer.fidelity.cases import memory_rows, speed_rows
from optimizer.fidelity.heldout import ENGINE_MAP, local_rows, offload_rows, speed_rows_of
from optimizer.fidelity.predict import predict_memory, predict_speed

MIN_INTERVAL_ROWS = 8
# cross-validated targets of the fidelity issue (median |relative error|); the 90th percentile target is 2x these
TARGETS = {"decode_tok_s": 0.20, "tpot_ms": 0.20, "output_tok_s_per_gpu": 0.25, "prefill_tok_s": 0.30,
           "ttft_ms": 0.30, "weights_per_gpu_bytes": 0.05, "gguf_file_bytes": 0.05, "kv_tokens_for_bytes": 0.05,
           "kv_bytes_per_token": 0.05}
# the interval kind each metric informs, and whether the metric is a time (measured/predicted inverted for speed)
KIND = {"decode_tok_s": ("decode", False), "tpot_ms": ("decode", True), "prefill_tok_s": ("prefill", False),
        "ttft_ms": ("ttft", False), "output_tok_s_per_gpu": ("throughput", False)}


def source_key(source: object) -> str:
    """One key per page/thread/file: the URL without a parenthesised table name, fragment or trailing slash."""
    s = str(source or "").split(" (")[0].strip().split("#")[0].rstrip("/")
    return s.lower()


@dataclass(frozen=True)
class Item:
    id: str
    metric: str
    engine: str            # as measured (ik_llama, ollama kept)
    model: str
    hardware: str
    accelerator: str
    batch: int
    source: str            # source_key
    measured: float
    kind: str              # speed | serving | memory
    row: dict
    offload: bool = False  # experts in host DRAM


def items() -> list[Item]:
    """Every comparable measurement: speed rows (decode, prefill), local single-stream rows, serving rows (TPOT,
    TTFT, output tok/s per GPU) and memory rows."""
    from optimizer.fidelity import serving
    out: list[Item] = []
    for r in speed_rows():
        if r.get("known_gap"):
            continue
        out.append(Item(r["id"], r["metric"], r["engine"], r["model"], f"{r.get('gpus', 1)}x {r['accelerator']}",
                        r["accelerator"], int(r.get("batch") or 1), source_key(r["source"]), float(r["measured"]),
                        "speed", r, bool(r.get("offload"))))
    for lr in local_rows() + offload_rows():
        if lr.get("known_gap"):
            continue
        rows, _ = speed_rows_of(lr)
        for r in rows:
            out.append(Item(r["id"], r["metric"], str(lr["engine"]), r["model"], f"{r['gpus']}x {r['accelerator']}",
                            r["accelerator"], int(r.get("batch") or 1), source_key(r["source"]),
                            float(r["measured"]), "speed", r, bool(r.get("offload"))))
    for r in serving.serving_rows():
        if not serving.comparable(r):
            continue
        w = r.get("workload") or {}
        for metric, v in serving._measured(r).items():
            out.append(Item(f"{r['id']}/{metric}", metric, r["engine"], r["model"],
                            f"{r.get('gpus', 1)}x {r['accelerator']}", r["accelerator"],
                            int(serving._concurrency(w) or 1), source_key(r.get("source")), float(v), "serving", r))
    for r in memory_rows():
        if r.get("known_gap"):
            continue
        out.append(Item(r["id"], r["metric"], r.get("engine") or "llamacpp", r["model"], f"TP{r.get('tp', 1)}",
                        "", 1, source_key(r["source"]), float(r["measured"]), "memory", r))
    return out


def regime_of(it: Item) -> str:
    """engine x hardware class x batch regime, e.g. "llamacpp/nvidia-consumer/b1"."""
    engine = ENGINE_MAP.get(it.engine, it.engine)
    if it.kind == "memory":
        return f"{engine}/memory"
    return regime_keys(engine, get_accelerator(it.accelerator), it.batch, it.offload)[0]


@dataclass(frozen=True)
class CVCase:
    id: str
    metric: str
    engine: str
    model: str
    hardware: str
    regime: str
    source: str
    measured: float
    accelerator: str
    batch: int
    offload: bool
    predicted: float       # by the shipped factors (fitted on every row)
    predicted_cv: float    # by factors fitted without this row's source
    folds_fitted: bool     # False: the source has no fit rows (the shipped factors never saw it)

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1.0

    @property
    def cv_error(self) -> float:
        return self.predicted_cv / self.measured - 1.0


def _predict(it: Item, cache: dict) -> float:
    from optimizer.fidelity import serving
    if it.kind == "memory":
        return predict_memory(it.row)
    if it.kind == "speed":
        return predict_speed(it.row).predicted
    key = it.row["id"]
    if key not in cache:
        cache[key] = serving.predict(it.row).predicted
    return float(cache[key].get(it.metric, math.nan))


@dataclass(frozen=True)
class Fold:
    """One cross-validation fold: the items of one source and the rows its factors are fitted on (None: the source
    has no fit rows, so the full fit is its leave-it-out fit)."""
    source: str
    items: tuple[Item, ...]
    train: tuple[dict, ...] | None
    train_serving: tuple[dict, ...] | None


def folds(all_items: list[Item] | None = None) -> list[Fold]:
    from optimizer.fidelity.mlx_fit import fit_sources as mlx_sources
    all_items = items() if all_items is None else all_items
    train, strain = pool(), serving_pool()
    fit_sources = {source_key(r.get("source")) for r in train + strain} | mlx_sources()
    by_source: dict[str, list[Item]] = {}
    for it in all_items:
        by_source.setdefault(it.source, []).append(it)
    out = []
    for src, sel in sorted(by_source.items()):
        if src in fit_sources:
            out.append(Fold(src, tuple(sel), tuple(r for r in train if source_key(r.get("source")) != src),
                            tuple(r for r in strain if source_key(r.get("source")) != src)))
        else:
            out.append(Fold(src, tuple(sel), None, None))
    return out


def _estimates() -> dict[str, float]:
    """The CPU-expert efficiency cells as estimated before any fit (factors.CPU_EXPERT_BW_EFFICIENCY's estimates)."""
    return {f"{e}/{c}": f.value for (e, c), f in F.CPU_EXPERT_BW_EFFICIENCY.items() if f.estimate}


def run(full: FitSet | None = None) -> list[CVCase]:
    """Every item predicted by the full fit and by its leave-its-source-out fit (one fit per source with fit rows).
    Items rigopt cannot evaluate are left out (bench/heldout.py and bench/serving.py list them with the reason)."""
    all_items = items()
    full = full or fit_all()

    def predict_all(sel: list[Item] | tuple[Item, ...], fs: FitSet) -> dict[str, float]:
        out: dict[str, float] = {}
        cache: dict = {}
        with applied(fs):
            for it in sel:
                try:
                    out[it.id] = _predict(it, cache)
                except Exception:  # reported by bench/heldout.py / bench/serving.py, never counted here
                    continue
        return out

    from optimizer.fidelity import mlx_fit
    if full.cpu_experts is None:
        full = replace(full, cpu_experts=cpu_expert_cells(fit_cpu_experts()))
    in_sample = predict_all(all_items, full)
    preds: dict[str, tuple[float, float, bool]] = {}
    mlx_sources = mlx_fit.fit_sources()
    cpu_sources = cpu_expert_sources()
    for fold in folds(all_items):
        if fold.train is not None or fold.source in cpu_sources:
            fs = fit_all(list(fold.train), list(fold.train_serving or ())) if fold.train is not None else full
            if fold.source in mlx_sources:  # mlx-lm's own factors, refit without this source's rows
                f = mlx_fit.fit(exclude_source=fold.source)
                fs = replace(fs, mlx=(f["layer_overhead_s"], f["prefill_mfu"]))
            # the CPU-expert efficiencies refit without this source's offload rows (cells it leaves below the
            # minimum fall back to the estimate)
            fs = replace(fs, cpu_experts={**_estimates(), **cpu_expert_cells(fit_cpu_experts(fold.source))})
            cv = predict_all(fold.items, fs)
        else:
            cv = {it.id: in_sample[it.id] for it in fold.items if it.id in in_sample}
        for it in fold.items:
            if it.id in cv and it.id in in_sample:
                preds[it.id] = (in_sample[it.id], cv[it.id], fold.train is not None)
    out = []
    for it in all_items:
        if it.id not in preds:
            continue
        p, pcv, fitted = preds[it.id]
        if not (math.isfinite(p) and math.isfinite(pcv) and p > 0 and pcv > 0):
            continue
        out.append(CVCase(it.id, it.metric, it.engine, it.model, it.hardware, regime_of(it), it.source, it.measured,
                          it.accelerator, it.batch, it.offload, p, pcv, fitted))
    return out


@dataclass(frozen=True)
class CVSummary:
    metric: str
    regime: str            # "all" or a regime
    n: int
    n_sources: int
    median_abs_error: float
    p90_abs_error: float
    median_abs_error_in_sample: float
    target: float | None
    signed_median_error: float = 0.0       # cross-validated predicted/measured - 1: > 0 means rigopt is too fast
    coverage_80: float | None = None       # share of rows inside an 80% interval built without their own source

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.median_abs_error <= self.target and self.p90_abs_error <= 2 * self.target


def summarize(cases: list[CVCase], per_regime: bool = True) -> list[CVSummary]:
    out = []
    metrics = list(dict.fromkeys(c.metric for c in cases))
    for metric in metrics:
        sel = [c for c in cases if c.metric == metric]
        groups: dict[str, list[CVCase]] = {"all": sel}
        if per_regime:
            for c in sel:
                groups.setdefault(c.regime, []).append(c)
        for regime, g in groups.items():
            errs = [abs(c.cv_error) for c in g]
            out.append(CVSummary(metric, regime, len(g), len({c.source for c in g}), statistics.median(errs),
                                 float(np.quantile(errs, 0.9)), statistics.median(abs(c.error) for c in g),
                                 TARGETS.get(metric), statistics.median(c.cv_error for c in g),
                                 interval_coverage(g, 0.8)))
    return out


def interval_coverage(cases: list[CVCase], confidence: float) -> float | None:
    """Share of `cases` whose measured value lies inside the `confidence` interval of their prediction, the interval
    built (as uncertainty.yaml builds it: empirical quantiles of the cross-validated log residual) from the other
    sources' rows of the same group only, so no row helps set its own interval. None with fewer than
    MIN_INTERVAL_ROWS rows."""
    if len(cases) < MIN_INTERVAL_ROWS:
        return None
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    inside = counted = 0
    for c in cases:
        others = [math.log(o.measured / o.predicted_cv) for o in cases if o.source != c.source]
        if len(others) < 2:
            continue
        r = math.log(c.measured / c.predicted_cv)
        counted += 1
        inside += float(np.quantile(others, lo_q)) <= r <= float(np.quantile(others, hi_q))
    return inside / counted if counted else None


def interval_table(cases: list[CVCase]) -> dict:
    """Quantiles of the cross-validated log-residual log(measured / predicted) per interval kind and regime key
    (every backoff level of optimizer/estimate/uncertainty.regime_keys), for regimes with MIN_INTERVAL_ROWS rows.
    Time metrics (TPOT) are turned into speed residuals (log(predicted / measured))."""
    from optimizer.fidelity.heldout import ENGINE_MAP as EM
    res: dict[str, dict[str, list[float]]] = {}
    meta: dict[str, dict[str, set[str]]] = {}
    for c in cases:
        if c.metric not in KIND:
            continue
        kind, inverted = KIND[c.metric]
        r = math.log(c.measured / c.predicted_cv)
        if inverted:
            r = -r
        for key in regime_keys(EM.get(c.engine, c.engine), get_accelerator(c.accelerator), c.batch, c.offload):
            res.setdefault(kind, {}).setdefault(key, []).append(r)
            meta.setdefault(kind, {}).setdefault(key, set()).add(c.source)
    table: dict = {}
    for kind in sorted(res):
        for key in sorted(res[kind]):
            vals = res[kind][key]
            if len(vals) < MIN_INTERVAL_ROWS and key != "*":
                continue
            table.setdefault(kind, {})[key] = {
                "n_rows": len(vals), "n_sources": len(meta[kind][key]),
                "log_ratio_quantiles": [round(float(np.quantile(vals, p)), 4) for p in QUANTILE_LEVELS]}
    return table


def as_dict(cases: list[CVCase], summary: list[CVSummary]) -> dict:
    return {"cases": [dict(asdict(c), error=c.error, cv_error=c.cv_error) for c in cases],
            "summary": [dict(asdict(s), met=s.met) for s in summary]}


def render_summary(summary: list[CVSummary], per_regime: bool = True) -> str:
    lines = [f"{'metric':22s} {'regime':34s} {'rows':>4s} {'srcs':>4s} {'median|err|':>11s} {'p90|err|':>9s} "
             f"{'in-sample':>9s} {'signed':>7s} {'cov80':>6s} {'target':>6s}  met"]
    for s in summary:
        if s.regime != "all" and not per_regime:
            continue
        tgt = f"{s.target:.0%}" if s.target is not None else "-"
        met = {True: "yes", False: "no", None: "-"}[s.met]
        cov = f"{s.coverage_80:.0%}" if s.coverage_80 is not None else "-"
        lines.append(f"{s.metric:22s} {s.regime[:34]:34s} {s.n:4d} {s.n_sources:4d} {s.median_abs_error:11.1%} "
                     f"{s.p90_abs_error:9.1%} {s.median_abs_error_in_sample:9.1%} {s.signed_median_error:+7.1%} "
                     f"{cov:>6s} {tgt:>6s}  {met}")
    return "\n".join(lines)


def render_markdown(summary: list[CVSummary]) -> str:
    lines = ["| metric | rows | sources | CV median abs. error | CV p90 | in-sample median | target (median / p90) |"
             " met |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for s in summary:
        if s.regime != "all":
            continue
        tgt = f"{s.target:.0%} / {2 * s.target:.0%}" if s.target is not None else "-"
        met = {True: "yes", False: "no", None: "-"}[s.met]
        lines.append(f"| {s.metric} | {s.n} | {s.n_sources} | {s.median_abs_error:.1%} | {s.p90_abs_error:.1%} | "
                     f"{s.median_abs_error_in_sample:.1%} | {tgt} | {met} |")
    return "\n".join(lines)


def uncertainty_document(cases: list[CVCase], fitted_on: str) -> dict:
    from optimizer.estimate.uncertainty import UNCERTAINTY_SCHEMA
    return {
        "schema_id": UNCERTAINTY_SCHEMA,
        "written_by": "python bench/fidelity.py --fit (optimizer/fidelity/crossval.py); refit instead of editing",
        "fitted_on": fitted_on,
        "method": "empirical quantiles of log(measured / predicted) over leave-one-source-out cross-validated "
                  "predictions (TPOT rows as decode speed, inverted); regimes with fewer than "
                  f"{MIN_INTERVAL_ROWS} rows back off to coarser ones",
        "quantile_levels": list(QUANTILE_LEVELS),
        "intervals": interval_table(cases),
    }


def write_uncertainty(fitted_on: str, cases: list[CVCase] | None = None,
                      path: str | None = None) -> tuple[str, bool]:
    from pathlib import Path

    import yaml

    from optimizer.estimate import uncertainty as U
    target = Path(path) if path else U.UNCERTAINTY_FILE
    doc = uncertainty_document(cases if cases is not None else run(), fitted_on)
    text = ("# Prediction intervals (optimizer/estimate/uncertainty.py reads this file). Written by `python "
            "bench/fidelity.py --fit`;\n# do not edit by hand.\n" + yaml.safe_dump(doc, sort_keys=False, width=100))
    old = target.read_text() if target.exists() else ""
    target.write_text(text)
    U._TABLE = None
    return str(target), text != old


RESULTS_FILE = __import__("pathlib").Path(__file__).with_name("crossval_results.yaml")
RESULTS_SCHEMA = "rigopt.crossval/1"


def results_document(cases: list[CVCase], fitted_on: str) -> dict:
    return {"schema_id": RESULTS_SCHEMA,
            "written_by": "python bench/fidelity.py --fit (optimizer/fidelity/crossval.py); refit instead of editing",
            "fitted_on": fitted_on,
            "cases": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(c).items()} for c in cases]}


def write_results(fitted_on: str, cases: list[CVCase], path: str | None = None) -> tuple[str, bool]:
    from pathlib import Path

    import yaml
    target = Path(path) if path else RESULTS_FILE
    text = ("# Leave-one-source-out cross-validation of every measurement (rigopt validate prints it). Written by\n"
            "# `python bench/fidelity.py --fit`; do not edit by hand.\n"
            + yaml.safe_dump(results_document(cases, fitted_on), sort_keys=False, width=120))
    old = target.read_text() if target.exists() else ""
    target.write_text(text)
    return str(target), text != old


def stored() -> tuple[list[CVCase], str]:
    """The cross-validated cases of the last fit (RESULTS_FILE) and its date."""
    import yaml
    data = yaml.safe_load(RESULTS_FILE.read_text())
    if not isinstance(data, dict) or data.get("schema_id") != RESULTS_SCHEMA:
        raise RuntimeError(f"{RESULTS_FILE}: not a {RESULTS_SCHEMA} file (rewrite: python bench/fidelity.py --fit)")
    return [CVCase(**c) for c in data["cases"]], str(data["fitted_on"])
