"""Adapters from catalogue rows to the physics layer's plain inputs (Device, Links)."""

from __future__ import annotations

from optimizer.catalog.hardware import get_interconnect, load_hardware
from optimizer.catalog.hardware_schema import Accelerator, NodeType
from optimizer.estimate.factors import HOST_DRAM_EFFICIENCY
from optimizer.estimate.speed import Device, Links


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


def links_for(acc: Accelerator, node: NodeType | None, tp: int, multi_node: bool) -> Links:
    """Link figures for a TP group of size tp inside `node`; EP/PP cross the node's NIC when multi_node."""
    hw = load_hardware()
    host_link = get_interconnect(acc.host_link)
    pcie_bw = host_link.bw_bytes_per_s
    if node is not None and node.gpus_per_pcie_switch > 1:
        pcie_bw /= node.gpus_per_pcie_switch
    fast = None
    if node is not None and acc.scaleup and node.scaleup_domain in ("switch", "pairs") and tp <= node.scaleup_domain_size:
        fast = get_interconnect(acc.scaleup)
    tp_bw = (acc.scaleup_bw_bytes_per_s or fast.bw_bytes_per_s) if fast else pcie_bw
    tp_lat = fast.latency_s if fast else host_link.latency_s
    ep_bw, ep_lat = tp_bw, tp_lat
    if multi_node and node is not None and node.nic:
        nic = get_interconnect(node.nic)
        per_gpu = nic.bw_bytes_per_s * max(node.nics_per_node, 1) / node.accelerators_per_node
        ep_bw, ep_lat = min(ep_bw, per_gpu), max(ep_lat, nic.latency_s)
    host_dram_bw = host_flops = 0.0
    host_eff = HOST_DRAM_EFFICIENCY.value
    nvme_bw = 0.0
    if node is not None:
        host = hw.hosts[node.host]
        host_dram_bw = host.dram_bw_bytes_per_s * node.sockets
        host_eff = host.dram_bw_sustained_fraction
        host_flops = host.cpu_expert_flops * node.sockets
        if node.nvme:
            nvme_bw = hw.storage[node.nvme].read_bw_bytes_per_s * max(node.nvme_count, 1)
    return Links(tp_bw=tp_bw, tp_latency_s=max(tp_lat, 1e-6), ep_bw=ep_bw, ep_latency_s=max(ep_lat, 1e-6),
                 pp_bw=ep_bw, pp_latency_s=max(ep_lat, 1e-6), host_link_bw=pcie_bw, host_dram_bw=host_dram_bw, host_dram_efficiency=host_eff,
                 host_flops=host_flops, nvme_bw=nvme_bw)
