"""What `rigopt validate` prints: every sourced measurement against rigopt's prediction, cross-validated three ways
(leave-one-source-out, leave-one-model-family-out, leave-one-hardware-class-out; optimizer/fidelity/crossval.py),
with per metric and scheme the median and p90 of |error|, the signed median and the held-out coverage of the 80%
interval, and the leave-one-source-out summary per regime against the issue's targets."""

from __future__ import annotations

from optimizer.fidelity.crossval import (
    SCHEME_TITLES,
    TARGETS,
    CVCase,
    CVSummary,
    coverage,
    render_schemes,
    render_summary,
    stored,
    summarize,
    summarize_schemes,
)
from optimizer.fidelity.crossval import as_dict as _as_dict
from optimizer.fidelity.crossval import run as _cv_run

SCHEMA_ID = "rigopt.validate/3"
METRICS = tuple(TARGETS)

__all__ = ["SCHEMA_ID", "METRICS", "coverage", "run", "summarize", "summarize_schemes", "as_dict", "render_text"]


def run(metric: str | None = None, recompute: bool = False) -> tuple[list[CVCase], str]:
    """The cross-validated cases (of the last fit, or recomputed now) and the fit's date."""
    if recompute:
        from optimizer.estimate.factors import FITTED
        cases, fitted_on = _cv_run(), str(FITTED["fitted_on"]) + " (recomputed)"
    else:
        cases, fitted_on = stored()
    return [c for c in cases if not metric or c.metric == metric], fitted_on


def as_dict(cases: list[CVCase], summary: list[CVSummary], fitted_on: str,
            by_scheme: dict[str, list[CVSummary]] | None = None) -> dict:
    return {"schema_id": SCHEMA_ID, "fitted_on": fitted_on,
            "method": "grouped cross-validation: each row predicted by factors fitted without any row of its own "
                      "source (cases: predicted_cv), model family (predicted_family) or hardware class "
                      "(predicted_hardware); schemes: per metric, median and p90 of |predicted / measured - 1|, "
                      "the signed median and coverage_80, the share of rows inside an 80% interval built without "
                      "their group", **_as_dict(cases, summary, by_scheme)}


def _num(metric: str, v: float) -> str:
    if metric == "kv_tokens_for_bytes":
        return f"{v:,.0f} tok"
    if metric.endswith("_bytes"):
        return f"{v / 2**30:,.2f} GiB"
    return f"{v:,.2f}"


def render_text(cases: list[CVCase], summary: list[CVSummary], fitted_on: str,
                by_scheme: dict[str, list[CVSummary]] | None = None) -> str:
    lines = [f"{'id':56s} {'hardware':22s} {'measured':>13s} {'in-sample':>13s} {'cross-val.':>13s} {'CV err':>7s}"]
    for c in cases:
        lines.append(f"{c.id[:56]:56s} {c.hardware[:22]:22s} {_num(c.metric, c.measured):>13s} "
                     f"{_num(c.metric, c.predicted):>13s} {_num(c.metric, c.predicted_cv):>13s} {c.cv_error:+7.1%}")
    lines += ["", f"leave-one-source-out cross-validation (factors fitted {fitted_on}): every row predicted by factors "
                  "fitted without its own source", render_summary(summary)]
    if by_scheme:
        lines += ["", "per scheme (" + ", ".join(SCHEME_TITLES[s] for s in by_scheme) + "): |error| of predictions "
                  "by factors fitted without the row's group; 80% cov. = share of rows inside an 80% interval "
                  "built without their group", render_schemes(by_scheme)]
    return "\n".join(lines)
