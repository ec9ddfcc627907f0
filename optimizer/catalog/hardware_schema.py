"""Pydantic schemas for the hardware catalogue (`hardware/*.yaml`).

Units live in field names: bytes, bytes/s (decimal, 1 GB = 1e9), FLOP/s, watts, USD.
Every row carries `source`; every priced row carries `as_of` (YYYY-MM or YYYY-MM-DD).
`estimate: true` marks a guessed or derived figure; `notes` says why.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

Key = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")]
Alias = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9+.-]*$")]
Source = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _date_to_str(v: object) -> object:
    """YAML reads an unquoted 2026-06-15 as a date; accept it as its ISO string."""
    return v.isoformat() if isinstance(v, _dt.date) else v


AsOf = Annotated[str, BeforeValidator(_date_to_str),
                 StringConstraints(pattern=r"^\d{4}-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?$")]
Bytes = Annotated[int, Field(gt=0)]
Rate = Annotated[float, Field(gt=0)]
Usd = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Accelerator(_Row):
    """One GPU / accelerator / unified-memory SoC. Compute is dense (no 2:4 sparsity)."""

    key: Key
    name: str
    vendor: Literal["nvidia", "amd", "intel", "apple"]
    kind: Literal["gpu", "unified"]  # unified = memory shared with the CPU
    # GPU architecture: NVIDIA compute capability as smXY (NVIDIA CUDA GPUs table), AMD gfx target, or a family name;
    # engines gate kernels on it (see optimizer/solver/support.py)
    arch: str
    aliases: list[Alias] = []
    memory_bytes: Bytes  # marketed capacity, read as decimal GB
    memory_usable_bytes: Bytes  # what a runtime can allocate (nvidia-smi total, Metal wired limit, ...)
    usable_estimate: bool = False
    # CUDA GPUs: the total the CUDA runtime reports (cudaMemGetInfo / torch.cuda.mem_get_info()[1], deviceQuery's
    # "Total amount of global memory"), i.e. the nvidia-smi total less the driver's reserved memory. vLLM's budget is
    # gpu_memory_utilization x this figure. None: not published for the card; memory_usable_bytes stands in.
    memory_cuda_total_bytes: Bytes | None = None
    memory_cuda_total_source: Source | None = None
    memory_bw_bytes_per_s: Rate  # theoretical peak
    bf16_flops: Rate  # dense; GeForce: FP32-accumulate rate
    fp8_flops: Rate | None
    fp4_flops: Rate | None
    int8_ops: Rate | None = None
    native_fp8: bool
    native_fp4: bool
    scaleup: Key | None  # interconnect key, None for PCIe-only cards
    scaleup_bw_bytes_per_s: Rate | None  # per GPU, per direction
    host_link: Key  # interconnect key
    tdp_watts: Rate | None
    source: Source
    estimate: bool = False
    notes: str = ""

    @property
    def cuda_total_bytes(self) -> float:
        """The device total an engine reading cudaMemGetInfo sees (vLLM); the usable figure where none is published."""
        return float(self.memory_cuda_total_bytes or self.memory_usable_bytes)

    @model_validator(mode="after")
    def _check(self) -> Accelerator:
        if (self.scaleup is None) != (self.scaleup_bw_bytes_per_s is None):
            raise ValueError("scaleup and scaleup_bw_bytes_per_s must both be set or both be null")
        if not 0.5 * self.memory_bytes <= self.memory_usable_bytes <= 1.15 * self.memory_bytes:
            raise ValueError("memory_usable_bytes must lie within 0.5x..1.15x memory_bytes (GB/GiB mix-up?)")
        if (self.memory_cuda_total_bytes is None) != (self.memory_cuda_total_source is None):
            raise ValueError("memory_cuda_total_bytes needs its memory_cuda_total_source (and the reverse)")
        if self.memory_cuda_total_bytes is not None and not (
                0.95 * self.memory_usable_bytes <= self.memory_cuda_total_bytes <= self.memory_usable_bytes):
            raise ValueError("memory_cuda_total_bytes must lie within 0.95x..1x memory_usable_bytes (the driver "
                             "reserves a little of the nvidia-smi total)")
        if self.native_fp8 and self.fp8_flops is None:
            raise ValueError("native_fp8 is true but fp8_flops is null")
        if self.native_fp4 and self.fp4_flops is None:
            raise ValueError("native_fp4 is true but fp4_flops is null")
        return self


class Interconnect(_Row):
    """A link type. Bandwidth is per direction (per GPU for scale-up links, per port for NICs)."""

    key: Key
    name: str
    kind: Literal["pcie", "nvlink", "xgmi", "infiniband", "ethernet", "roce", "efa", "c2c",
                  "unified", "nvme", "thunderbolt", "usb4", "socket"]
    bw_bytes_per_s: Rate
    latency_s: Annotated[float, Field(ge=0)]
    source: Source
    estimate: bool = False
    notes: str = ""


class HostPlatform(_Row):
    """CPU + DRAM platform, figures per socket."""

    key: Key
    name: str
    memory_channels: Annotated[int, Field(gt=0)]
    memory_mt_per_s: Annotated[int, Field(gt=0)]
    dram_bw_bytes_per_s: Rate  # theoretical, per socket
    dram_bw_sustained_fraction: Fraction
    max_dram_bytes: Bytes  # per socket
    cores: Annotated[int, Field(gt=0)]  # per socket
    # vector/matrix extensions the CPU has (kernels such as KTransformers' --kt-method gate on them; the CPU-expert
    # physics uses the widest); sources in each row's `source` / `cpu_source`. neon: Arm and Apple CPUs.
    isa: tuple[Literal["avx2", "avx512", "amx", "neon"], ...] = ()
    clock_ghz: Rate  # base clock of the representative SKU
    cpu_source: Source  # vendor spec page of the SKU the isa / clock / cores describe
    pcie_gen: Annotated[int, Field(ge=3, le=7)]
    pcie_lanes: Annotated[int, Field(ge=0)]
    platform_usd: Usd | None  # CPU + board, one socket
    dram_usd_per_gb: Usd
    as_of: AsOf | None
    source: Source
    estimate: bool = False
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> HostPlatform:
        if self.platform_usd is not None and self.as_of is None:
            raise ValueError("platform_usd needs as_of")
        return self

    @property
    def widest_isa(self) -> str:
        """The widest matrix/vector path (what the CPU-expert physics prices): amx > avx512 > avx2 > neon."""
        return next((i for i in ("amx", "avx512", "avx2", "neon") if i in self.isa), "avx2")


class Storage(_Row):
    key: Key
    name: str
    read_bw_bytes_per_s: Rate  # sequential read
    capacity_bytes: Bytes
    usd: Usd | None
    as_of: AsOf | None
    source: Source
    estimate: bool = False
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> Storage:
        if self.usd is not None and self.as_of is None:
            raise ValueError("usd needs as_of")
        return self


class NodeType(_Row):
    """A server, workstation or box: N accelerators + host. Capex excludes the accelerators."""

    key: Key
    name: str
    accelerator: Key
    accelerators_per_node: Annotated[int, Field(gt=0)]
    scaleup_domain: Literal["switch", "pairs", "none", "unified"]
    scaleup_domain_size: Annotated[int, Field(gt=0)]
    host: Key
    sockets: Annotated[int, Field(gt=0)]
    dram_bytes: Annotated[int, Field(ge=0)]
    # memory channels populated per socket (None: every channel of the host row); the DRAM bandwidth is derived
    # from the populated channels, e.g. 16 DIMMs on 2 x 12 channels = 8 per socket = 2/3 of the bandwidth
    dram_channels_populated: Annotated[int, Field(gt=0)] | None = None
    max_dram_bytes: Annotated[int, Field(ge=0)]
    gpus_per_pcie_switch: Annotated[int, Field(gt=0)]
    nic: Key | None
    nics_per_node: Annotated[int, Field(ge=0)]
    nvme: Key | None
    nvme_count: Annotated[int, Field(ge=0)]
    node_base_usd: Usd | None
    node_base_watts: Annotated[float, Field(ge=0)]
    as_of: AsOf | None
    source: Source
    estimate: bool = False
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> NodeType:
        expected = {"none": 1, "pairs": 2, "unified": 1}.get(self.scaleup_domain)
        if expected is not None and self.scaleup_domain_size != expected:
            raise ValueError(f"scaleup_domain '{self.scaleup_domain}' needs scaleup_domain_size {expected}")
        if self.scaleup_domain_size > self.accelerators_per_node:
            raise ValueError("scaleup_domain_size exceeds accelerators_per_node")
        if self.accelerators_per_node % self.scaleup_domain_size:
            raise ValueError("accelerators_per_node must be a multiple of scaleup_domain_size")
        if self.dram_bytes > self.max_dram_bytes:
            raise ValueError("dram_bytes exceeds max_dram_bytes")
        if (self.nic is None) != (self.nics_per_node == 0):
            raise ValueError("nic and nics_per_node must agree (null nic <=> 0 NICs)")
        if (self.nvme is None) != (self.nvme_count == 0):
            raise ValueError("nvme and nvme_count must agree (null nvme <=> 0 drives)")
        if self.node_base_usd is not None and self.as_of is None:
            raise ValueError("node_base_usd needs as_of")
        return self


class Price(_Row):
    """A purchase or cloud price.

    `unit`: per_unit (purchase of one accelerator), per_gpu (cloud, per GPU-hour) -> `item` is an
    accelerator key; per_node (whole node purchase or node-hour) -> `item` is a node key.
    """

    kind: Literal["purchase", "cloud"]
    item: Key
    unit: Literal["per_gpu", "per_node", "per_unit"]
    usd: Usd | None = None
    usd_per_hour: Usd | None = None
    provider: str | None = None
    instance: str | None = None
    region: str | None = None
    spot: bool = False
    available: bool = True  # False: no longer sold new (withdrawn configuration); kept for owned hardware and history
    as_of: AsOf
    source: Source
    estimate: bool = False
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> Price:
        if self.kind == "purchase":
            if self.usd is None or self.usd_per_hour is not None:
                raise ValueError("a purchase price needs usd and no usd_per_hour")
            if self.unit == "per_gpu" or self.spot:
                raise ValueError("a purchase price has unit per_unit or per_node and is never spot")
        else:
            if self.usd_per_hour is None or self.usd is not None:
                raise ValueError("a cloud price needs usd_per_hour and no usd")
            if self.unit == "per_unit":
                raise ValueError("a cloud price has unit per_gpu or per_node")
        return self


class HardwareCatalog(_Row):
    accelerators: dict[str, Accelerator]
    interconnects: dict[str, Interconnect]
    hosts: dict[str, HostPlatform]
    storage: dict[str, Storage]
    nodes: dict[str, NodeType]
    prices: list[Price]
