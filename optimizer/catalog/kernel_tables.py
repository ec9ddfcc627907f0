"""Schema and loader of the measured kernel tables in `hardware/kernels/<accelerator key>.json`.

The files are written by `bench/aic_tables.py` from NVIDIA AIConfigurator's performance database
(aiconfigurator-core 0.12.0, Apache-2.0); rigopt reads only these derived tables. Units live in field names
(`_us` microseconds, `_bytes`, `_bytes_per_s`, `_flops_per_s`, `_tokens`); efficiencies are fractions of the
peaks in the file's `peaks` (rigopt's own, from hardware/accelerators.yaml). The formulas are in each file's
`conventions`.

Validation: `extra="forbid"` everywhere; efficiencies in (0, 1.05]; every grid strictly increasing and as long
as its values; collective latencies positive and nondecreasing in message size.
"""

from __future__ import annotations

import json
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from optimizer.catalog.hardware_schema import AsOf, Key, Rate
from optimizer.catalog.paths import data_dir
from optimizer.errors import CatalogError

FORMAT = "rigopt.kernel-tables/1"
KERNELS_DIR = "kernels"

Eff = Annotated[float, Field(gt=0, le=1.05)]
PosInt = Annotated[int, Field(gt=0)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Backend = Literal["vllm", "sglang", "trtllm"]
PeakKey = Literal["bf16_flops_per_s", "fp8_flops_per_s", "fp4_flops_per_s"]
GemmDtype = Literal["bf16", "fp8", "fp8_block", "nvfp4"]
MoeDtype = Literal["bf16", "fp8", "fp8_block", "nvfp4", "mxfp4_w4a16", "int4_w4a16", "mxfp4_w4a8"]
KvDtype = Literal["bf16", "fp8"]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _increasing(name: str, xs: list) -> None:
    if len(xs) < 2:
        raise ValueError(f"{name}: a grid needs at least 2 points")
    if any(b <= a for a, b in pairwise(xs)):
        raise ValueError(f"{name}: grid must be strictly increasing")


def _same_len(grid_name: str, grid: list, **values: list) -> None:
    for k, v in values.items():
        if len(v) != len(grid):
            raise ValueError(f"{k} has {len(v)} values for {len(grid)} points of {grid_name}")


class _Table(_Row):
    """What every table carries: where its numbers come from inside the package."""
    backend: Backend
    backend_version: Text
    path: Text                   # path of the source parquet inside the package
    status: Text                 # the package's collection status of that table (complete / partial / unknown)
    capped_points: Annotated[int, Field(ge=0)] = 0  # efficiencies above 1.0 (L2-resident working sets) capped
    raw_max_efficiency: Annotated[float, Field(gt=0)] | None = None
    suspect: bool = False        # contradicts a sibling table (see notes); default lookups skip it
    notes: str = ""


class GemmAnchor(_Row):
    """One raw row of the package behind a GEMM table, quoted so a reader can retrace the arithmetic."""
    m_tokens: PosInt
    n: PosInt
    k: PosInt
    kernel: Text
    latency_us: Rate
    flop_efficiency: Eff
    bw_efficiency: Annotated[float, Field(gt=0)]  # raw: may exceed 1 for L2-resident shapes


class GemmCurve(_Table):
    dtype: GemmDtype
    aic_dtype: Text
    peak: PeakKey
    weight_bytes_per_param: Rate
    kernels: list[Text]
    shapes: Text
    m_tokens: list[PosInt]
    flop_efficiency_median: list[Eff]
    flop_efficiency_p25: list[Eff]
    flop_efficiency_p75: list[Eff]
    bw_efficiency_median: list[Eff]
    anchor: GemmAnchor | None = None

    @model_validator(mode="after")
    def _check(self) -> GemmCurve:
        _increasing("m_tokens", self.m_tokens)
        _same_len("m_tokens", self.m_tokens, flop_efficiency_median=self.flop_efficiency_median,
                  flop_efficiency_p25=self.flop_efficiency_p25, flop_efficiency_p75=self.flop_efficiency_p75,
                  bw_efficiency_median=self.bw_efficiency_median)
        if any(not (a <= m <= b) for a, m, b in zip(self.flop_efficiency_p25, self.flop_efficiency_median,
                                                      self.flop_efficiency_p75, strict=True)):
            raise ValueError("flop efficiency quartiles must bracket the median")
        return self


class GemmWeightBw(_Table):
    dtype: GemmDtype
    aic_dtype: Text
    m_tokens_max: PosInt
    weight_bytes: list[Rate]
    bw_efficiency_median: list[Eff]
    n_points: list[PosInt]

    @model_validator(mode="after")
    def _check(self) -> GemmWeightBw:
        _increasing("weight_bytes", self.weight_bytes)
        _same_len("weight_bytes", self.weight_bytes, bw_efficiency_median=self.bw_efficiency_median,
                  n_points=self.n_points)
        return self


class KvRow(_Row):
    batch: PosInt
    kv_len_tokens: list[PosInt]
    bw_efficiency_median: list[Eff]

    @model_validator(mode="after")
    def _check(self) -> KvRow:
        _increasing("kv_len_tokens", self.kv_len_tokens)
        _same_len("kv_len_tokens", self.kv_len_tokens, bw_efficiency_median=self.bw_efficiency_median)
        return self


class IslRow(_Row):
    batch: PosInt
    isl_tokens: list[PosInt]
    flop_efficiency_median: list[Eff]

    @model_validator(mode="after")
    def _check(self) -> IslRow:
        _increasing("isl_tokens", self.isl_tokens)
        _same_len("isl_tokens", self.isl_tokens, flop_efficiency_median=self.flop_efficiency_median)
        return self


def _rows_increasing(rows: list, key: str = "batch") -> None:
    if not rows:
        raise ValueError("a table needs at least one row")
    if len(rows) > 1:
        _increasing(key, [getattr(r, key) for r in rows])


class DecodeAttention(_Table):
    kv_dtype: KvDtype
    kernels: list[Text]
    head_dim: PosInt
    window: Annotated[int, Field(ge=0)]
    heads: Text
    rows: list[KvRow]

    @model_validator(mode="after")
    def _check(self) -> DecodeAttention:
        _rows_increasing(self.rows)
        return self


class ContextAttention(_Table):
    kv_dtype: KvDtype
    kernels: list[Text]
    head_dim: PosInt
    window: Annotated[int, Field(ge=0)]
    peak: PeakKey
    heads: Text
    rows: list[IslRow]

    @model_validator(mode="after")
    def _check(self) -> ContextAttention:
        _rows_increasing(self.rows)
        return self


class MlaDecode(_Table):
    kv_dtype: KvDtype
    num_heads_per_gpu: PosInt
    kernels: list[Text]
    rows: list[KvRow]

    @model_validator(mode="after")
    def _check(self) -> MlaDecode:
        _rows_increasing(self.rows)
        return self


class MlaContext(_Table):
    kv_dtype: KvDtype
    num_heads_per_gpu: PosInt
    kernels: list[Text]
    peak: PeakKey
    rows: list[IslRow]

    @model_validator(mode="after")
    def _check(self) -> MlaContext:
        _rows_increasing(self.rows)
        return self


class Moe(_Table):
    dtype: MoeDtype
    aic_dtype: Text
    peak: PeakKey
    weight_bytes_per_param: Rate
    kernels: list[Text]
    configs: Text
    tokens_per_expert: list[Rate]
    flop_efficiency_median: list[Eff]
    bw_efficiency_median: list[Eff]
    n_configs: list[PosInt]

    @model_validator(mode="after")
    def _check(self) -> Moe:
        _increasing("tokens_per_expert", self.tokens_per_expert)
        _same_len("tokens_per_expert", self.tokens_per_expert, flop_efficiency_median=self.flop_efficiency_median,
                  bw_efficiency_median=self.bw_efficiency_median, n_configs=self.n_configs)
        return self


class CommRow(_Row):
    n_gpus: Annotated[int, Field(ge=2)]
    message_bytes: list[PosInt]
    latency_us: list[Rate]
    bus_bw_bytes_per_s: list[Rate]
    lowered_points: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _check(self) -> CommRow:
        _increasing("message_bytes", self.message_bytes)
        _same_len("message_bytes", self.message_bytes, latency_us=self.latency_us,
                  bus_bw_bytes_per_s=self.bus_bw_bytes_per_s)
        if any(b < a for a, b in pairwise(self.latency_us)):
            raise ValueError("latency_us must be nondecreasing in message size")
        return self


class Collective(_Table):
    backend: Literal["vllm", "sglang", "trtllm", "nccl"]  # type: ignore[assignment]
    impl: Literal["custom", "nccl"]
    dtype: Literal["bf16"]
    kernels: list[Text] = []
    rows_version: str | None = None  # NCCL: the version the rows themselves name
    chosen: str | None = None        # NCCL: why this version (the system spec's nccl_version, or newest)
    rows: list[CommRow]

    @model_validator(mode="after")
    def _check(self) -> Collective:
        _rows_increasing(self.rows, "n_gpus")
        return self


class EpA2A(_Table):
    comm_backend: Text
    phase: Literal["dispatch", "combine"]
    ep_size: PosInt
    nodes: PosInt
    hidden: PosInt
    topk: PosInt
    experts: PosInt
    num_tokens: list[PosInt]
    latency_us: list[Rate]

    @model_validator(mode="after")
    def _check(self) -> EpA2A:
        _increasing("num_tokens", self.num_tokens)
        _same_len("num_tokens", self.num_tokens, latency_us=self.latency_us)
        return self


class Peaks(_Row):
    source: Text
    bf16_flops_per_s: Rate
    fp8_flops_per_s: Rate | None
    fp4_flops_per_s: Rate | None
    hbm_bw_bytes_per_s: Rate
    aic_spec_bf16_flops_per_s: Rate | None
    aic_spec_fp8_flops_per_s: Rate | None
    aic_spec_fp4_flops_per_s: Rate | None
    aic_spec_hbm_bw_bytes_per_s: Rate | None


class Source(_Row):
    package: Literal["aiconfigurator-core"]
    version: Text
    url: Text
    path: Text
    system_spec: Text


class KernelTables(_Row):
    format: Literal["rigopt.kernel-tables/1"]
    system: Key
    aic_system: Text
    device: Text
    source: Source
    license: Literal["Apache-2.0"]
    notice: Text
    generated_by: Literal["bench/aic_tables.py"]
    date: AsOf
    peaks: Peaks
    conventions: dict[str, Text]
    gemm: list[GemmCurve]
    gemm_weight_bw: list[GemmWeightBw]
    decode_attention: list[DecodeAttention]
    context_attention: list[ContextAttention]
    mla_decode: list[MlaDecode]
    mla_context: list[MlaContext]
    moe: list[Moe]
    allreduce: list[Collective]
    alltoall: list[Collective]
    ep_a2a: list[EpA2A]

    @model_validator(mode="after")
    def _check(self) -> KernelTables:
        if "NVIDIA" not in self.notice or "Apache" not in self.notice:
            raise ValueError("notice must carry the package's NVIDIA copyright and Apache-2.0 license")
        for t in (*self.gemm, *self.moe):
            if getattr(self.peaks, t.peak) is None:  # type: ignore[attr-defined]
                raise ValueError(f"table {t.dtype} ({t.backend}) uses peak {t.peak}, "  # type: ignore[attr-defined]
                                 "which is null")
        return self


# ---------------------------------------------------------------- loading

def kernels_dir() -> Path:
    return data_dir("hardware") / KERNELS_DIR


def parse(path: Path) -> KernelTables:
    """Read and validate one kernel-table file (CatalogError on any problem)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CatalogError(f"{path.name}: not readable JSON: {exc}") from exc
    try:
        t = KernelTables.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"field '{'.'.join(map(str, e['loc'])) or '(file)'}': {e['msg']}" for e in exc.errors())
        raise CatalogError(f"{path.name}: {problems}") from exc
    if path.stem != t.system:
        raise CatalogError(f"{path.name}: file name must be the accelerator key '{t.system}'")
    return t


@cache
def available_systems() -> tuple[str, ...]:
    """Accelerator keys with a kernel-table file."""
    d = kernels_dir()
    return tuple(sorted(p.stem for p in d.glob("*.json"))) if d.is_dir() else ()


@cache
def load_kernel_tables(system: str) -> KernelTables | None:
    """The validated tables of one accelerator key, or None when no file exists for it."""
    path = kernels_dir() / f"{system}.json"
    if not path.is_file():
        return None
    return parse(path)
