"""The host as an input: a catalogue host key or a spec naming the CPU, sockets, populated channels, DIMM speed,
DRAM size, NUMA mode and optionally a measured bandwidth. One parser that `estimate`, `cheapest --owned host KEY`,
`mixed`, scenario files and the measurement loader share, and one resolver to the physics' `CpuHost`.

Spec forms (`parse_host`):

    epyc-9004-12ch-ddr5-4800                                    a catalogue host row (one socket, all channels)
    epyc-9004-12ch-ddr5-4800:sockets=2,channels=8,mt=4800       the row with overrides
    cpu=AMD EPYC 9654,sockets=2,channels=12,mt=4800,dram=768,numa=interleave,bw=700,threads=96
    path/to/host.yaml                                           a YAML mapping with the HostSpec field names

Keys of the comma form: cpu, sockets, cores (per socket), isa, clock (GHz), channels (populated per socket),
dpc (DIMMs per channel), mt (DIMM MT/s), dram (GB, decimal), numa (auto|single|interleave|per-socket),
bw (measured GB/s, whole host: STREAM / Intel MLC), threads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.hardware_schema import HostPlatform, NodeType
from optimizer.errors import InputError
from optimizer.layout import CpuHost

CPU_SOCKET_LINK = "cpu-socket-link"
MAX_MESHED_SOCKETS = 8  # as optimizer.topology.MAX_MESHED_SOCKETS (the topology layer sits above this one)
# a CPU the catalogue does not know, given without its clock: a typical server base clock (an estimate; only the
# CPU compute term reads it, and CPU-expert decode is bound by DRAM bandwidth)
DEFAULT_CLOCK_GHZ = 2.5
MAX_HOST_FILE_BYTES = 65536  # a host spec is a dozen fields
BYTES_PER_TRANSFER = 8  # one 64-bit DDR channel moves 8 bytes per transfer (hosts.yaml header)

Numa = Literal["auto", "single", "interleave", "per-socket"]

# CPU model text -> catalogue host row of its platform (measurement rows and specs name the CPU as text)
_CPU_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"epyc\s*7\d{2}[23]", "epyc-7003-8ch-ddr4-3200"),
    (r"epyc\s*9\d{2}4", "epyc-9004-12ch-ddr5-4800"),
    (r"epyc\s*9\d{2}5", "epyc-9005-12ch-ddr5-6000"),
    (r"xeon\s*6\s*69\d\dp|xeon\s*69\d\dp|granite rapids-ap", "xeon-6900p-12ch-ddr5-6400"),
    (r"xeon\s*6\s*67\d\dp|xeon\s*67\d\dp|granite rapids", "xeon-6700p-8ch-ddr5-6400"),
    (r"xeon\D*\b[3-9][45]\d\d[a-z+]*\b|xeon.*w[3579]-[23]4\d\d|sapphire|emerald", "xeon-spr-8ch-ddr5-4800"),
    (r"threadripper", "threadripper-7000-8ch-ddr5"),
    (r"ryzen.*\b[79]\d{3}|am5", "desktop-am5-2ch-ddr5"),
    (r"ryzen.*\b[35]\d{3}|am4", "desktop-am4-2ch-ddr4"),
    (r"core\s*(ultra|i[3579])", "desktop-intel-2ch-ddr5"),
)


class HostSpec(BaseModel):
    """A host as the user (or a measurement row) describes it. Missing fields come from the catalogue row the CPU
    names; `channels` and `dram_gb` default to every channel of that row, `sockets` to 1."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: Annotated[str, Field(min_length=1, max_length=200)]
    sockets: Annotated[int, Field(ge=1, le=72)] = 1  # a GB200 NVL72 rack is 36 Grace sockets
    cores_per_socket: Annotated[int, Field(ge=1, le=512)] | None = None
    isa: Literal["avx2", "avx512", "amx", "neon"] | None = None
    clock_ghz: Annotated[float, Field(gt=0.3, le=7.0)] | None = None
    channels_populated: Annotated[int, Field(ge=1, le=24)] | None = None  # per socket
    dimms_per_channel: Annotated[int, Field(ge=1, le=2)] = 1
    dimm_mt_s: Annotated[int, Field(ge=800, le=12800)] | None = None
    dram_gb: Annotated[float, Field(gt=0, le=100_000)] | None = None  # GB (1e9 bytes)
    numa: Numa = "auto"
    measured_bw_gb_s: Annotated[float, Field(gt=0, le=20000)] | None = None
    threads: Annotated[int, Field(ge=1, le=4096)] | None = None

    def platform(self) -> HostPlatform | None:
        """The catalogue row the CPU names: its key, or the platform of a CPU model (EPYC 9654 -> Genoa)."""
        hosts = load_hardware().hosts
        if self.cpu in hosts:
            return hosts[self.cpu]
        text = self.cpu.lower()
        for pattern, key in _CPU_PATTERNS:
            if re.search(pattern, text):
                return hosts[key]
        return None

    def resolve(self) -> CpuHost:
        """The physics' view of this host; InputError when a figure is neither given nor in the catalogue."""
        row = self.platform()

        def pick(given: object, attr: str, what: str) -> object:
            if given is not None:
                return given
            if row is None:
                raise InputError(f"host '{self.cpu}' is not a catalogue host or a known CPU model: give {what}")
            return getattr(row, attr)

        cores = int(pick(self.cores_per_socket, "cores", "cores="))  # type: ignore[call-overload]
        isa = str(pick(self.isa, "widest_isa", "isa="))
        clock = float(self.clock_ghz or (row.clock_ghz if row else DEFAULT_CLOCK_GHZ))
        mt = int(pick(self.dimm_mt_s, "memory_mt_per_s", "mt="))  # type: ignore[call-overload]
        channels = self.channels_populated or (row.memory_channels if row else None)
        if channels is None:
            raise InputError(f"host '{self.cpu}' is not a catalogue host or a known CPU model: give channels=")
        if row is not None and channels > row.memory_channels:
            raise InputError(f"host '{self.cpu}': {channels} channels populated, but {row.key} has "
                             f"{row.memory_channels} per socket")
        socket_bw = channels * mt * 1e6 * BYTES_PER_TRANSFER
        of = f"of {row.memory_channels} " if row else ""
        basis = (f"{channels} {of}channels x {mt} MT/s x 8 B = {socket_bw / 1e9:.1f} GB/s per socket"
                 + (f" x {self.sockets} sockets" if self.sockets > 1 else "") + " (theoretical)")
        measured = self.measured_bw_gb_s * 1e9 if self.measured_bw_gb_s else None
        if measured:
            basis = f"measured {self.measured_bw_gb_s:g} GB/s (given; derived: {basis})"
        # sockets are meshed up to MAX_MESHED_SOCKETS (optimizer/topology.py); above it they are separate trays
        meshed = 1 < self.sockets <= MAX_MESHED_SOCKETS
        link = load_hardware().interconnects[CPU_SOCKET_LINK].bw_bytes_per_s if meshed else 0.0
        name = row.key if row is not None and row.key == self.cpu else self.cpu
        return CpuHost(name=name, sockets=self.sockets, cores_per_socket=cores, clock_hz=clock * 1e9, isa=isa,
                       socket_bw_bytes_per_s=socket_bw, basis=basis, channels_populated=channels,
                       measured_bw_bytes_per_s=measured, numa=self.numa, socket_link_bw_bytes_per_s=link,
                       threads=self.threads, dram_bytes=self.dram_gb * 1e9 if self.dram_gb else None)


def platform_host(row: HostPlatform) -> CpuHost:
    """One socket of a catalogue host row, every channel populated (owned boxes of `mixed`)."""
    return HostSpec(cpu=row.key).resolve()


def node_host_spec(node: NodeType) -> HostSpec:
    """The host of a catalogue node: its host row, sockets, populated channels and DRAM."""
    return HostSpec(cpu=node.host, sockets=node.sockets, channels_populated=node.dram_channels_populated,
                    dram_gb=node.dram_bytes / 1e9 if node.dram_bytes else None)


_KEYS = {"cpu": "cpu", "sockets": "sockets", "cores": "cores_per_socket", "isa": "isa", "clock": "clock_ghz",
         "channels": "channels_populated", "dpc": "dimms_per_channel", "mt": "dimm_mt_s", "dram": "dram_gb",
         "numa": "numa", "bw": "measured_bw_gb_s", "threads": "threads"}


_SPEC_FIELD = re.compile(r"^\s*(" + "|".join(k for k in _KEYS if k != "cpu") + r")\s*=", re.I)


def join_host_items(parts: list[str]) -> list[str]:
    """Items of a comma-separated inventory with a `host SPEC` item's own fields joined back to it:
    ['2x rtx-4090', 'host cpu=AMD EPYC 9654', 'sockets=2', 'channels=12'] -> ['2x rtx-4090',
    'host cpu=AMD EPYC 9654,sockets=2,channels=12']. A part continues the host item when it is `KEY=VALUE` with
    KEY a host field (no inventory item has that form)."""
    out: list[str] = []
    for part in parts:
        if out and out[-1].lower().startswith("host ") and _SPEC_FIELD.match(part):
            out[-1] = f"{out[-1]},{part.strip()}"
        else:
            out.append(part)
    return out


def host_spec_from_mapping(data: object, what: str = "host") -> HostSpec:
    """A HostSpec from a mapping (scenario files, YAML host files); InputError with one line on bad input."""
    if not isinstance(data, dict):
        raise InputError(f"{what}: expected a mapping of host fields, got {type(data).__name__}")
    try:
        return HostSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "host"
        raise InputError(f"{what}: {loc}: {err['msg']}") from None


_NUMA_WORDS = {"nps1": "interleave", "nps2": "interleave", "nps4": "interleave", "interleave": "interleave",
               "single": "single", "1 node": "single", "per-socket": "per-socket", "numa": "per-socket"}


def host_spec_from_measurement(block: dict) -> HostSpec:
    """A measurement row's `host_spec:` block (cpu, cpu_count, cores_per_socket, isa, memory_channels_populated,
    dimm_mt_s, dram_gb, numa, measured_bw_gb_s, threads) as a HostSpec; InputError when it cannot be read."""
    if not isinstance(block, dict) or not block.get("cpu"):
        raise InputError("host_spec: needs at least cpu")
    numa = str(block.get("numa") or "auto").strip().lower()
    numa = "per-socket" if "use_numa=1" in numa.replace(" ", "") else numa  # KTransformers' NUMA build
    fields = {"cpu": str(block["cpu"]), "sockets": block.get("cpu_count") or 1,
              "cores_per_socket": block.get("cores_per_socket"), "isa": block.get("isa"),
              "channels_populated": block.get("memory_channels_populated"), "dimm_mt_s": block.get("dimm_mt_s"),
              "dram_gb": block.get("dram_gb"), "numa": _NUMA_WORDS.get(numa, "auto"),
              "measured_bw_gb_s": block.get("measured_bw_gb_s"), "threads": block.get("threads")}
    return host_spec_from_mapping({k: v for k, v in fields.items() if v is not None}, "host_spec")


def parse_host(text: str) -> HostSpec:
    """A catalogue key, `KEY:k=v,...`, `k=v,...` or a YAML file path (module docstring)."""
    text = (text or "").strip()
    if not text:
        raise InputError("--host: empty host")
    hosts = load_hardware().hosts
    if text in hosts:
        return HostSpec(cpu=text)
    if text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise InputError(f"--host: no such file: {text}")
        if path.stat().st_size > MAX_HOST_FILE_BYTES:
            raise InputError(f"--host: {text} is larger than {MAX_HOST_FILE_BYTES:,} bytes")
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
            raise InputError(f"--host: {text}: not readable YAML ({type(e).__name__})") from None
        return host_spec_from_mapping(data, f"--host {text}")
    base, _, rest = text.partition(":") if ("=" not in text.split(":", 1)[0]) else ("", "", text)
    if base and base not in hosts:
        raise InputError(f"--host: unknown host '{base}' (not in hardware/hosts.yaml)")
    fields: dict[str, object] = {"cpu": base} if base else {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or key not in _KEYS:
            raise InputError(f"--host: '{part}' is not KEY=VALUE with KEY one of {', '.join(_KEYS)}")
        fields[_KEYS[key]] = value.strip()
    if "cpu" not in fields:
        raise InputError("--host: name the CPU (a catalogue host key, or cpu=MODEL)")
    return host_spec_from_mapping(fields, "--host")
