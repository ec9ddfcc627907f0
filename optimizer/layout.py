"""The plain types the topology answers and the physics reads: a parallel layout and the links between
devices. No figures live here: every production `Links` comes from a node's topology graph
(`optimizer.topology_links.plan_links`) or a catalogue accelerator's own links (`estimate.deployment.links_for`);
the defaults describe one device with no links at all (no peers, no host tier)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Parallel:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: bool = False

    @property
    def world(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def ep_size(self) -> int:
        return self.tp * self.dp if self.ep else 1

    def label(self) -> str:
        parts = [f"TP{self.tp}"]
        if self.pp > 1:
            parts.append(f"PP{self.pp}")
        if self.dp > 1:
            parts.append(f"DP{self.dp}")
        if self.ep:
            parts.append(f"EP{self.ep_size}")
        return "×".join(parts)


@dataclass(frozen=True)
class CpuHost:
    """What the CPU-expert physics needs of a host (resolved from a catalogue host row or a user's host spec by
    `optimizer.catalog.host_spec`). Bandwidths are theoretical unless `measured_bw_bytes_per_s` is set."""
    name: str
    sockets: int
    cores_per_socket: int
    clock_hz: float
    isa: str                          # avx2 | avx512 | amx | neon
    socket_bw_bytes_per_s: float      # theoretical, per socket, from the populated channels x MT/s x 8 B
    basis: str                        # how the bandwidth was derived (printed by `estimate`)
    channels_populated: int = 1       # per socket
    measured_bw_bytes_per_s: float | None = None  # whole host (STREAM / Intel MLC): overrides the derived figure
    numa: str = "auto"                # auto (the engine's own NUMA handling) | single | interleave | per-socket
    socket_link_bw_bytes_per_s: float = 0.0  # per direction between two sockets (0: one socket)
    threads: int | None = None        # CPU threads the engine runs (None: every core)
    dram_bytes: float | None = None   # installed DRAM, whole host, when the spec states it (None: not stated)

    @property
    def host_class(self) -> str:
        """desktop (up to 4 channels on one socket) or server: the fitted efficiency's host axis."""
        return "desktop" if self.sockets == 1 and self.channels_populated <= 4 else "server"

    @property
    def theoretical_bw_bytes_per_s(self) -> float:
        return self.socket_bw_bytes_per_s * self.sockets


@dataclass(frozen=True)
class Links:
    """Bandwidths (bytes/s, per direction) and latencies the plan's traffic crosses."""
    tp_bw: float = math.inf        # between ranks of a TP group
    tp_latency_s: float = 0.0
    ep_bw: float = math.inf        # slowest link an EP all-to-all crosses (per GPU)
    ep_latency_s: float = 0.0
    pp_bw: float = math.inf
    pp_latency_s: float = 0.0
    host_link_bw: float = 0.0      # GPU <-> host (PCIe), per GPU, shared if a switch is shared; 0 = none
    host_dram_bw: float = 0.0      # host DRAM peak bandwidth available to CPU-computed experts; 0 = none
    host: CpuHost | None = None    # the CPU that computes host-resident experts (None: a generic one from host_dram_bw)
    nvme_bw: float = 0.0
