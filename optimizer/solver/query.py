"""What the user asks `cheapest` for (pydantic; also the shape scenario files will use)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optimizer.catalog.hardware import get_accelerator
from optimizer.errors import InputError
from optimizer.estimate.formats import kv_elem_bytes
from optimizer.estimate.kv import check_engine
from optimizer.estimate.schemes import get_scheme
from optimizer.units import MAX_CONCURRENCY, parse_bytes

Objective = Literal["capex", "hourly", "power"]


class Owned(BaseModel):
    """Hardware a user already has: accelerators by type and host DRAM (costs nothing in the objective)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    accelerators: dict[str, int] = Field(default_factory=dict)
    dram_bytes: int = 0

    @classmethod
    def parse(cls, text: str) -> "Owned":
        """'2x rtx-4090, 256GB ddr5' -> {rtx-4090: 2}, 256e9 bytes of DRAM."""
        accs: dict[str, int] = {}
        dram = 0
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            m = re.match(r"^(\d+)\s*[x×*]\s*(.+)$", part, re.I)
            if m:
                acc = get_accelerator(m.group(2).strip())
                accs[acc.key] = accs.get(acc.key, 0) + int(m.group(1))
                continue
            m = re.match(r"^(\d+(?:\.\d+)?\s*(?:[kmgt]i?b?))\s*(?:ddr\d|dram|ram|memory)?$", part, re.I)
            if m:
                dram += parse_bytes(m.group(1).replace(" ", ""))
                continue
            try:
                acc = get_accelerator(part)
            except Exception:
                raise InputError(f"cannot read owned item '{part}': use e.g. '2x rtx-4090, 256GB ddr5'") from None
            accs[acc.key] = accs.get(acc.key, 0) + 1
        if not accs:
            raise InputError(f"owned inventory '{text}' names no accelerator")
        return cls(accelerators=accs, dram_bytes=dram)


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    context: int = Field(gt=0, le=2**27)
    concurrency: int = Field(default=1, ge=1, le=MAX_CONCURRENCY)
    tok_s: float = Field(default=0.0, ge=0, le=1e6)          # decode tokens/s per sequence at `context`
    ttft_s: float | None = Field(default=None, gt=0, le=1e6)  # time to first token for a `prompt_tokens` prompt
    prompt_tokens: int | None = Field(default=None, gt=0, le=2**27)
    objective: Objective = "capex"
    max_budget: float | None = Field(default=None, gt=0)
    min_expert_bits: float = Field(default=0.0, ge=0, le=32)
    min_attn_bits: float = Field(default=0.0, ge=0, le=32)
    gpus: list[str] | None = None        # allowed accelerator keys/aliases
    owned: Owned | None = None
    engines: list[str] | None = None
    quants: list[str] | None = None
    kv_dtypes: list[str] | None = None
    loads: str | None = None             # expert load statistics: a JSON/CSV file, "uniform" or "zipf:S"
    max_nodes: int = Field(default=16, ge=1, le=1024)
    top: int = Field(default=5, ge=1, le=50)
    time_limit_s: float = Field(default=20.0, gt=0, le=3600)
    workers: int = Field(default=2, ge=1, le=64)

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
