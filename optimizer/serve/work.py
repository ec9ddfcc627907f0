"""What one web request computes, as a pure function of its JSON body: `answer(kind, body) -> (status, json)`.

It runs in a worker process of `rigopt serve` (optimizer/serve/app.py), never on the event loop, so a request
shares no mutable state with another one running at the same time (each worker answers one question at a time;
the caches it keeps are the same per-process caches a CLI run builds). The worker's working directory is an
empty temporary folder and model names are catalogue keys/aliases or Hugging Face ids only, so a web request
can never make rigopt read a file of the machine it runs on.

Each question is built exactly as the CLI builds it (the same pydantic models, field bounds and defaults):
`cheapest` is `solver.query.Query` (or the fleet form when the SLA fields are given, as `rigopt cheapest`
routes it), `fleet` is `fleet.FleetQuery`, `mixed` is `hetero.api.cheapest_mixed`, `estimate` is
`report.estimate.estimate`. Answers are the `--json` outputs of the same commands.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optimizer.errors import InputError
from optimizer.limits import (
    MAX_BUDGET,
    MAX_CONCURRENCY,
    MAX_CONTEXT_TOKENS,
    MAX_GPUS,
    MAX_MESSAGE_CHARS,
    clip_line,
)
from optimizer.units import parse_tokens

Status = int


def _ctx(v: str | int | None, default: str) -> int:
    try:
        return parse_tokens(str(default if v is None else v))
    except InputError as e:
        raise InputError(f"context: {e}") from None


def _web_model(name: str) -> str:
    """A model named on the web: a catalogue key/alias or a Hugging Face id (`org/name[@rev]`), never a path."""
    from optimizer.catalog.hub import parse_hub_id
    from optimizer.catalog.models import catalogue_key

    s = name.strip()
    if s.startswith(("/", "~", ".")) or "\\" in s or ".." in s or s.endswith((".json", ".gguf")):
        raise InputError(f"model: give a catalogue name or a Hugging Face id (org/name), not a path: {s[:80]}")
    if "/" in s:
        if parse_hub_id(s) is None:
            raise InputError(f"model: not a Hugging Face id (org/name[@revision]): {s[:80]}")
        return s
    return catalogue_key(s)  # raises InputError for an unknown name


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheapestRequest(_Req):
    """The main job, as `rigopt cheapest` takes it (context as '384K', 393216 or '1M')."""

    model: str = Field(min_length=1, max_length=256, description="catalogue key/alias or Hugging Face id")
    context: str | int | None = Field(default=None, description="tokens per sequence (default 384K, or isl + osl)")
    tok_s: float | None = Field(default=None, ge=0, le=1e6, description="decode tokens/s per sequence")
    concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY)
    ttft_s: float | None = Field(default=None, gt=0, le=1e6)
    isl: int | None = Field(default=None, gt=0, le=MAX_CONTEXT_TOKENS)
    osl: int | None = Field(default=None, gt=0, le=MAX_CONTEXT_TOKENS)
    rate_rps: float | None = Field(default=None, gt=0, le=1e6)
    tpot_s: float | None = Field(default=None, gt=0, le=1e3, description="SLA form: the cheapest fleet")
    percentile: float | None = Field(default=None, ge=50, le=99.9)
    objective: Literal["capex", "hourly", "power"] | None = None
    max_budget: float | None = Field(default=None, gt=0, le=MAX_BUDGET, allow_inf_nan=False)
    min_bits: float | None = Field(default=None, ge=0, le=32)
    gpus: list[str] | None = Field(default=None, max_length=256)
    owned: str | None = Field(default=None, max_length=4096, description="e.g. '2x rtx-4090, 256GB ddr5'")
    engines: list[str] | None = Field(default=None, max_length=16)
    quants: list[str] | None = Field(default=None, max_length=64)
    confidence: float | None = Field(default=None, ge=0, lt=1)
    top: int | None = Field(default=None, ge=1, le=20)


class EstimateRequest(_Req):
    model: str = Field(min_length=1, max_length=256)
    context: str | int = "32K"
    concurrency: int = Field(default=1, ge=1, le=MAX_CONCURRENCY)
    quants: list[str] | None = Field(default=None, max_length=64)
    engine: str | None = Field(default=None, max_length=32)
    gpu: str | None = Field(default=None, max_length=256)
    gpus: int = Field(default=1, ge=1, le=MAX_GPUS)
    confidence: float = Field(default=0.8, gt=0, lt=1)


class FleetRequest(_Req):
    model: str = Field(min_length=1, max_length=256)
    isl: int = Field(gt=0, le=MAX_CONTEXT_TOKENS)
    osl: int = Field(gt=0, le=MAX_CONTEXT_TOKENS)
    rate_rps: float = Field(gt=0, le=1e6)
    ttft_s: float = Field(gt=0, le=1e6)
    tpot_s: float = Field(gt=0, le=1e3)
    percentile: float | None = Field(default=None, ge=50, le=99.9)
    objective: Literal["hourly", "capex"] | None = None
    gpus: list[str] | None = Field(default=None, max_length=256)


class MixedRequest(_Req):
    model: str = Field(min_length=1, max_length=256)
    owned: str = Field(min_length=1, max_length=4096)
    context: str | int = "384K"
    tok_s: float | None = Field(default=None, ge=0, le=1e6)
    concurrency: int | None = Field(default=None, ge=1, le=1024)
    buy: bool = False
    max_budget: float | None = Field(default=None, gt=0, le=MAX_BUDGET, allow_inf_nan=False)
    confidence: float | None = Field(default=None, ge=0, lt=1)


class ExportRequest(_Req):
    plan: dict[str, Any]
    engine: str | None = Field(default=None, max_length=32)


REQUESTS: dict[str, type[_Req]] = {"cheapest": CheapestRequest, "estimate": EstimateRequest,
                                   "fleet": FleetRequest, "mixed": MixedRequest, "export": ExportRequest}


# web field -> how the error messages name it (the request body's own field names)
WEB_NAMES = {"rate_rps": "rate_rps", "ttft_s": "ttft_s", "tpot_s": "tpot_s", "min_bits": "min_bits"}


def _answer(ask: Any) -> dict[str, Any]:
    """The front door (optimizer/front): the same question shapes, defaults and back ends as the CLI."""
    from optimizer.front import question, solve
    return solve(question(ask)).to_json()


def _tuple(v: list[str] | None) -> tuple[str, ...] | None:
    return tuple(v) if v else None


def _cheapest(r: CheapestRequest) -> dict[str, Any]:
    from optimizer.front import Ask

    return _answer(Ask(model=_web_model(r.model), context=_ctx(r.context, "384K") if r.context is not None else None,
                       tok_s=r.tok_s, concurrency=r.concurrency, ttft_s=r.ttft_s, isl=r.isl, osl=r.osl,
                       rate_rps=r.rate_rps, tpot_s=r.tpot_s, percentile=r.percentile, objective=r.objective,
                       max_budget=r.max_budget, min_bits=r.min_bits, gpus=_tuple(r.gpus), owned=r.owned,
                       engines=_tuple(r.engines), quants=_tuple(r.quants), confidence=r.confidence, top=r.top,
                       names=WEB_NAMES))


def _estimate(r: EstimateRequest) -> dict[str, Any]:
    from optimizer.catalog.models import resolve_model
    from optimizer.report.estimate import estimate

    m = resolve_model(_web_model(r.model))
    return estimate(m, context=_ctx(r.context, "32K"), concurrency=r.concurrency, quants=r.quants,
                    engine=r.engine or "vllm", engine_explicit=r.engine is not None, gpu=r.gpu, gpus=r.gpus,
                    confidence=r.confidence).model_dump(mode="json")


def _fleet(r: FleetRequest) -> dict[str, Any]:
    from optimizer.front import Ask

    return _answer(Ask(model=_web_model(r.model), isl=r.isl, osl=r.osl, rate_rps=r.rate_rps, ttft_s=r.ttft_s,
                       tpot_s=r.tpot_s, percentile=r.percentile, objective=r.objective, gpus=_tuple(r.gpus),
                       names=WEB_NAMES))


def _mixed(r: MixedRequest) -> dict[str, Any]:
    from optimizer.front import Ask

    return _answer(Ask(model=_web_model(r.model), owned=r.owned, context=_ctx(r.context, "384K"), tok_s=r.tok_s,
                       concurrency=r.concurrency, buy=r.buy or None, max_budget=r.max_budget,
                       confidence=r.confidence, names=WEB_NAMES))


def _export(r: ExportRequest) -> dict[str, Any]:
    """The plan's launch files, built in memory (nothing is written to disk): their text, the commands and a zip
    of them (base64) for the page's download button."""
    import base64

    from optimizer.export import export_plan
    from optimizer.solver.plan import PLAN_SCHEMA, Plan

    if r.plan.get("schema_id") != PLAN_SCHEMA:
        raise InputError(f"plan: not a {PLAN_SCHEMA} plan (take one from a cheapest answer)")
    try:
        plan = Plan.model_validate(r.plan)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"plan: field '{'.'.join(str(x) for x in err['loc'])}': {err['msg']}") from None
    res = export_plan(plan, r.engine, None)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in res.files:
            info = zipfile.ZipInfo(f"rigopt-export/{f.name}", date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if f.executable else 0o644) << 16
            z.writestr(info, f.content)
    out = res.to_dict()
    out.update(schema_id="rigopt.web-export/1", contents={f.name: f.content for f in res.files},
               zip_base64=base64.b64encode(buf.getvalue()).decode())
    return out


_RUN: dict[str, Callable[[Any], dict[str, Any]]] = {
    "cheapest": _cheapest, "estimate": _estimate, "fleet": _fleet, "mixed": _mixed, "export": _export}


def answer(kind: str, body: Any) -> tuple[Status, dict[str, Any]]:
    """(HTTP status, JSON body): 200 with the command's --json answer, 400 with `{"error": one line}` for bad
    input (the CLI's message), 500 `internal error` for a bug."""
    from optimizer.cli import user_error

    try:
        if kind not in REQUESTS:
            raise InputError(f"unknown question kind '{kind}'")
        try:
            req = REQUESTS[kind].model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"]) or "body"
            raise InputError(f"{loc}: {err['msg'].removeprefix('Value error, ')}") from None
        return 200, _RUN[kind](req)
    except BaseException as e:  # noqa: BLE001 - every failure becomes one line, as in the CLI
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        msg = user_error(e)
        if msg is None:
            return 500, {"error": "internal error: " + clip_line(f"{type(e).__name__}: {e}", 200)}
        return 400, {"error": clip_line(msg, MAX_MESSAGE_CHARS)}


def worker_init() -> None:
    """Worker processes work in a folder that no longer exists (made empty, entered, removed): a relative name
    can never resolve to a file of this machine, and nothing is left on disk."""
    d = tempfile.mkdtemp(prefix="rigopt-serve-")
    os.chdir(d)
    os.rmdir(d)
