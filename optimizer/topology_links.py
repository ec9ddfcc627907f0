"""Ask the topology graph for the links a plan's traffic crosses (turns `optimizer.topology` answers into the
physics layer's `Links`)."""

from __future__ import annotations

from optimizer.cache import BoundedCache
from optimizer.catalog.hardware_schema import NodeType
from optimizer.catalog.host_spec import node_host_spec
from optimizer.layout import Links, Parallel
from optimizer.topology import topology

_LINKS: BoundedCache[tuple[NodeType, int, int, int, int], Links] = BoundedCache("topology.links", 4096)


def plan_links(node: NodeType, n_nodes: int, par: Parallel) -> Links:
    # Nodes of a cluster are identical and meet only at the fabric, so a group spanning k >= 2 nodes has the
    # same bottleneck as one spanning 2: ask a 2-node graph (exact, and fast for 128-node clusters).
    n_eff = min(n_nodes, 2)
    g = node.accelerators_per_node
    tp = min(par.tp, n_eff * g)
    ep = min(par.ep_size if par.ep else 1, n_eff * g)
    span = min(par.tp * par.pp, n_eff * g) if par.pp > 1 else 0
    # the answer depends only on the node row (hashable, frozen), the graph size and the three group sizes
    return _LINKS.get_or_compute((node, n_eff, tp, ep, span), lambda: _plan_links(node, n_eff, tp, ep, span))


def _plan_links(node: NodeType, n_eff: int, tp: int, ep: int, span: int) -> Links:
    topo = topology(node.key, n_eff)
    tp_bw, tp_lat = topo.tp_bandwidth(tp) if tp > 1 else (float("inf"), 0.0)
    ep_bw, ep_lat = topo.ep_bandwidth(ep) if ep > 1 else (float("inf"), 0.0)
    # PP stages are laid out node-major: a stage boundary crosses the slowest link among the stages
    if span:
        pp_bw, pp_lat = topo.ep_bandwidth(span)
    else:
        pp_bw, pp_lat = float("inf"), 0.0
    return Links(tp_bw=tp_bw, tp_latency_s=max(tp_lat, 1e-6), ep_bw=ep_bw, ep_latency_s=max(ep_lat, 1e-6),
                 pp_bw=pp_bw, pp_latency_s=max(pp_lat, 1e-6), host_link_bw=topo.host_link_bandwidth(0),
                 host_dram_bw=topo.host_dram_bandwidth(0), host=node_host_spec(node).resolve(),
                 nvme_bw=topo.nvme_bandwidth(0))
