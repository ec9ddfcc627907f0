"""Table of measured vs predicted for every row, and a per-metric summary (median / worst |error|) per split."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from optimizer.fidelity.cases import MEMORY_METRICS, all_rows, split_of
from optimizer.fidelity.predict import predict_memory, predict_speed

SCHEMA_ID = "rigopt.validate/1"
# Targets from the fidelity issue (|relative error|): weights / checkpoint sizes 2 %, KV 10 %, decode median 25 %.
TARGETS = {"weights_per_gpu_bytes": 0.02, "gguf_file_bytes": 0.02, "kv_tokens_for_bytes": 0.10,
           "kv_bytes_per_token": 0.10, "decode_tok_s": 0.25}


@dataclass(frozen=True)
class Case:
    id: str
    metric: str
    engine: str
    model: str
    quant: str
    hardware: str
    split: str
    measured: float
    predicted: float
    bound: float | None
    error: float          # (predicted - measured) / measured
    known_gap: bool
    source: str


@dataclass(frozen=True)
class Summary:
    metric: str
    split: str
    n: int
    median_abs_error: float
    worst_abs_error: float
    worst_id: str
    target: float | None


def run(metric: str | None = None) -> list[Case]:
    out = []
    for r in all_rows():
        if metric and r["metric"] != metric:
            continue
        if r["metric"] in MEMORY_METRICS:
            pred, bound, hw = predict_memory(r), None, f"TP{r.get('tp', 1)}"
        else:
            c = predict_speed(r)
            pred, bound = c.predicted, c.bound
            hw = f"{r.get('gpus', 1)}x {r['accelerator']}" + (
                f" +{r['offload']['cpu_expert_layers']} MoE layers on {r['offload']['host']}"
                if r.get("offload") else "")
        out.append(Case(id=r["id"], metric=r["metric"], engine=r["engine"], model=r["model"], quant=r["quant"],
                        hardware=hw, split=split_of(r), measured=float(r["measured"]), predicted=float(pred),
                        bound=bound, error=(pred - r["measured"]) / r["measured"], known_gap=bool(r.get("known_gap")),
                        source=r["source"]))
    return out


def summarize(cases: list[Case]) -> list[Summary]:
    out = []
    for metric in dict.fromkeys(c.metric for c in cases):
        for split in ("fit", "check", "all"):
            sel = [c for c in cases if c.metric == metric and not c.known_gap and (split == "all" or c.split == split)]
            if not sel:
                continue
            errs = [abs(c.error) for c in sel]
            worst = max(sel, key=lambda c: abs(c.error))
            out.append(Summary(metric=metric, split=split, n=len(sel), median_abs_error=statistics.median(errs),
                               worst_abs_error=max(errs), worst_id=worst.id, target=TARGETS.get(metric)))
    return out


def as_dict(cases: list[Case], summary: list[Summary]) -> dict:
    from optimizer.fidelity.calibrate import fit_rows
    return {"schema_id": SCHEMA_ID, "fit_rows": [r["id"] for r in fit_rows()],
            "cases": [asdict(c) for c in cases], "summary": [asdict(s) for s in summary]}


def _num(metric: str, v: float) -> str:
    if metric == "kv_tokens_for_bytes":
        return f"{v:,.0f} tok"
    if metric.endswith("_bytes"):
        return f"{v / 2**30:,.2f} GiB"
    return f"{v:,.2f}"


def render_text(cases: list[Case], summary: list[Summary]) -> str:
    lines = [f"{'id':52s} {'split':5s} {'hardware':28s} {'measured':>14s} {'predicted':>14s} {'error':>8s}"]
    for c in cases:
        flag = "  (known gap)" if c.known_gap else ""
        lines.append(f"{c.id[:52]:52s} {c.split:5s} {c.hardware[:28]:28s} {_num(c.metric, c.measured):>14s} "
                     f"{_num(c.metric, c.predicted):>14s} {c.error:+8.1%}{flag}")
    lines += ["", f"{'metric':24s} {'split':5s} {'n':>3s} {'median |err|':>13s} {'worst |err|':>12s} {'target':>7s}  "
                  "worst row"]
    for s in summary:
        tgt = f"{s.target:.0%}" if s.target is not None else "-"
        lines.append(f"{s.metric:24s} {s.split:5s} {s.n:3d} {s.median_abs_error:13.1%} {s.worst_abs_error:12.1%} "
                     f"{tgt:>7s}  {s.worst_id}")
    return "\n".join(lines)


def render_markdown_summary(summary: list[Summary]) -> str:
    lines = ["| metric | split | rows | median abs. error | worst abs. error | target |",
             "|---|---|---:|---:|---:|---:|"]
    for s in summary:
        tgt = f"{s.target:.0%}" if s.target is not None else "-"
        lines.append(f"| {s.metric} | {s.split} | {s.n} | {s.median_abs_error:.1%} | {s.worst_abs_error:.1%} | {tgt} |")
    return "\n".join(lines)
