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
    host_dram_efficiency: float = 1.0  # sustained / peak (the host catalogue row's figure)
    host_flops: float = 0.0        # CPU matmul throughput for CPU-computed experts
    nvme_bw: float = 0.0
