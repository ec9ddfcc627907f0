"""What the user asks `cheapest` for (pydantic; also the shape scenario files will use)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from optimizer.arch.formats import kv_elem_bytes
from optimizer.catalog.hardware import get_accelerator
from optimizer.catalog.host_spec import join_host_items, parse_host
from optimizer.engines import APPLE_ONLY
from optimizer.errors import InputError
from optimizer.estimate.calibration import Calibration
from optimizer.estimate.kv import check_engine
from optimizer.estimate.schemes import get_scheme
from optimizer.estimate.serving import Workload
from optimizer.estimate.uncertainty import DEFAULT_CONFIDENCE
from optimizer.limits import (
    MAX_BUDGET,
    MAX_CONCURRENCY,
    MAX_CONTEXT_TOKENS,
    MAX_GPUS,
    MAX_LIST_ITEMS,
    MAX_NAME_CHARS,
    MAX_NODES,
    MAX_PATH_CHARS,
    MAX_SIZE_BYTES,
    MAX_TIME_LIMIT_S,
    MIN_TOK_S,
    clip_for_message,
)
from optimizer.solver.frontier import tier_named
from optimizer.units import parse_bytes

Objective = Literal["capex", "hourly", "power"]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class Owned(BaseModel):
    """Hardware a user already has: accelerators by type and host DRAM (costs nothing in the objective)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    accelerators: dict[str, Annotated[int, Field(ge=1, le=MAX_GPUS)]] = Field(default_factory=dict)
    dram_bytes: int = Field(default=0, ge=0, le=MAX_SIZE_BYTES)
    # the owned box's host: a host spec (optimizer/catalog/host_spec.parse_host), e.g. 'desktop-am5-2ch-ddr5' or
    # 'epyc-9004-12ch-ddr5-4800:sockets=2,channels=8' (inside the inventory list the spec's KEY=VALUE fields follow
    # `host` with ',' as `rigopt detect` writes them; ';' between them is read too)
    host: str | None = Field(default=None, max_length=MAX_NAME_CHARS * 4)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None:
            parse_host(v).resolve()  # InputError on a bad spec, at parse time
        return v

    @classmethod
    def parse(cls, text: str) -> Owned:
        """'2x rtx-4090, 256GB ddr5, host desktop-am5-2ch-ddr5' -> {rtx-4090: 2}, 256e9 bytes of DRAM, the host."""
        accs: dict[str, int] = {}
        dram = 0
        host = None
        if len(text) > MAX_NAME_CHARS * 8:
            raise InputError(f"owned inventory is {len(text)} characters long (limit {MAX_NAME_CHARS * 8})")
        parts = join_host_items([p.strip() for p in text.split(",") if p.strip()])
        if len(parts) > MAX_LIST_ITEMS:
            raise InputError(f"owned inventory lists {len(parts)} items (limit {MAX_LIST_ITEMS})")
        for part in parts:
            m = re.match(r"^(\d{1,12})\s*[x×*]\s*(.+)$", part, re.I)
            if m:
                acc = get_accelerator(m.group(2).strip())
                accs[acc.key] = accs.get(acc.key, 0) + int(m.group(1))
                if not 1 <= accs[acc.key] <= MAX_GPUS:
                    raise InputError(f"owned count of {acc.key} must be within 1..{MAX_GPUS}, "
                                     f"got {clip_for_message(part)}")
                continue
            m = re.match(r"^host\s+(\S.*)$", part, re.I)
            if m:
                host = m.group(1).strip().replace(";", ",")
                parse_host(host).resolve()
                continue
            if re.match(r"^\d+\s*[x×*]", part):
                raise InputError(f"owned count in {clip_for_message(part)} must be within 1..{MAX_GPUS}")
            m = re.match(r"^(\d+(?:\.\d+)?\s*(?:[kmgt]i?b?))\s*(?:ddr\d|dram|ram|memory)?$", part, re.I)
            if m:
                dram += parse_bytes(m.group(1).replace(" ", ""))
                continue
            try:
                acc = get_accelerator(part)
            except Exception:
                raise InputError(f"cannot read owned item '{clip_for_message(part)}': use e.g. "
                                 "'2x rtx-4090, 256GB ddr5'") from None
            accs[acc.key] = accs.get(acc.key, 0) + 1
        if not accs:
            raise InputError(f"owned inventory '{clip_for_message(text)}' names no accelerator")
        if dram > MAX_SIZE_BYTES:
            raise InputError(f"owned DRAM {dram:,} bytes is larger than {MAX_SIZE_BYTES:,} bytes")
        return cls(accelerators=accs, dram_bytes=dram, host=host)


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, max_length=MAX_PATH_CHARS)
    context: int = Field(gt=0, le=MAX_CONTEXT_TOKENS)
    concurrency: int = Field(default=1, ge=1, le=MAX_CONCURRENCY)
    tok_s: float = Field(default=0.0, ge=0, le=1e6)          # decode tokens/s per sequence at `context`
    ttft_s: float | None = Field(default=None, gt=0, le=1e6)  # time to first token for a `prompt_tokens` prompt
    prompt_tokens: int | None = Field(default=None, gt=0, le=MAX_CONTEXT_TOKENS)
    # workload (optional): requests of isl prompt / osl output tokens, `concurrency` in flight or `rate_rps`
    # arriving; then tok_s bounds 1/TPOT and ttft_s the served TTFT (optimizer/estimate/serving.py)
    isl: int | None = Field(default=None, gt=0, le=MAX_CONTEXT_TOKENS)
    osl: int | None = Field(default=None, gt=0, le=MAX_CONTEXT_TOKENS)
    rate_rps: float | None = Field(default=None, gt=0, le=1e6)
    prefix_hit: float = Field(default=0.0, ge=0, lt=1)
    # targets must hold at the low end of this prediction interval (rigopt's cross-validated errors in the
    # plan's regime, optimizer/estimate/uncertainty.py); 0 = plan on the expected figures
    confidence: float = Field(default=DEFAULT_CONFIDENCE, ge=0, lt=1)
    # speculative decoding with the model card's MTP/EAGLE-3 setup: auto = try both
    spec: Literal["off", "auto", "on"] = "off"
    # the headline plan is the cheapest whose experts/FFN have at least this many bits (None: the cheapest at any
    # width); plans below it still appear in the cost-quality frontier. `tier` picks one frontier tier instead.
    headline_min_bits: float | None = Field(default=None, ge=0, le=32)
    tier: str | None = None
    objective: Objective = "capex"
    max_budget: float | None = Field(default=None, gt=0, le=MAX_BUDGET, allow_inf_nan=False)
    min_expert_bits: float = Field(default=0.0, ge=0, le=32)
    min_attn_bits: float = Field(default=0.0, ge=0, le=32)
    gpus: list[Name] | None = Field(default=None, max_length=MAX_LIST_ITEMS)  # allowed accelerator keys/aliases
    owned: Owned | None = None
    engines: list[Name] | None = Field(default=None, max_length=MAX_LIST_ITEMS)
    quants: list[Name] | None = Field(default=None, max_length=MAX_LIST_ITEMS)
    kv_dtypes: list[Name] | None = Field(default=None, max_length=MAX_LIST_ITEMS)
    loads: str | None = Field(default=None, max_length=MAX_PATH_CHARS)  # a JSON/CSV file, "uniform" or "zipf:S"
    max_nodes: int = Field(default=16, ge=1, le=MAX_NODES)
    top: int = Field(default=5, ge=1, le=50)
    time_limit_s: float = Field(default=20.0, gt=0, le=MAX_TIME_LIMIT_S)
    workers: int = Field(default=2, ge=1, le=64)
    # the user's correction factors (rigopt calibrate; loaded by the CLI from the profile), applied by evaluate()
    calibration: Calibration | None = None

    @field_validator("tok_s")
    @classmethod
    def _tok_s(cls, v: float) -> float:
        if 0 < v < MIN_TOK_S:
            raise ValueError(f"a decode target must be 0 (none) or at least {MIN_TOK_S:g} tok/s")
        return v

    @model_validator(mode="after")
    def _workload_fields(self) -> Query:
        if (self.isl is None) != (self.osl is None):
            raise ValueError("a workload needs both isl and osl")
        if self.isl is None and (self.rate_rps is not None or self.prefix_hit):
            raise ValueError("rate_rps and prefix_hit need a workload (isl and osl)")
        if self.isl is not None and self.osl is not None and self.context < self.isl + self.osl:
            raise ValueError(f"context {self.context} is shorter than isl + osl = {self.isl + self.osl}")
        if self.engines and self.gpus and all(e in APPLE_ONLY for e in self.engines):
            vendors = set()
            for g in self.gpus:
                try:
                    vendors.add(get_accelerator(g).vendor)
                except InputError:
                    return self  # an unknown accelerator is reported where the names are resolved
            if "apple" not in vendors:
                raise ValueError(f"{', '.join(self.engines)} runs only on Apple silicon; the allowed accelerators "
                                 f"({', '.join(self.gpus)}) are {', '.join(sorted(vendors))}")
        return self

    @field_validator("tier")
    @classmethod
    def _tier(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return tier_named(v).name

    @property
    def workload(self) -> Workload | None:
        """The served workload, or None for the plain (context, concurrency) question."""
        if self.isl is None or self.osl is None:
            return None
        return Workload(isl=self.isl, osl=self.osl, concurrency=None if self.rate_rps else self.concurrency,
                        rate_rps=self.rate_rps, prefix_hit=self.prefix_hit)

    @property
    def planning_batch(self) -> int:
        """The batch regime the intervals are taken in: the concurrency, or "batched" for an arrival rate."""
        return 2 if self.rate_rps else self.concurrency

    @property
    def kv_sequences(self) -> int:
        """Sequences whose KV must fit at `context` at once (open-loop workloads: one; the serving model checks
        that the pool admits the rate)."""
        return 1 if self.rate_rps else self.concurrency

    @field_validator("quants")
    @classmethod
    def _quants(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        for name in v:
            get_scheme(name)  # raises InputError with close names for an unknown quantization
        return [x.strip().lower() for x in v]

    @field_validator("kv_dtypes")
    @classmethod
    def _kv(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        for name in v:
            kv_elem_bytes(name)
        return [x.strip().lower() for x in v]

    @field_validator("engines")
    @classmethod
    def _engines(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        return [check_engine(e) for e in v]
