"""Scenario file schema (rigopt.scenario/1): pydantic models that map one-to-one onto `solver.Query`.

A file is either one question (the question's fields at top level) or
`{name, description, defaults, questions: [...]}`, where each question inherits every field it does not set
from `defaults`. Field names are `Query`'s; values are checked against the catalogue here, so a typo is reported
with its file and line before anything is solved.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)

from optimizer.errors import RigoptError
from optimizer.limits import (
    MAX_BOX_GPUS,
    MAX_BOXES,
    MAX_BUDGET,
    MAX_CONCURRENCY,
    MAX_CONTEXT_TOKENS,
    MAX_GPUS,
    MAX_INVENTORY_CHARS,
    MAX_NODES,
    MAX_PATH_CHARS,
    MAX_PERCENTILE,
    MAX_QUESTIONS,
    MAX_RATE_RPS,
    MAX_SLA_S,
    MAX_TIME_LIMIT_S,
    MIN_PERCENTILE,
)
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
NameList = str | list[str]
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
    host: str | None = Field(None, max_length=512, description="the box's host: a hardware/hosts.yaml key or a host "
                             "spec, e.g. epyc-9004-12ch-ddr5-4800:sockets=2,channels=8 (rigopt estimate --host)")


@_user
def _owned(v):
    if isinstance(v, str):
        from optimizer.solver.query import Owned
        o = Owned.parse(v)
        return {"accelerators": o.accelerators, "dram": o.dram_bytes, **({"host": o.host} if o.host else {})}
    if isinstance(v, dict) and isinstance(v.get("accelerators"), dict):
        accs: dict[str, Any] = {}
        for k, n in v["accelerators"].items():
            key = _accelerator(str(k))
            accs[key] = accs.get(key, 0) + n if isinstance(n, int) and not isinstance(n, bool) else n
        return {**v, "accelerators": accs}
    return v


BOX_NAME_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"


def _size(n: int) -> str:
    """Bytes as an inventory size the parser reads back exactly (the largest unit that divides them)."""
    for unit, k in (("TB", 10**12), ("TiB", 2**40), ("GB", 10**9), ("GiB", 2**30), ("MB", 10**6), ("MiB", 2**20)):
        if n % k == 0:
            return f"{n // k}{unit}"
    return f"{n / 10**6!r}MB"


class BoxSpec(_Strict):
    """One box of a mixed inventory; its GPUs in CUDA device order."""
    name: str | None = Field(None, pattern=BOX_NAME_RE, description="box name (default box1, box2, ...)")
    gpus: dict[str, Annotated[int, Field(ge=1, le=MAX_BOX_GPUS)]] | list[str] = Field(
        description="accelerator -> count in CUDA order, e.g. {rtx-4090: 2, rtx-3090: 1}, or a list of names")
    dram: ByteCount = Field(0, description="host DRAM, e.g. 128GB")
    dram_kind: Literal["ddr4", "ddr5"] | None = Field(None, description="picks the default host platform "
                                                                        "(AM4 / AM5 desktop) when `host` is not set")
    nvme: ByteCount = Field(0, description="NVMe capacity for expert layers read from disk, e.g. 2TB")
    nvme_gen: Literal["gen4", "gen5"] | None = Field(None, description="NVMe drive class (default gen4)")
    host: str | None = Field(None, max_length=80, pattern=r"^[A-Za-z0-9._-]+$",
                             description="hosts.yaml platform key (lanes, DRAM bandwidth and maximum)")
    psu_watts: Number | None = Field(None, gt=0, le=100_000, description="power supply (default 1600 W)")

    def text(self) -> str:
        """This box as an `--owned` inventory part (optimizer/hetero/inventory.py)."""
        items = self.gpus.items() if isinstance(self.gpus, dict) else [(g, 1) for g in self.gpus]
        parts = [f"{n}x {k}" for k, n in items]
        if self.dram:
            parts.append(_size(self.dram) + (f" {self.dram_kind}" if self.dram_kind else ""))
        if self.nvme:
            parts.append(_size(self.nvme) + " nvme" + (f" {self.nvme_gen}" if self.nvme_gen else ""))
        if self.host:
            parts.append(f"host {self.host}")
        if self.psu_watts:
            parts.append(f"psu {self.psu_watts:g}W")
        return ", ".join(parts)


class InventorySpec(_Strict):
    """Mixed hardware owned (several GPU types or several boxes): planned per device, as `rigopt mixed --owned`."""
    inventory: str | None = Field(None, max_length=MAX_INVENTORY_CHARS,
                                  description="an --owned string: '1x rtx-4090, 1x rtx-3090, 128GB ddr5' or "
                                              "'box1: 2x rtx-4090, 128GB ddr5; box2: 1x rtx-3090; net: 10gbe'")
    boxes: list[BoxSpec] | None = Field(None, min_length=1, max_length=MAX_BOXES,
                                        description="the boxes (the first runs the engine, the others "
                                                    "ggml-rpc-server)")
    net: str | None = Field(None, max_length=40, pattern=r"^[A-Za-z0-9._-]+$",
                            description="network between boxes: 1gbe, 2.5gbe, 10gbe, 25gbe, 100gbe or an "
                                        "interconnects.yaml key (default 1 GbE)")

    def text(self) -> str:
        """The inventory as one `--owned` string (the string itself when given as one)."""
        if self.inventory is not None:
            return self.inventory
        boxes = self.boxes or []
        if len(boxes) == 1 and boxes[0].name is None and self.net is None:
            return boxes[0].text()
        parts = [f"{b.name or f'box{i + 1}'}: {b.text()}" for i, b in enumerate(boxes)]
        return "; ".join(parts + ([f"net: {self.net}"] if self.net else []))


def _mixed_text(text: str) -> bool:
    """Several GPU types or several boxes (`rigopt cheapest --owned` routes these to the mixed planner)."""
    from optimizer.hetero.inventory import parse_inventory
    if ";" in text or text.strip().lower().startswith("net"):
        return True
    try:
        inv = parse_inventory(text)
    except RigoptError:
        return False  # the single-type parser reports it
    return len({g.acc.key for g in inv.gpus}) > 1


@_user
def _inventory_ok(v):
    """Parse the inventory as `rigopt mixed` would: every unknown name, bad size or limit is a field error."""
    from optimizer.hetero.inventory import parse_inventory
    if isinstance(v, InventorySpec):
        if (v.inventory is None) == (v.boxes is None):
            raise ValueError("give either `inventory` (an --owned string) or `boxes`")
        if v.inventory is not None and v.net is not None:
            raise ValueError("`net` goes with `boxes`; in an inventory string write '...; net: 10gbe'")
        parse_inventory(v.text())
    return v


@_user
def _owned_any(v):
    """A string or mapping: mixed hardware (several types, boxes or a `net:`) -> InventorySpec, else OwnedSpec."""
    if isinstance(v, str):
        return {"inventory": v} if _mixed_text(v) else _owned(v)
    if isinstance(v, dict) and ("boxes" in v or "inventory" in v):
        return v
    v = _owned(v)
    if isinstance(v, dict) and isinstance(v.get("accelerators"), dict) and len(v["accelerators"]) > 1:
        # several GPU types in one box: the mixed planner, as on the command line
        box: dict[str, Any] = {"gpus": v["accelerators"]}
        if v.get("dram"):
            box["dram"] = v["dram"]
        extra = set(v) - {"accelerators", "dram"}
        if extra:
            return v  # let OwnedSpec report the unknown keys
        return {"boxes": [box]}
    return v


def _owned_kind(v) -> str:
    return "mixed" if isinstance(v, InventorySpec) or (isinstance(v, dict) and ("boxes" in v or "inventory" in v)) \
        else "single"


OwnedField = Annotated[Annotated[OwnedSpec, Tag("single")]
                       | Annotated[InventorySpec, AfterValidator(_inventory_ok), Tag("mixed")],
                       Discriminator(_owned_kind),
                       BeforeValidator(_owned_any, json_schema_input_type=str | OwnedSpec | InventorySpec)]


class QuestionFields(_Strict):
    """Everything a question may set (and `defaults` may supply). `model` and `context` are required, here or
    in `defaults`."""
    model: str | None = Field(None, max_length=MAX_PATH_CHARS,
                              description="catalogue name/alias, a config.json, a model folder or a .gguf "
                                                 "(paths are relative to the scenario file)")
    context: TokenCount | None = Field(None, description="tokens per sequence: 393216, '384K' or '1M'")
    concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY, description="concurrent sequences at `context`")
    tok_s: Number | None = Field(None, ge=0, le=1e6, description="decode tokens/s per sequence (0 = no target)")
    ttft_s: Number | None = Field(None, gt=0, le=MAX_SLA_S, description="max seconds to first token for a "
                                                                  "`prompt_tokens` prompt")
    prompt_tokens: TokenCount | None = Field(None, description="prompt length for `ttft_s` "
                                                                        "(default: the context)")
    isl: TokenCount | None = Field(None, description="workload: input tokens per request (with osl; then tok_s "
                                                     "bounds 1/TPOT and ttft_s the served TTFT)")
    osl: TokenCount | None = Field(None, description="workload: output tokens per request")
    rate_rps: Number | None = Field(None, gt=0, le=MAX_RATE_RPS,
                                    description="workload: requests/s to sustain (default: `concurrency` requests "
                                                "in flight)")
    prefix_hit: Number | None = Field(None, ge=0, lt=1, description="workload: share of prompt tokens served from "
                                                                    "the prefix cache")
    confidence: Number | None = Field(None, ge=0, lt=1, description="targets hold at the low end of this "
                                      "prediction interval (rigopt's cross-validated errors; default 0.8, 0 = plan "
                                      "on the expected figures)")
    tpot_s: Number | None = Field(None, gt=0, le=MAX_SLA_S,
                                  description="SLA form: time per output token, seconds; with isl, osl, rate_rps and "
                                              "ttft_s the answer is the cheapest fleet (rigopt fleet)")
    percentile: Number | None = Field(None, ge=MIN_PERCENTILE, le=MAX_PERCENTILE,
                                      description="SLA form: ttft_s holds at this percentile (default 90)")
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
                                                       "{accelerators: {rtx-4090: 2}, dram: 256GB}; mixed "
                                                       "hardware (several GPU types or boxes) is planned per "
                                                       "device as `rigopt mixed`: '1x rtx-4090, 1x rtx-3090, 128GB "
                                                       "ddr5', 'box1: ...; box2: ...; net: 10gbe' or {boxes: [...], "
                                                       "net: 10gbe}")
    buy: bool | None = Field(None, description="mixed inventory: also buy GPUs (3090/4090/5090/RTX PRO 6000) and DRAM "
                                               "on top, cheapest additions first (`rigopt mixed --buy`)")
    buy_types: Accelerators | None = Field(None, description="mixed inventory: the GPUs offered for purchase "
                                                             "(implies buy; `rigopt mixed --buy-types`)")
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

    @model_validator(mode="before")
    @classmethod
    def _buy_means_mixed(cls, data: Any) -> Any:
        """`buy`/`buy_types` next to `owned`: buying on top is the mixed planner's question (`rigopt mixed --buy`),
        so even one GPU type is read as a mixed inventory (its DRAM kind kept: DDR4 picks the AM4 platform)."""
        if not (isinstance(data, dict) and (data.get("buy") or data.get("buy_types"))):
            return data
        o = data.get("owned")
        if isinstance(o, str):
            return {**data, "owned": {"inventory": o}}
        if isinstance(o, dict) and isinstance(o.get("accelerators"), dict) and set(o) <= {"accelerators", "dram"}:
            box = {"gpus": o["accelerators"], **({"dram": o["dram"]} if "dram" in o else {})}
            return {**data, "owned": {"boxes": [box]}}
        return data


class Question(QuestionFields):
    name: str | None = Field(None, pattern=NAME_RE, description="unique in the file; names the plan file "
                                                                "(default q1, q2, ...; a single-question file: its "
                                                                "name "
                                                                "or file stem)")
    description: str | None = Field(None, max_length=MAX_PATH_CHARS)


SWEEP_MODES = ("product", "zip")


def _sweep_ok(v: dict[str, Any]) -> dict[str, Any]:
    """`sweep:` names question fields with a list of values each, and optionally `mode: product | zip`."""
    allowed = set(QuestionFields.model_fields)
    mode = v.get("mode", "product")
    if mode not in SWEEP_MODES:
        raise ValueError(f"mode: '{str(mode)[:40]}' is not product or zip")
    fields = {k: x for k, x in v.items() if k != "mode"}
    if not fields:
        raise ValueError("name at least one field with a list of values (e.g. context: [128K, 384K])")
    for k, x in fields.items():
        if k not in allowed:
            close = difflib.get_close_matches(k, sorted(allowed), n=1)
            raise ValueError(f"{k[:40]}: not a question field" + (f" (did you mean {close[0]}?)" if close else ""))
        if not isinstance(x, list) or not x:
            raise ValueError(f"{k}: give a non-empty list of values")
    sizes = [len(x) for x in fields.values()]
    if mode == "zip" and len(set(sizes)) > 1:
        raise ValueError(f"mode zip needs lists of one length; got {', '.join(map(str, sizes))}")
    n = sizes[0] if mode == "zip" else math.prod(sizes)
    if n > MAX_QUESTIONS:
        raise ValueError(f"{n:,} questions, more than the {MAX_QUESTIONS:,} a file may ask")
    return v


Sweep = Annotated[dict[str, Any], AfterValidator(_sweep_ok)]


class Scenario(_Strict):
    """Several questions sharing `defaults`; `sweep` adds a grid of them (the cartesian product of its lists, or
    the lists zipped with `mode: zip`), each named by its values."""
    name: str | None = Field(None, max_length=MAX_PATH_CHARS,
                             description="title of the scenario (the output folder is the file stem)")
    description: str | None = Field(None, max_length=MAX_PATH_CHARS)
    defaults: QuestionFields = Field(default_factory=QuestionFields)
    questions: list[Question] = Field(default_factory=list, max_length=MAX_QUESTIONS)
    sweep: Sweep | None = Field(None, description="a grid of questions: question fields with a list of values "
                                "each (model: [a, b], context: [128K, 384K], tok_s: [10, 20], gpus: [[h100], "
                                "[h200]], max_budget: [...]); `mode: product` (default, every combination) or "
                                "`zip` (the i-th values together). Each question is named by its values")

    @model_validator(mode="after")
    def _some_questions(self) -> Scenario:
        if not self.questions and self.sweep is None:
            raise ValueError("questions: give at least one question, or a sweep")
        if len(self.questions) + len(sweep_points(self.sweep)) > MAX_QUESTIONS:
            raise ValueError(f"more than the {MAX_QUESTIONS:,} questions a file may ask (questions + sweep)")
        return self


def sweep_points(sweep: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The sweep's questions as field dicts, in a stable order (the product varies the last field fastest)."""
    if not sweep:
        return []
    fields = {k: v for k, v in sweep.items() if k != "mode"}
    keys = list(fields)
    if sweep.get("mode", "product") == "zip":
        combos = list(zip(*fields.values(), strict=True))
    else:
        combos = list(itertools.product(*fields.values()))
    return [dict(zip(keys, c, strict=True)) for c in combos]


def sweep_name(point: dict[str, Any]) -> str:
    """A question's stable id from its sweep values: `deepseek-v4-pro_384K_20` (file-name safe)."""
    def text(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "+".join(text(x) for x in v)
        if isinstance(v, dict):
            return "+".join(f"{k}-{text(x)}" for k, x in v.items())
        return str(v)
    raw = "_".join(text(v) for v in point.values())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._") or "q"
    if len(slug) > 64 or slug != raw:  # long or rewritten: keep it readable and make it unique by content
        slug = slug[:64].rstrip("-._") + "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return slug


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
        kw["owned"] = Owned(accelerators=o["accelerators"], dram_bytes=o.get("dram", 0), host=o.get("host"))
    return kw


# Question fields the mixed-hardware planner (`rigopt mixed`) does not take: set with a mixed inventory, each is an
# error at its line (as `rigopt cheapest --owned <mixed> --isl ...` is an error on the command line)
MIXED_UNSUPPORTED = ("ttft_s", "prompt_tokens", "isl", "osl", "rate_rps", "prefix_hit", "headline_min_bits", "tier",
                     "min_attn_bits", "gpus", "kv_dtypes", "max_nodes", "top")


def is_mixed(fields: dict[str, Any]) -> bool:
    """Merged fields whose `owned` is a mixed inventory (planned per device)."""
    o = fields.get("owned")
    return isinstance(o, dict) and ("boxes" in o or "inventory" in o)


def mixed_problems(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for every field a mixed-inventory question cannot use, or buying without one."""
    if not is_mixed(fields):
        return [(k, "buying on top needs `owned` (a string, {accelerators, dram} or boxes) set in the same block as "
                    "`buy`, or as boxes") for k in ("buy", "buy_types") if fields.get(k)]
    out = [(k, "not supported with a mixed inventory (planned per device, as `rigopt mixed`)")
           for k in MIXED_UNSUPPORTED if k in fields]
    if fields.get("spec", "off") != "off":
        out.append(("spec", "speculative decoding is not planned for mixed inventories"))
    if fields.get("objective", "capex") != "capex":
        out.append(("objective", "a mixed inventory is planned for capex (what to buy on top, with buy) only"))
    engines = fields.get("engines")
    if engines is not None and (len(engines) != 1 or engines[0] not in ("llamacpp", "vllm")):
        out.append(("engines", "a mixed inventory is planned for one engine: llamacpp (any mix) or vllm"))
    return out


def to_mixed_kwargs(fields: dict[str, Any]) -> dict[str, Any]:
    """Merged fields of a mixed-inventory question -> keyword arguments for `hetero.query.MixedQuery` (the options
    of `rigopt mixed`: --owned, --context, --tok-s, -b, --buy, --buy-types, --min-bits, --quant, --max-budget,
    --engine)."""
    from optimizer.hetero.query import CLI_TIME_LIMIT_S
    o = fields["owned"]
    inv = InventorySpec.model_validate(o).text()
    kw: dict[str, Any] = {"model": fields["model"], "inventory": inv, "context": fields["context"]}
    for src, dst in (("concurrency", "concurrency"), ("tok_s", "tok_s"), ("max_budget", "max_budget"),
                     ("min_expert_bits", "min_bits"), ("quants", "quants"), ("workers", "workers"),
                     ("buy_types", "buy_types"), ("confidence", "confidence")):
        if src in fields:
            kw[dst] = fields[src]
    kw["time_limit_s"] = fields.get("time_limit_s", CLI_TIME_LIMIT_S)
    kw["buy"] = bool(fields.get("buy") or fields.get("buy_types"))
    if fields.get("engines"):
        kw["engine"] = fields["engines"][0]
    return kw


def scenario_json_schema() -> dict:
    """JSON Schema (draft 2020-12) of a scenario file: a single question or a scenario with `questions`."""
    schema = TypeAdapter(Scenario | Question).json_schema(mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCENARIO_SCHEMA,
              "title": "rigopt scenario", "description": (
                  "One question (its fields at top level) or {name, description, defaults, questions}. Each question "
                  "needs model and context, set on it or in defaults. Field names match `rigopt cheapest`: context "
                  "and prompt_tokens accept 393216, '384K' or '1M'; gpus/engines/quants/kv_dtypes accept a list or "
                  "a comma-separated string."), **schema}
    return schema
