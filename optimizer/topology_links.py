"""Ask the topology graph for the links a plan's traffic crosses (turns `optimizer.topology` answers into the
physics layer's `Links`)."""

from __future__ import annotations

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.hardware_schema import NodeType
from optimizer.layout import Links, Parallel
from optimizer.topology import topology


def plan_links(node: NodeType, n_nodes: int, par: Parallel) -> Links:
    # Nodes of a cluster are identical and meet only at the fabric, so a group spanning k >= 2 nodes has the
    # same bottleneck as one spanning 2: ask a 2-node graph (exact, and fast for 128-node clusters).
    n_eff = min(n_nodes, 2)
    topo = topology(node.key, n_eff)
    g = node.accelerators_per_node
    tp_bw, tp_lat = topo.tp_bandwidth(min(par.tp, n_eff * g)) if par.tp > 1 else (float("inf"), 0.0)
    ep = min(par.ep_size if par.ep else 1, n_eff * g)
    ep_bw, ep_lat = topo.ep_bandwidth(ep) if ep > 1 else (float("inf"), 0.0)
    # PP stages are laid out node-major: a stage boundary crosses the slowest link among the stages
    if par.pp > 1:
        span = min(par.tp * par.pp, n_eff * g)
        pp_bw, pp_lat = topo.ep_bandwidth(span)
    else:
        pp_bw, pp_lat = float("inf"), 0.0
    host = load_hardware().hosts[node.host]
    return Links(tp_bw=tp_bw, tp_latency_s=max(tp_lat, 1e-6), ep_bw=ep_bw, ep_latency_s=max(ep_lat, 1e-6),
                 pp_bw=pp_bw, pp_latency_s=max(pp_lat, 1e-6), host_link_bw=topo.host_link_bandwidth(0),
                 host_dram_bw=topo.host_dram_bandwidth(0), host_dram_efficiency=host.dram_bw_sustained_fraction,
                 host_flops=host.cpu_expert_flops * node.sockets, nvme_bw=topo.nvme_bandwidth(0))
