"""Ask the topology graph for the links a plan's traffic crosses (turns `optimizer.topology` answers into the
physics layer's `Links`)."""

from __future__ import annotations

from pathlib import Path

from optimizer.cache import BoundedCache
from optimizer.catalog.hardware_schema import NodeType
from optimizer.catalog.host_spec import node_host_spec
from optimizer.catalog.paths import data_dir
from optimizer.disk_cache import DiskTable, digest_files
from optimizer.layout import Links, Parallel
from optimizer.topology import topology

_LINKS: BoundedCache[tuple[NodeType, int, int, int, int], Links] = BoundedCache("topology.links", 4096)
# the graph's answers per (node type, graph size, group sizes), kept on disk between processes (optimizer/
# disk_cache.py): a fresh `rigopt cheapest` asks ~130 of them and each costs path searches over a networkx graph
_TABLE: list[DiskTable] = []
_SOURCES = ("topology.py", "topology_links.py", "layout.py", "disk_cache.py", "catalog/hardware.py",
            "catalog/hardware_schema.py", "catalog/host_spec.py")


def _table() -> DiskTable:
    """The disk table of this catalogue and this code: its digest covers every hardware file's bytes and the
    source of the code that turns them into links, so it can never be stale."""
    if not _TABLE:
        here = Path(__file__).resolve().parent
        files = sorted(data_dir("hardware").glob("*.yaml")) + [here / f for f in _SOURCES]
        _TABLE.append(DiskTable("topology-links", digest_files(files)))
    return _TABLE[0]


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


def graph_links(node_key: str, n_eff: int, tp: int, ep: int, span: int) -> list[float]:
    """What the topology graph says about one group layout: TP, EP and PP-boundary bandwidth and latency, the
    per-GPU host link, the node's host DRAM and NVMe bandwidth (9 floats)."""
    topo = topology(node_key, n_eff)
    tp_bw, tp_lat = topo.tp_bandwidth(tp) if tp > 1 else (float("inf"), 0.0)
    ep_bw, ep_lat = topo.ep_bandwidth(ep) if ep > 1 else (float("inf"), 0.0)
    # PP stages are laid out node-major: a stage boundary crosses the slowest link among the stages
    pp_bw, pp_lat = topo.ep_bandwidth(span) if span else (float("inf"), 0.0)
    return [tp_bw, tp_lat, ep_bw, ep_lat, pp_bw, pp_lat, topo.host_link_bandwidth(0), topo.host_dram_bandwidth(0),
            topo.nvme_bandwidth(0)]


def fast_domain(node: NodeType) -> int:
    """Largest set of one node's GPUs joined only by scale-up links (Topology.fast_domain_size), via the disk
    table."""
    key = f"fast|{node.key}"
    table = _table()
    vals = table.get(key)
    if vals is None or len(vals) != 1:
        vals = [float(topology(node.key, 1).fast_domain_size())]
        table.put(key, vals)
    return int(vals[0])


def _plan_links(node: NodeType, n_eff: int, tp: int, ep: int, span: int) -> Links:
    key = f"{node.key}|{n_eff}|{tp}|{ep}|{span}"
    table = _table()
    vals = table.get(key)
    if vals is None or len(vals) != 9:
        vals = graph_links(node.key, n_eff, tp, ep, span)
        table.put(key, vals)
    tp_bw, tp_lat, ep_bw, ep_lat, pp_bw, pp_lat, host_link_bw, host_dram_bw, nvme_bw = vals
    return Links(tp_bw=tp_bw, tp_latency_s=max(tp_lat, 1e-6), ep_bw=ep_bw, ep_latency_s=max(ep_lat, 1e-6),
                 pp_bw=pp_bw, pp_latency_s=max(pp_lat, 1e-6), host_link_bw=host_link_bw,
                 host_dram_bw=host_dram_bw, host=node_host_spec(node).resolve(), nvme_bw=nvme_bw)
