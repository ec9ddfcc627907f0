"""Adapters from catalogue rows to the physics layer's plain inputs (Device), and node lookup by accelerator.
Link figures come from the topology graph (optimizer/topology_links.py)."""

from __future__ import annotations

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.hardware_schema import Accelerator, NodeType
from optimizer.estimate.speed import Device


def device_of(acc: Accelerator) -> Device:
    return Device(name=acc.key, mem_bw_bytes_per_s=acc.memory_bw_bytes_per_s, bf16_flops=acc.bf16_flops,
                  fp8_flops=acc.fp8_flops if acc.native_fp8 else None,
                  fp4_flops=acc.fp4_flops if acc.native_fp4 else None, vendor=acc.vendor, kind=acc.kind)


def nodes_for(acc_key: str) -> list[NodeType]:
    hw = load_hardware()
    return sorted((n for n in hw.nodes.values() if n.accelerator == acc_key),
                  key=lambda n: (-n.accelerators_per_node, n.key))


def node_for(acc_key: str, gpus: int) -> NodeType | None:
    """The node type a count of this accelerator most naturally lives in (smallest that holds it, else largest)."""
    nodes = nodes_for(acc_key)
    if not nodes:
        return None
    fitting = [n for n in nodes if n.accelerators_per_node >= gpus]
    if fitting:
        return min(fitting, key=lambda n: (n.accelerators_per_node, n.key))
    return nodes[0]
