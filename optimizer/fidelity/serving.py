"""Published serving benchmarks (measurements/serving_measurements.yaml) against `evaluate()` with a Workload.

A row is comparable when its model and accelerator are in the catalogue, its engine is one rigopt models
(vLLM, SGLang), and it states ISL, OSL and a concurrency (or an all-at-once burst of `num_prompts`). Each is
predicted exactly as `rigopt estimate MODEL --isl I --osl O -b C --gpu G --gpus N` would, with the layout the
source states and I / O the mean request lengths when its quoted result block gives them (mean_lengths).
Metrics: TPOT (ms), TTFT (ms; the source's median, else its mean) and output tok/s per GPU.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from optimizer.catalog.devices import node_for
from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.estimate.deployment import Deployment, Hardware, evaluate
from optimizer.estimate.serving import Workload
from optimizer.fidelity.cases import DATA_DIR
from optimizer.layout import Parallel

SERVING_FILE = DATA_DIR / "serving_measurements.yaml"
ENGINES = ("vllm", "sglang")
METRICS = ("tpot_ms", "ttft_ms", "output_tok_s_per_gpu")


@dataclass(frozen=True)
class ServingCase:
    id: str
    engine: str
    model: str
    hardware: str
    workload: str
    measured: dict[str, float]
    predicted: dict[str, float]
    source: str

    def error(self, metric: str) -> float | None:
        if metric not in self.measured or metric not in self.predicted:
            return None
        m, p = self.measured[metric], self.predicted[metric]
        if not (m > 0 and math.isfinite(p)):
            return None
        return p / m - 1.0


@cache
def _rows(path: str) -> tuple[dict, ...]:
    return tuple(yaml.safe_load(Path(path).read_text()) or ())


def serving_rows() -> list[dict]:
    return [dict(r) for r in _rows(str(SERVING_FILE))]


def _stat(v) -> float | None:
    """A latency figure: the median when the source gives one, else its mean, else the plain number."""
    if isinstance(v, dict):
        for k in ("median", "mean"):
            if v.get(k) is not None:
                return float(v[k])
        return None
    return None if v is None else float(v)


def comparable(row: dict) -> bool:
    hw = load_hardware()
    w = row.get("workload") or {}
    from optimizer.fidelity.heldout import model_key
    if row.get("engine") not in ENGINES or model_key(row.get("model")) is None:
        return False
    if row.get("accelerator") not in hw.accelerators or w.get("kind") != "serving":
        return False
    if not (w.get("isl") and w.get("osl")):
        return False
    return bool(_concurrency(w)) and bool(_measured(row))


def _concurrency(w: dict) -> int | None:
    c = w.get("concurrency")
    if c:
        return int(c)
    if str(w.get("request_rate")) == "inf" and w.get("num_prompts"):
        return int(w["num_prompts"])  # all requests at once: a burst of num_prompts in flight
    return None


def _measured(row: dict) -> dict[str, float]:
    m = row.get("measured") or {}
    gpus = int(row.get("gpus") or 1)
    out: dict[str, float] = {}
    for key in ("tpot_ms", "ttft_ms"):
        v = _stat(m.get(key))
        if v:
            out[key] = v
    if m.get("output_tok_s_per_gpu"):
        out["output_tok_s_per_gpu"] = float(m["output_tok_s_per_gpu"])
    elif m.get("output_tok_s"):
        out["output_tok_s_per_gpu"] = float(m["output_tok_s"]) / gpus
    return out


_TOTAL = re.compile(r"^\s*(Successful requests|Total input tokens|Total generated tokens):\s+(\d+)\s*$", re.M)


def mean_lengths(row: dict) -> tuple[int, int]:
    """The request lengths to predict a row at: the mean input and output tokens per request when its quote is a
    bench_serving result block (Total input tokens / Total generated tokens / Successful requests), else the
    workload's isl / osl (the nominal --random-input-len / --random-output-len). sglang.bench_serving's random
    dataset draws each request's lengths uniformly from [max(int(L x range_ratio), 1), L]
    (sample_random_requests in python/sglang/bench_serving.py at sgl-project/sglang commit
    50a613687fe1ffc6f1bb630c684a24c428a54a74; the sgl-cookbook runs leave the ratio at its default 0), so a
    1000/1000 run averages about 500 / 500 tokens: twice too long a request for the closed loop if taken at L."""
    w = row["workload"]
    got = {k: int(v) for k, v in _TOTAL.findall(str(row.get("quote") or ""))}
    n = got.get("Successful requests", 0)
    if n > 0 and got.get("Total input tokens", 0) > 0 and got.get("Total generated tokens", 0) > 0:
        return max(1, round(got["Total input tokens"] / n)), max(1, round(got["Total generated tokens"] / n))
    return int(w["isl"]), int(w["osl"])


def deployment_of(row: dict) -> Deployment:
    m = resolve_model(row["model"])
    acc = load_hardware().accelerators[row["accelerator"]]
    gpus = int(row.get("gpus") or 1)
    p = row.get("parallel") or {}
    if p.get("dp_attention"):
        par = Parallel(tp=1, dp=gpus, ep=m.spec.is_moe and gpus > 1)  # SGLang attention DP over all ranks
    elif p:
        par = Parallel(tp=int(p.get("tp") or 1), pp=int(p.get("pp") or 1), dp=int(p.get("dp") or 1),
                       ep=bool(p.get("ep")))
    else:
        par = Parallel(tp=min(gpus, 8), dp=gpus // min(gpus, 8), ep=m.spec.is_moe and gpus > 1)
    if par.world != gpus:
        par = Parallel(tp=min(gpus, 8), dp=gpus // min(gpus, 8), ep=m.spec.is_moe and gpus > 1)
    node = node_for(acc.key, gpus)
    per_node = min(node.accelerators_per_node, gpus) if node else gpus
    w = row["workload"]
    c = _concurrency(w) or 1
    isl, osl = mean_lengths(row)
    wl = Workload(isl=isl, osl=osl, concurrency=c)
    kv = {"fp8": "fp8", "fp8_e4m3": "fp8", "bf16": "bf16"}.get(str(row.get("kv_dtype") or "").lower())
    return Deployment(model=m, quant=row.get("quant") or "native", engine=row["engine"],
                      hardware=Hardware(acc, node, -(-gpus // per_node), per_node), parallel=par,
                      context=wl.max_len, concurrency=1, kv_dtype=kv, workload=wl)


def predict(row: dict) -> ServingCase:
    d = deployment_of(row)
    ev = evaluate(d)
    s = ev.serving
    assert s is not None
    pred = {"tpot_ms": s.tpot_s * 1e3, "ttft_ms": s.ttft_s * 1e3, "output_tok_s_per_gpu": s.output_tok_s_per_gpu}
    w = d.workload
    assert w is not None
    return ServingCase(id=row["id"], engine=row["engine"], model=row["model"],
                       hardware=f"{d.hardware.world}x {d.hardware.accelerator.key} {d.parallel.label()}",
                       workload=f"{row['workload']['isl']}/{row['workload']['osl']} c{w.concurrency}",
                       measured=_measured(row), predicted=pred,
                       source=str(row.get("source", "")))


def run() -> tuple[list[ServingCase], list[tuple[str, str]]]:
    """Every comparable row predicted; rows that could not be evaluated come back with the reason."""
    cases, skipped = [], []
    for r in serving_rows():
        if not comparable(r):
            continue
        try:
            cases.append(predict(r))
        except Exception as e:  # a row rigopt cannot evaluate is reported, not hidden
            skipped.append((r["id"], f"{type(e).__name__}: {e}"))
    return cases, skipped


SWEEP_MIN_POINTS = 3


def concurrency_of(c: ServingCase) -> int:
    return int(c.workload.rsplit("c", 1)[1])


def _sweep_key(source: str, model: str, engine: str, accelerator: str, lengths: str) -> tuple[str, ...]:
    return source.split(" ")[0], model, engine, accelerator, lengths


def sweeps(cases: list[ServingCase]) -> list[list[ServingCase]]:
    """Batch sweeps: rows of one source, model, engine, accelerator type and isl/osl at SWEEP_MIN_POINTS or more
    concurrencies, each sorted by concurrency (the layout may change along a sweep; it is printed per point)."""
    groups: dict[tuple[str, ...], list[ServingCase]] = {}
    for c in cases:
        key = _sweep_key(c.source, c.model, c.engine, c.hardware.split(" ")[1], c.workload.rsplit(" ", 1)[0])
        groups.setdefault(key, []).append(c)
    out = []
    for _, g in sorted(groups.items()):
        if len({concurrency_of(c) for c in g}) >= SWEEP_MIN_POINTS:
            out.append(sorted(g, key=lambda c: (concurrency_of(c), c.id)))
    return out


def medians(cases: list[ServingCase]) -> dict[str, tuple[int, float]]:
    out = {}
    for metric in METRICS:
        errs = [abs(e) for c in cases if (e := c.error(metric)) is not None]
        if errs:
            out[metric] = (len(errs), statistics.median(errs))
    return out


@dataclass(frozen=True)
class SweepShape:
    """One batch sweep's TPOT split into a level and a shape: `level` = predicted / measured - 1 at its lowest
    concurrency with a TPOT; `shape` = per later point, (predicted / predicted at the lowest) / (measured /
    measured at the lowest) - 1. An error common to every point of the sweep (the base step) moves `level` only;
    the growth with batch (the per-sequence cost) moves `shape`."""
    level: float
    shape: tuple[float, ...]


def sweep_rows(rows: list[dict]) -> list[list[dict]]:
    """The rows of `rows` that form batch sweeps (as sweeps() groups cases: one source, model, engine, accelerator
    and nominal isl/osl at SWEEP_MIN_POINTS or more concurrencies), each sorted by concurrency."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for r in rows:
        w = r["workload"]
        key = _sweep_key(str(r.get("source", "")), r["model"], r["engine"], r["accelerator"], f"{w['isl']}/{w['osl']}")
        groups.setdefault(key, []).append(r)
    out = []
    for _, g in sorted(groups.items()):
        if len({_concurrency(r["workload"]) for r in g}) >= SWEEP_MIN_POINTS:
            out.append(sorted(g, key=lambda r: (_concurrency(r["workload"]) or 0, r["id"])))
    return out


def shape_errors(points: list[tuple[float, float]]) -> tuple[float, ...]:
    """Per later point of a sweep's (measured, predicted) TPOTs, ordered by concurrency: (predicted / predicted at
    the first) / (measured / measured at the first) - 1, the error of the growth from the first point."""
    (m0, p0), rest = points[0], points[1:]
    return tuple((p / p0) / (m / m0) - 1.0 for m, p in rest)


def sweep_shape(sweep: list[ServingCase], predicted_tpot: dict[str, float] | None = None) -> SweepShape | None:
    """The level and shape errors of a sweep's TPOT (predicted from the cases, or from `predicted_tpot` by case
    id); None with fewer than SWEEP_MIN_POINTS points that have both a measured and a predicted TPOT."""
    def pred(c: ServingCase) -> float | None:
        p = predicted_tpot.get(c.id) if predicted_tpot is not None else c.predicted.get("tpot_ms")
        return p if p is not None and p > 0 and math.isfinite(p) else None
    pts = [(c.measured["tpot_ms"], p) for c in sweep
           if c.measured.get("tpot_ms", 0) > 0 and (p := pred(c)) is not None]
    if len(pts) < SWEEP_MIN_POINTS:
        return None
    (m0, p0) = pts[0]
    return SweepShape(p0 / m0 - 1.0, shape_errors(pts))
