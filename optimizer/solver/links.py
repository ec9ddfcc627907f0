"""Ask the topology graph for the links a plan's traffic crosses."""

from __future__ import annotations

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.hardware_schema import NodeType
from optimizer.estimate.memory import Parallel
from optimizer.estimate.speed import Links
from optimizer.topology import topology


def plan_links(node: NodeType, n_nodes: int, par: Parallel) -> Links:
    topo = topology(node.key, n_nodes)
    tp_bw, tp_lat = topo.tp_bandwidth(par.tp) if par.tp > 1 else (float("inf"), 0.0)
    ep = par.ep_size if par.ep else 1
    ep_bw, ep_lat = topo.ep_bandwidth(ep) if ep > 1 else (float("inf"), 0.0)
    # PP stages are laid out node-major: a stage boundary crosses the slowest link among the stages
    if par.pp > 1:
        span = par.tp * par.pp
        pp_bw, pp_lat = topo.ep_bandwidth(min(span, topo.n_gpus))
    else:
        pp_bw, pp_lat = float("inf"), 0.0
    host = load_hardware().hosts[node.host]
    return Links(tp_bw=tp_bw, tp_latency_s=max(tp_lat, 1e-6), ep_bw=ep_bw, ep_latency_s=max(ep_lat, 1e-6),
                 pp_bw=pp_bw, pp_latency_s=max(pp_lat, 1e-6), host_link_bw=topo.host_link_bandwidth(0),
                 host_dram_bw=topo.host_dram_bandwidth(0), host_dram_efficiency=host.dram_bw_sustained_fraction,
                 host_flops=host.cpu_expert_flops * node.sockets, nvme_bw=topo.nvme_bandwidth(0))
