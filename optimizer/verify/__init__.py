"""`rigopt verify PLAN --endpoint URL`: a bounded benchmark against the running server a plan's export started,
its measured TTFT / TPOT / ITL percentiles and throughput beside the plan's prediction and interval, a verdict per
figure and per SLA, the server's own /metrics (vLLM, SGLang) and, with --calibrate, the run stored as a
calibration profile entry as `rigopt calibrate` stores a log.

Only the URL the user names is contacted (its /v1/models, /v1/completions and /metrics routes).
"""

from __future__ import annotations

import hashlib
import json
import math

from pydantic import BaseModel, ConfigDict

from optimizer.errors import InputError
from optimizer.limits import clip_for_message
from optimizer.solver.plan import Plan
from optimizer.verify.bench import PCTS, LoadSpec, ProbeError, run_load, summarize
from optimizer.verify.client import parse_endpoint, served_model
from optimizer.verify.predict import Figure, predict, workload_of

VERIFY_SCHEMA = "rigopt.verify/1"
MAX_REQUESTS = 100_000
MAX_TIME_S = 24 * 3600.0
DEFAULT_MAX_TIME_S = 300.0


class FigureRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str                   # ttft_mean | ttft_p90 | tpot_mean | output_tok_s | total_tok_s
    unit: str                     # s | tok/s
    measured: float | None
    predicted: float | None
    low: float | None             # the plan's interval (for a time: low = the fast end)
    high: float | None
    verdict: str                  # as planned | faster than planned | slower than planned | no interval | ...


class SlaRow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sla: str
    target: float
    measured: float | None
    met: bool


class ServerMetrics(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str
    samples: int
    kv_usage_peak: float | None
    kv_usage_predicted: float | None
    running_peak: float | None
    waiting_peak: float | None
    admitted_planned: int | None
    verdict: str


class VerifyResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_id: str = VERIFY_SCHEMA
    endpoint: str
    model: str
    workload: str
    prediction_source: str
    confidence: float
    regime: str
    requests_cap: int
    time_cap_s: float
    stopped_by: str
    completed: int
    failed: int
    cut: int
    elapsed_s: float
    prompt_tokens_mean: float | None
    output_tokens_mean: float | None
    percentiles: dict[str, dict[str, float | None]]   # ttft_s / tpot_s / itl_s -> mean, p50, p90, p99
    figures: list[FigureRow]
    slas: list[SlaRow]
    server_metrics: ServerMetrics | None
    verdict: str
    notes: list[str]
    errors: list[str]
    calibration: dict | None = None     # the rigopt.calibrate/1 result of --calibrate


def _verdict(measured: float | None, f: Figure, time: bool) -> str:
    if measured is None:
        return "not measured"
    if f.predicted is None:
        return "no prediction"
    if f.low is None or f.high is None:
        ratio = measured / f.predicted if f.predicted else math.inf
        return f"×{ratio:.2f} of the prediction (no interval for this regime)"
    if f.low <= measured <= f.high:
        return "as planned"
    slower = measured > f.high if time else measured < f.low
    return "slower than planned" if slower else "faster than planned"


def run_verify(plan: Plan, endpoint: str, *, model: str | None = None, api_key: str | None = None,
               isl: int | None = None, osl: int | None = None, concurrency: int | None = None,
               rate: float | None = None, requests: int | None = None, max_time_s: float = DEFAULT_MAX_TIME_S,
               ttft_sla_s: float | None = None, tpot_sla_s: float | None = None, percentile: float = 90.0,
               confidence: float = 0.8, seed: int = 0, calibrate: bool = False, profile: str | None = None,
               metrics_interval_s: float = 1.0, progress=None) -> VerifyResult:
    ep = parse_endpoint(endpoint)
    w = workload_of(plan, isl, osl, concurrency, rate)
    if requests is not None and not 1 <= requests <= MAX_REQUESTS:
        raise InputError(f"--requests must be between 1 and {MAX_REQUESTS:,}, got {requests}")
    if not (0 < max_time_s <= MAX_TIME_S):
        raise InputError(f"--max-time must be between 0 and {MAX_TIME_S:,.0f} seconds, got {max_time_s:g}")
    if not 50.0 <= percentile <= 99.9:
        raise InputError(f"--percentile must be between 50 and 99.9, got {percentile:g}")
    if not 0 < confidence < 1:
        raise InputError(f"--confidence must lie strictly between 0 and 1, got {confidence:g}")
    for name, v in (("--ttft", ttft_sla_s), ("--tpot", tpot_sla_s)):
        if v is not None and not (0 < v <= 1e6):
            raise InputError(f"{name} must be a positive number of seconds, got {v:g}")
    if requests is None:  # enough for steady percentiles: 8 rounds of the closed loop, or a minute of arrivals
        requests = max(32, 8 * w.concurrency) if w.concurrency else max(32, math.ceil((w.rate_rps or 1) * 60))
        requests = min(requests, 2000)
    pred = predict(plan, w, confidence)
    name = model or served_model(ep, api_key)
    spec = LoadSpec(isl=w.isl, osl=w.osl, concurrency=w.concurrency, rate_rps=w.rate_rps, max_requests=requests,
                    max_time_s=max_time_s, seed=seed, metrics_interval_s=metrics_interval_s)
    try:
        res = run_load(ep, name, spec, api_key, progress)
    except ProbeError as e:
        raise InputError(f"{ep.label}/v1/completions refused the first request: {e}") from None
    m = summarize(res)
    notes: list[str] = []
    if res.tokens_per_word is None:
        notes.append("the server reports no usage in its stream: prompts were sized at one token per word and "
                     "output tokens counted as stream chunks")
    if m.prompt_tokens_mean is not None and abs(m.prompt_tokens_mean - w.isl) > 0.05 * w.isl:
        notes.append(f"prompts were {m.prompt_tokens_mean:,.0f} tokens on average as the server counted them "
                     f"(target {w.isl:,})")
    if m.output_tokens_mean is not None and m.output_tokens_mean < 0.95 * w.osl:
        notes.append(f"responses were {m.output_tokens_mean:,.0f} tokens on average, not {w.osl:,}: the server "
                     "stopped early (it may not honour ignore_eos / min_tokens); TPOT and throughput are for the "
                     "tokens it sent")
    if pred.source == "re-evaluated":
        notes.append("the workload differs from the plan's own: the prediction is the plan re-evaluated for it")
    figs = [
        ("ttft_mean", "s", m.ttft_s["mean"], pred.ttft_mean_s, True),
        ("ttft_p90", "s", m.ttft_s["p90"], pred.ttft_p90_s, True),
        ("tpot_mean", "s", m.tpot_s["mean"], pred.tpot_s, True),
        ("output_tok_s", "tok/s", m.output_tok_s, pred.output_tok_s, False),
        ("total_tok_s", "tok/s", m.total_tok_s, pred.total_tok_s, False),
    ]
    rows = [FigureRow(metric=k, unit=u, measured=x, predicted=f.predicted, low=f.low, high=f.high,
                      verdict=_verdict(x, f, t)) for k, u, x, f, t in figs]
    slas: list[SlaRow] = []
    pk = f"p{percentile:g}"
    if ttft_sla_s is not None:
        from optimizer.verify.bench import percentile as pct
        ttfts = [r.ttft_s for r in res.requests if r.ok and r.ttft_s is not None]
        x = pct(ttfts, percentile)
        slas.append(SlaRow(sla=f"TTFT {pk} <= {ttft_sla_s:g} s", target=ttft_sla_s, measured=x,
                           met=x is not None and x <= ttft_sla_s))
    if tpot_sla_s is not None:
        x = m.tpot_s["mean"]
        slas.append(SlaRow(sla=f"TPOT mean <= {tpot_sla_s:g} s", target=tpot_sla_s, measured=x,
                           met=x is not None and x <= tpot_sla_s))
    sm = _server_metrics(res, pred, w)
    slower = [r.metric for r in rows if r.verdict == "slower than planned"]
    missed = [s.sla for s in slas if not s.met]
    if m.completed == 0:
        verdict = "no request completed: nothing measured"
    elif missed:
        verdict = "SLA missed: " + "; ".join(missed)
    elif slower:
        verdict = f"slower than planned ({', '.join(slower)} outside the plan's {confidence:.0%} interval)"
    else:
        verdict = "as planned" + (" (SLAs met)" if slas else "")
    out = VerifyResult(
        endpoint=ep.label, model=name, workload=w.label, prediction_source=pred.source, confidence=confidence,
        regime=pred.regime, requests_cap=requests, time_cap_s=max_time_s, stopped_by=res.stopped_by,
        completed=m.completed, failed=m.failed, cut=m.cut, elapsed_s=res.elapsed_s,
        prompt_tokens_mean=m.prompt_tokens_mean, output_tokens_mean=m.output_tokens_mean,
        percentiles={"ttft_s": m.ttft_s, "tpot_s": m.tpot_s, "itl_s": m.itl_s}, figures=rows, slas=slas,
        server_metrics=sm, verdict=verdict, notes=notes, errors=m.errors)
    if calibrate:
        out.calibration = _calibrate(plan, out, w, m, profile).model_dump(mode="json")
    return out


def _server_metrics(res, pred, w) -> ServerMetrics | None:
    samples = [s for s in [res.metrics_before, *res.metrics] if s is not None]
    if not samples:
        return None
    engine = samples[0].engine
    kv = [s.kv_usage for s in samples if s.kv_usage is not None]
    run = [s.running for s in samples if s.running is not None]
    wait = [s.waiting for s in samples if s.waiting is not None]
    kv_peak, run_peak, wait_peak = (max(kv) if kv else None), (max(run) if run else None), \
        (max(wait) if wait else None)
    planned = min(w.concurrency, pred.admitted_seqs or w.concurrency) if w.concurrency else pred.admitted_seqs
    parts = []
    if run_peak is not None and planned:
        if run_peak >= planned:
            parts.append(f"the server ran {run_peak:.0f} requests at once (planned {planned})")
        elif wait_peak:
            parts.append(f"the server ran at most {run_peak:.0f} requests at once while {wait_peak:.0f} waited "
                         f"(planned {planned}): its KV pool or sequence cap admits fewer than planned")
        else:
            parts.append(f"at most {run_peak:.0f} requests ran at once in the samples (planned {planned}; the "
                         "scrape interval may miss the peak)")
    if kv_peak is not None and kv_peak >= 0.98:
        parts.append(f"KV cache {kv_peak:.0%} full: the pool binds (preemption likely)")
    return ServerMetrics(engine=engine, samples=len(samples), kv_usage_peak=kv_peak,
                         kv_usage_predicted=pred.kv_usage_peak, running_peak=run_peak, waiting_peak=wait_peak,
                         admitted_planned=planned, verdict="; ".join(parts) or "-")


def _calibrate(plan: Plan, r: VerifyResult, w, m, profile: str | None):
    """The run as measurements of the calibration profile: TPOT (fits the decode factor), TTFT and output
    throughput (shown), identified by the plan's own system (rigopt calibrate's rules, fidelity/usercal.py)."""
    from optimizer.fidelity.logs import Measurement
    from optimizer.fidelity.usercal import Overrides, calibrate_measurements
    name = f"verify-{r.endpoint.split('://', 1)[1].replace('/', '_').replace(':', '_')}"
    conc = w.concurrency or max(1, round(m.mean_in_flight or 1))
    ms: list[Measurement] = []
    for metric, value, unit in (("tpot_ms", m.tpot_s["p50"], "ms"), ("ttft_ms", m.ttft_s["p50"], "ms"),
                                ("output_tok_s", m.output_tok_s, "tok/s")):
        if value is None:
            continue
        v = value * 1e3 if unit == "ms" else value
        ms.append(Measurement(file=name, line=len(ms) + 1, kind="rigopt-verify", metric=metric, value=v, unit=unit,
                              isl=round(r.prompt_tokens_mean or w.isl), osl=round(r.output_tokens_mean or w.osl),
                              concurrency=conc, engine=plan.engine, model_label=r.model))
    if not ms:
        raise InputError("--calibrate: no request completed, nothing to store")
    sha = hashlib.sha256(json.dumps(r.model_dump(mode="json", exclude={"calibration"}), sort_keys=True)
                         .encode()).hexdigest()
    o = Overrides(model=plan.model, gpu=plan.hardware.accelerator,
                  gpus=plan.hardware.n_nodes * plan.hardware.gpus_per_node, engine=plan.engine, quant=plan.quant)
    return calibrate_measurements([(name, sha, ms)], o, profile, dry_run=False)


# ------------------------------------------------------------------------------------------------ rendering
def _t(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:,.1f} ms" if x < 1 else f"{x:,.2f} s"


def _v(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    return _t(x) if unit == "s" else f"{x:,.1f} {unit}"


def _n(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render_verify(r: VerifyResult, console) -> None:
    from rich.table import Table
    console.print(f"rigopt verify: {r.model} at {r.endpoint}; workload {r.workload}")
    console.print(f"sent: {r.completed} completed, {r.failed} failed, {r.cut} cut at the time cap, in "
                  f"{r.elapsed_s:,.1f} s (caps: {r.requests_cap:,} requests, {r.time_cap_s:g} s; stopped by "
                  f"{r.stopped_by}); prompt {r.prompt_tokens_mean or 0:,.0f} tokens, output "
                  f"{r.output_tokens_mean or 0:,.0f} tokens on average")
    t = Table(title="measured percentiles")
    for col in ("", "mean", *(f"p{p}" for p in PCTS)):
        t.add_column(col)
    for k, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL (chunk gaps)")):
        d = r.percentiles[k]
        t.add_row(label, _t(d["mean"]), *(_t(d[f"p{p}"]) for p in PCTS))
    console.print(t)
    t = Table(title=f"measured vs the plan ({r.prediction_source}; {r.confidence:.0%} interval, regime {r.regime})")
    for col in ("figure", "measured", "predicted", "interval", "verdict"):
        t.add_column(col)
    for f in r.figures:
        iv = "-" if f.low is None or f.high is None else f"{_v(f.low, f.unit)} - {_v(f.high, f.unit)}"
        t.add_row(f.metric, _v(f.measured, f.unit), _v(f.predicted, f.unit), iv, f.verdict)
    console.print(t)
    if r.server_metrics:
        sm = r.server_metrics
        kv = "-" if sm.kv_usage_peak is None else f"{sm.kv_usage_peak:.1%}"
        kvp = "" if sm.kv_usage_predicted is None else f" (plan: ~{sm.kv_usage_predicted:.1%})"
        console.print(f"server /metrics ({sm.engine}, {sm.samples} scrapes): peak KV cache usage {kv}{kvp}, peak "
                      f"running {_n(sm.running_peak)}, peak waiting {_n(sm.waiting_peak)}; {sm.verdict}")
    else:
        console.print("server /metrics: none read (vLLM serves it by default, SGLang with --enable-metrics)")
    for s in r.slas:
        console.print(f"SLA {s.sla}: {'met' if s.met else 'MISSED'} (measured {_t(s.measured)})")
    for n in r.notes:
        console.print(f"note: {n}")
    for e in r.errors:
        console.print(f"error seen: {clip_for_message(e)}")
    console.print(f"verdict: {r.verdict}")
    if r.calibration:
        c = r.calibration
        for f in c["factors"]:
            parts = ", ".join(f"{k} ×{v:.3f}" for k, v in f["factors"].items())
            console.print(f"calibration {f['system']}: {parts}")
        console.print(f"profile written: {c['profile']}")


def run_verify_with_progress(plan: Plan, endpoint: str, *, show: bool, **kw) -> VerifyResult:
    """run_verify with a progress bar on stderr (when it is a terminal and the output is not --json)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    console = Console(stderr=True)
    with Progress(TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True, disable=not (show and console.is_terminal)) as bar:
        task = bar.add_task("requests", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run_verify(plan, endpoint, progress=progress, **kw)
