"""Scenario file schema (rigopt.scenario/1): pydantic models that map one-to-one onto `solver.Query`.

A file is either one question (the question's fields at top level) or
`{name, description, defaults, questions: [...]}`, where each question inherits every field it does not set
from `defaults`. Field names are `Query`'s; values are checked against the catalogue here, so a typo is reported
with its file and line before anything is solved.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, WithJsonSchema

from optimizer.errors import RigoptError
from optimizer.limits import (MAX_BUDGET, MAX_CONCURRENCY, MAX_CONTEXT_TOKENS, MAX_GPUS, MAX_NODES, MAX_PATH_CHARS,
                              MAX_QUESTIONS, MAX_TIME_LIMIT_S)
from optimizer.units import parse_bytes, parse_tokens

SCENARIO_SCHEMA = "rigopt.scenario/1"
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"


def _user(fn):
    """Turn rigopt's own errors into ValueError so pydantic reports them at the field."""
    def wrapped(v):
        try:
            return fn(v)
        except RigoptError as e:
            raise ValueError(str(e)) from None
    return wrapped


def _no_bool(v):
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    return v


@_user
def _tokens(v):
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError("expected a token count: an integer, or a number with K or M (384K = 393216)")
    return parse_tokens(v)


@_user
def _bytes(v):
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError("expected a size: bytes, or e.g. 256GB / 192GiB")
    return parse_bytes(v)


def _names(v):
    """'a, b' or ['a', 'b'] -> ['a', 'b'] (a single string may list several, comma-separated)."""
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return v


def _list_of(check):
    @_user
    def conv(v):
        v = _names(v)
        if not isinstance(v, list):
            return v  # let pydantic say what is wrong
        return [check(x) if isinstance(x, str) else x for x in v]
    return conv


def _accelerator(name: str) -> str:
    from optimizer.catalog.hardware import get_accelerator
    return get_accelerator(name).key


def _engine(name: str) -> str:
    from optimizer.estimate.kv import check_engine
    return check_engine(name)


def _quant(name: str) -> str:
    from optimizer.estimate.schemes import get_scheme
    return "native" if name.strip().lower() == "native" else get_scheme(name).name


def _kv_dtype(name: str) -> str:
    from optimizer.arch.formats import kv_elem_bytes
    kv_elem_bytes(name)
    return name.strip().lower()


TokenCount = Annotated[int, BeforeValidator(_tokens), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 1, "maximum": MAX_CONTEXT_TOKENS},
    {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[kKmM]?\s*$", "examples": ["384K", "1M"]}]})]
ByteCount = Annotated[int, BeforeValidator(_bytes), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 0},
    {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([kmgtKMGT]i?[bB]?|[bB])?\s*$", "examples": ["256GB"]}]})]
Number = Annotated[float, BeforeValidator(_no_bool)]
NameList = Union[str, list[str]]
Accelerators = Annotated[list[str], BeforeValidator(_list_of(_accelerator), json_schema_input_type=NameList)]
Engines = Annotated[list[str], BeforeValidator(_list_of(_engine), json_schema_input_type=NameList)]
Quants = Annotated[list[str], BeforeValidator(_list_of(_quant), json_schema_input_type=NameList)]
KVDtypes = Annotated[list[str], BeforeValidator(_list_of(_kv_dtype), json_schema_input_type=NameList)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OwnedSpec(_Strict):
    """Hardware already owned: costs nothing in the objective."""
    accelerators: dict[str, Annotated[int, Field(ge=1, le=MAX_GPUS)]] = Field(
        description="accelerator type -> count, e.g. {rtx-4090: 2}")
    dram: ByteCount = Field(0, description="host DRAM owned, e.g. 256GB (0 = the node's own)")


@_user
def _owned(v):
    if isinstance(v, str):
        from optimizer.solver.query import Owned
        o = Owned.parse(v)
        return {"accelerators": o.accelerators, "dram": o.dram_bytes}
    if isinstance(v, dict) and isinstance(v.get("accelerators"), dict):
        accs: dict[str, Any] = {}
        for k, n in v["accelerators"].items():
            key = _accelerator(str(k))
            accs[key] = accs.get(key, 0) + n if isinstance(n, int) and not isinstance(n, bool) else n
        return {**v, "accelerators": accs}
    return v


OwnedField = Annotated[OwnedSpec, BeforeValidator(_owned, json_schema_input_type=Union[str, OwnedSpec])]


class QuestionFields(_Strict):
    """Everything a question may set (and `defaults` may supply). `model` and `context` are required, here or
    in `defaults`."""
    model: str | None = Field(None, max_length=MAX_PATH_CHARS,
                              description="catalogue name/alias, a config.json, a model folder or a .gguf "
                                                 "(paths are relative to the scenario file)")
    context: TokenCount | None = Field(None, description="tokens per sequence: 393216, '384K' or '1M'")
    concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY, description="concurrent sequences at `context`")
    tok_s: Number | None = Field(None, ge=0, le=1e6, description="decode tokens/s per sequence (0 = no target)")
    ttft_s: Number | None = Field(None, gt=0, le=1e6, description="max seconds to first token for a "
                                                                  "`prompt_tokens` prompt")
    prompt_tokens: TokenCount | None = Field(None, description="prompt length for `ttft_s` "
                                                                        "(default: the context)")
    isl: TokenCount | None = Field(None, description="workload: input tokens per request (with osl; then tok_s "
                                                     "bounds 1/TPOT and ttft_s the served TTFT)")
    osl: TokenCount | None = Field(None, description="workload: output tokens per request")
    rate_rps: Number | None = Field(None, gt=0, le=1e6, description="workload: requests/s to sustain (default: "
                                                                   "`concurrency` requests in flight)")
    prefix_hit: Number | None = Field(None, ge=0, lt=1, description="workload: share of prompt tokens served from "
                                                                    "the prefix cache")
    tpot_s: Number | None = Field(None, gt=0, le=1e6, description="SLA form: time per output token, seconds; with "
                                  "isl, osl, rate_rps and ttft_s the answer is the cheapest fleet (rigopt fleet)")
    percentile: Number | None = Field(None, ge=50, le=99.9, description="SLA form: ttft_s holds at this "
                                      "percentile (default 90)")
    spec: Literal["off", "auto", "on"] | None = Field(None, description="speculative decoding with the model "
                                                                        "card's MTP/EAGLE-3 setup (default off)")
    headline_min_bits: Number | None = Field(None, ge=0, le=32, description="the headline plan is the cheapest "
                                             "with experts of at least this many bits (default: the 4-bit tier "
                                             "unless min_expert_bits or tier is set); cheaper tiers are listed")
    tier: str | None = Field(None, description="headline from one quality tier: 1.5-bit, 2-bit, 3-bit, 4-bit, "
                                               "5-6-bit, 8-bit, 16-bit")
    objective: Literal["capex", "hourly", "power"] | None = Field(None, description="capex (buy, USD) | hourly "
                                                                   "(rent, USD/h) | power (W)")
    max_budget: Number | None = Field(None, gt=0, le=MAX_BUDGET, allow_inf_nan=False,
                                      description="cap on the objective (USD, USD/h or W; omit for no cap)")
    min_expert_bits: Number | None = Field(None, ge=0, le=32, description="quality floor: bits per expert/FFN "
                                                                          "weight")
    min_attn_bits: Number | None = Field(None, ge=0, le=32, description="quality floor: bits per attention weight")
    gpus: Accelerators | None = Field(None, description="allowed accelerators (list or comma-separated)")
    owned: OwnedField | None = Field(None, description="hardware owned: '2x rtx-4090, 256GB ddr5' or "
                                                       "{accelerators: {rtx-4090: 2}, dram: 256GB}")
    engines: Engines | None = Field(None, description="allowed engines: vllm, sglang, llamacpp (default: all)")
    quants: Quants | None = Field(None, description="allowed weight quantizations (default: all)")
    kv_dtypes: KVDtypes | None = Field(None, description="allowed KV cache dtypes (default: the engine's)")
    max_nodes: int | None = Field(None, ge=1, le=MAX_NODES, description="most nodes a plan may use (default 16)")
    top: int | None = Field(None, ge=1, le=50, description="plans to keep: the optimum and next-cheapest "
                                                          "alternatives (default 5)")
    time_limit_s: Number | None = Field(None, gt=0, le=MAX_TIME_LIMIT_S,
                                        description="solver time limit per solve (default 20)")
    workers: int | None = Field(None, ge=1, le=64, description="CP-SAT threads per question (default 1 in batch "
                                                               "runs, which are parallel across questions)")


class Question(QuestionFields):
    name: str | None = Field(None, pattern=NAME_RE, description="unique in the file; names the plan file "
                                                                "(default q1, q2, ...; a single-question file: its "
                                                                "name "
                                                                "or file stem)")
    description: str | None = Field(None, max_length=MAX_PATH_CHARS)


class Scenario(_Strict):
    """Several questions sharing `defaults`."""
    name: str | None = Field(None, max_length=MAX_PATH_CHARS,
                             description="title of the scenario (the output folder is the file stem)")
    description: str | None = Field(None, max_length=MAX_PATH_CHARS)
    defaults: QuestionFields = Field(default_factory=QuestionFields)
    questions: list[Question] = Field(min_length=1, max_length=MAX_QUESTIONS)


# Batch runs solve many questions in parallel processes: one CP-SAT thread each unless a file says otherwise.
BATCH_DEFAULTS: dict[str, Any] = {"workers": 1}
REQUIRED = ("model", "context")


def merged(defaults: QuestionFields, q: Question) -> dict[str, Any]:
    """Question fields over defaults over batch defaults (set fields only; name/description dropped)."""
    out = dict(BATCH_DEFAULTS)
    out.update(defaults.model_dump(exclude_unset=True, exclude_none=True))
    out.update(q.model_dump(exclude_unset=True, exclude_none=True, exclude={"name", "description"}))
    if "context" not in out and isinstance(out.get("isl"), int) and isinstance(out.get("osl"), int):
        out["context"] = out["isl"] + out["osl"]  # a workload's longest sequence, as `rigopt cheapest` does
    return out


FLEET_KEYS = ("model", "isl", "osl", "rate_rps", "ttft_s", "tpot_s", "tok_s", "percentile", "objective", "gpus",
              "engines", "quants", "time_limit_s")
# set by `defaults`/BATCH_DEFAULTS or derived (context from isl + osl): not the question's own choice
FLEET_IGNORED = ("context", "workers")


def sla_fields(fields: dict[str, Any]):
    """The SLA-form view of merged fields (optimizer/fleet/sla.py decides whether it is a fleet question)."""
    from optimizer.fleet.sla import SlaFields
    kw = {k: fields[k] for k in FLEET_KEYS if k in fields}
    for k in ("gpus", "engines", "quants"):
        if k in kw:
            kw[k] = tuple(kw[k])
    return SlaFields(**kw)


def to_query_kwargs(fields: dict[str, Any]) -> dict[str, Any]:
    """Merged scenario fields -> keyword arguments for `Query` (with `rigopt cheapest`'s default headline floor:
    the 4-bit tier, unless the question sets a floor or a tier itself)."""
    kw = dict(fields)
    if not any(k in kw for k in ("min_expert_bits", "tier", "headline_min_bits")):
        from optimizer.solver.frontier import DEFAULT_HEADLINE_MIN_BITS
        kw["headline_min_bits"] = DEFAULT_HEADLINE_MIN_BITS
    if "owned" in kw:
        from optimizer.solver.query import Owned
        o = kw.pop("owned")
        kw["owned"] = Owned(accelerators=o["accelerators"], dram_bytes=o.get("dram", 0))
    return kw


def scenario_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of a scenario file: a single question or a scenario with `questions`."""
    schema = TypeAdapter(Union[Scenario, Question]).json_schema(mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCENARIO_SCHEMA,
              "title": "rigopt scenario", "description": (
                  "One question (its fields at top level) or {name, description, defaults, questions}. Each question "
                  "needs model and context, set on it or in defaults. Field names match `rigopt cheapest`: context "
                  "and prompt_tokens accept 393216, '384K' or '1M'; gpus/engines/quants/kv_dtypes accept a list or "
                  "a comma-separated string."), **schema}
    return schema
