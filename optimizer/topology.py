"""Node / cluster topology graph: GPUs, CPU sockets, PCIe switches, NVSwitch, NICs, fabric, NVMe.

`build_cluster_graph(node, n_nodes)` turns a catalogue `NodeType` into an undirected networkx graph;
`Topology` answers the link questions the solver asks (widest-path bandwidth and its latency between two
vertices, TP-ring and EP all-to-all bandwidth, host link, host DRAM, NVMe) from that graph.

Vertices (tuples)::

    ("gpu", n, i)          node n, GPU i        kind, node, index, accelerator, memory_bytes, memory_bw_bytes_per_s
    ("cpu", n, s)          socket s             kind, node, socket, host, dram_bw_bytes_per_s (theoretical), dram_bytes
    ("pcie_switch", n, k)  when gpus_per_pcie_switch > 1: GPUs k*g .. k*g+g-1 share one host uplink
                           (for GB200/GB300 it stands for the Grace C2C port two GPUs share)
    ("nvswitch", n)        scaleup_domain "switch" (one domain per node, e.g. HGX 8 or a whole NVL72 rack);
                           ("nvswitch", n, d) if a node ever holds several switch domains
    ("nic", n, j)          NIC j, hanging off a PCIe switch (GPUDirect layout) or a CPU socket
    ("fabric",)            one non-blocking scale-out fabric joining every NIC
    ("nvme", n)            the node's NVMe drives as one vertex on socket 0

Edge attributes: ``bw_bytes_per_s`` (per direction), ``latency_s``, ``kind`` (the catalogue Interconnect
kind, or "internal" for links that are not catalogue rows), ``interconnect`` (catalogue key or None) and
``scaleup`` (True on scale-up links: NVLink / xGMI / bridges / NVSwitch legs).

Latency convention: an Interconnect row's ``latency_s`` is one device-to-device transfer. Links that are one
half of such a transfer (GPU-NVSwitch, GPU-PCIe switch / GPU-CPU, NIC-fabric) carry half of it, so
GPU-NVSwitch-GPU sums to the NVLink figure and NIC-fabric-NIC to the NIC figure; direct links (bridged
pairs, unified memory) carry all of it. Cross-node paths therefore add the PCIe legs to the NIC latency
(a little above a closed-form max(scale-up, NIC) latency).

Every bandwidth comes from a catalogue row except the named constants below (internal links).

Queries run on a *probe* graph of min(n_nodes, 2) nodes: all nodes are identical and the fabric is the only
vertex joining them, so every simple path between two vertices visits at most two nodes and the fabric;
any question about nodes (a, b) is relabelled to nodes (0, 1). A 128-node cluster is answered from the same
two-node graph; the full graph is built only when `Topology.graph` is read.
"""

from __future__ import annotations

import heapq
import importlib.util
import itertools
import math
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

from optimizer.cache import memoize
from optimizer.catalog.hardware import get_interconnect, get_node, load_hardware
from optimizer.catalog.hardware_schema import Accelerator, HostPlatform, Interconnect, NodeType
from optimizer.errors import CatalogError

if TYPE_CHECKING:
    import networkx as nx
else:
    def _lazy(name: str):
        """networkx, loaded on first use (importlib's LazyLoader recipe): a process whose link answers all come
        from the disk cache (optimizer/topology_links.py) never pays for importing it."""
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.find_spec(name)
        loader = importlib.util.LazyLoader(spec.loader)
        spec.loader = loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
        return module

    nx = _lazy("networkx")

Vertex = tuple

# ---------------------------------------------------------------- internal links
# Links the graph adds by itself are catalogue rows (hardware/interconnects.yaml, with sources):
CPU_SOCKET_LINK = "cpu-socket-link"     # socket-to-socket (UPI / xGMI), per direction
PCIE_SWITCH_HOP = "pcie-switch-hop"     # latency of one PCIe switch hop (switch->CPU uplinks, NIC legs)
NVME_READ = "nvme-read"                 # NVMe random-read latency (bandwidth: the node's storage rows)
# Sockets are fully meshed up to this count (glueless 2-8 socket x86); above it (36 Grace in an NVL72 rack)
# sockets are separate trays with no direct link and talk through the GPUs' NVLink or the NICs. A modelling
# rule, not a catalogue figure.
MAX_MESHED_SOCKETS = 8

FABRIC: Vertex = ("fabric",)


# ---------------------------------------------------------------- graph construction

def _interconnect(key: str, what: str) -> Interconnect:
    try:
        return load_hardware().interconnects[key]
    except KeyError:
        raise CatalogError(f"{what}: unknown interconnect '{key}'") from None


def _bifurcated(node: NodeType, host: HostPlatform, host_link: Interconnect) -> bool:
    """GPUs sharing one CPU x16 by lane bifurcation (x8/x8) rather than through a real PCIe switch.

    Detected when the host cannot give every GPU its own x16 (desktop AM5: 24 lanes, two GPUs at x8/x8).
    Then each GPU's own link is x16/g and GPU-to-GPU traffic gets no full-width switch path.
    """
    return (host_link.kind == "pcie" and node.gpus_per_pcie_switch > 1
            and host.pcie_lanes * node.sockets < 16 * node.accelerators_per_node)


def _add_node(g: nx.Graph, node: NodeType, n: int, acc: Accelerator, host: HostPlatform,
              host_link: Interconnect, scaleup: Interconnect | None, nic: Interconnect | None) -> None:
    hw = load_hardware()
    apn, sockets = node.accelerators_per_node, node.sockets
    unified = node.scaleup_domain == "unified"

    # CPU sockets; DRAM split evenly, remainder on socket 0 so the sum is exact. Bandwidth: the populated channels'.
    populated = min(node.dram_channels_populated or host.memory_channels, host.memory_channels) / host.memory_channels
    per_socket, rem = divmod(node.dram_bytes, sockets)
    cpus = [("cpu", n, s) for s in range(sockets)]
    for s, v in enumerate(cpus):
        g.add_node(v, kind="cpu", node=n, socket=s, host=host.key,
                   dram_bw_bytes_per_s=host.dram_bw_bytes_per_s * populated,
                   dram_bytes=per_socket + (rem if s == 0 else 0))
    if 2 <= sockets <= MAX_MESHED_SOCKETS:
        socket_link = get_interconnect(CPU_SOCKET_LINK)
        for s in range(sockets):
            for t in range(s + 1, sockets):
                g.add_edge(cpus[s], cpus[t], bw_bytes_per_s=socket_link.bw_bytes_per_s,
                           latency_s=socket_link.latency_s, kind="internal", interconnect=None, scaleup=False)

    gpus = [("gpu", n, i) for i in range(apn)]
    for i, v in enumerate(gpus):
        g.add_node(v, kind="gpu", node=n, index=i, accelerator=acc.key, memory_bytes=acc.memory_bytes,
                   memory_bw_bytes_per_s=acc.memory_bw_bytes_per_s)

    # Host attachment: unified memory, shared PCIe switch / C2C port, or a direct link to a socket.
    gps = node.gpus_per_pcie_switch
    switches: list[Vertex] = []
    if unified:
        for i, v in enumerate(gpus):
            g.add_edge(v, cpus[i * sockets // apn], bw_bytes_per_s=acc.memory_bw_bytes_per_s,
                       latency_s=host_link.latency_s, kind="unified", interconnect=host_link.key, scaleup=False)
    elif gps > 1:
        bifurcated = _bifurcated(node, host, host_link)
        n_sw = -(-apn // gps)
        gpu_bw = host_link.bw_bytes_per_s / gps if bifurcated else host_link.bw_bytes_per_s
        for k in range(n_sw):
            sw = ("pcie_switch", n, k)
            switches.append(sw)
            behind = min(gps, apn - k * gps)
            g.add_node(sw, kind="pcie_switch", node=n, index=k, gpus_behind=behind, bifurcated=bifurcated,
                       link=host_link.key)
            g.add_edge(sw, cpus[k * sockets // n_sw], bw_bytes_per_s=host_link.bw_bytes_per_s,
                       latency_s=get_interconnect(PCIE_SWITCH_HOP).latency_s, kind=host_link.kind,
                       interconnect=host_link.key,
                       scaleup=False, uplink=True)
        for i, v in enumerate(gpus):
            g.add_edge(v, switches[i // gps], bw_bytes_per_s=gpu_bw, latency_s=host_link.latency_s / 2,
                       kind=host_link.kind, interconnect=host_link.key, scaleup=False)
    else:
        for i, v in enumerate(gpus):
            g.add_edge(v, cpus[i * sockets // apn], bw_bytes_per_s=host_link.bw_bytes_per_s,
                       latency_s=host_link.latency_s / 2, kind=host_link.kind, interconnect=host_link.key,
                       scaleup=False)

    # Scale-up.
    if node.scaleup_domain in ("switch", "pairs"):
        if scaleup is None or acc.scaleup_bw_bytes_per_s is None:
            raise CatalogError(f"nodes.yaml: entry '{node.key}': scaleup_domain '{node.scaleup_domain}' "
                               f"but accelerator '{acc.key}' has no scale-up link")
        su_bw = acc.scaleup_bw_bytes_per_s
        if node.scaleup_domain == "switch":
            size = node.scaleup_domain_size
            domains = apn // size
            for d in range(domains):
                hub = ("nvswitch", n) if domains == 1 else ("nvswitch", n, d)
                g.add_node(hub, kind="nvswitch", node=n, index=d, link=scaleup.key, size=size)
                for v in gpus[d * size:(d + 1) * size]:
                    g.add_edge(v, hub, bw_bytes_per_s=su_bw, latency_s=scaleup.latency_s / 2, kind=scaleup.kind,
                               interconnect=scaleup.key, scaleup=True)
        else:
            for i in range(0, apn - 1, 2):
                g.add_edge(gpus[i], gpus[i + 1], bw_bytes_per_s=su_bw, latency_s=scaleup.latency_s,
                           kind=scaleup.kind, interconnect=scaleup.key, scaleup=True)

    # NICs: on the PCIe switches when there are real ones (GPUDirect RDMA layout), else on the sockets.
    if nic is not None:
        on_switch = bool(switches) and not g.nodes[switches[0]]["bifurcated"]
        nics = node.nics_per_node
        for j in range(nics):
            v = ("nic", n, j)
            g.add_node(v, kind="nic", node=n, index=j, link=nic.key)
            parent = switches[j * len(switches) // nics] if on_switch else cpus[j * sockets // nics]
            g.add_edge(parent, v, bw_bytes_per_s=nic.bw_bytes_per_s,
                       latency_s=get_interconnect(PCIE_SWITCH_HOP).latency_s,
                       kind="internal", interconnect=None, scaleup=False)
            g.add_edge(v, FABRIC, bw_bytes_per_s=nic.bw_bytes_per_s, latency_s=nic.latency_s / 2,
                       kind=nic.kind, interconnect=nic.key, scaleup=False)

    if node.nvme is not None:
        st = hw.storage[node.nvme]
        nvme_v: Vertex = ("nvme", n)
        g.add_node(nvme_v, kind="nvme", node=n, storage=st.key, count=node.nvme_count,
                   capacity_bytes=st.capacity_bytes * node.nvme_count)
        g.add_edge(nvme_v, cpus[0], bw_bytes_per_s=st.read_bw_bytes_per_s * node.nvme_count,
                   latency_s=get_interconnect(NVME_READ).latency_s, kind="nvme", interconnect=None, scaleup=False)


def build_cluster_graph(node: NodeType, n_nodes: int) -> nx.Graph:
    """Undirected graph of `n_nodes` identical nodes of type `node` joined by one scale-out fabric."""
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be >= 1, got {n_nodes}")
    hw = load_hardware()
    acc = hw.accelerators[node.accelerator]
    host = hw.hosts[node.host]
    host_link = _interconnect(acc.host_link, f"accelerator '{acc.key}' host_link")
    scaleup = _interconnect(acc.scaleup, f"accelerator '{acc.key}' scaleup") if acc.scaleup else None
    nic = _interconnect(node.nic, f"node '{node.key}' nic") if node.nic else None
    g = nx.Graph(node_type=node.key, n_nodes=n_nodes, accelerator=acc.key)
    if nic is not None or n_nodes > 1:
        g.add_node(FABRIC, kind="fabric")
    for n in range(n_nodes):
        _add_node(g, node, n, acc, host, host_link, scaleup, nic)
    return g


# ---------------------------------------------------------------- path algorithms

Adjacency = dict[Vertex, list[tuple[Vertex, float, float]]]


def adjacency(g: nx.Graph) -> Adjacency:
    """Plain adjacency lists for the hot loops: u -> [(v, bw_bytes_per_s, latency_s)]."""
    return {u: [(v, d["bw_bytes_per_s"], d["latency_s"]) for v, d in nbrs.items()] for u, nbrs in g.adjacency()}


def widest_bandwidths(adj: Adjacency, s: Vertex) -> dict[Vertex, float]:
    """Max-bottleneck bandwidth from s to every reachable vertex (modified Dijkstra; s itself: inf)."""
    best: dict[Vertex, float] = {s: math.inf}
    done: set[Vertex] = set()
    seq = itertools.count()  # tie-breaker: vertices never need to be comparable
    heap: list[tuple[float, int, Vertex]] = [(-math.inf, next(seq), s)]
    while heap:
        nb, _, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        width = -nb
        for v, bw, _ in adj[u]:
            w = bw if bw < width else width
            if w > best.get(v, 0.0):
                best[v] = w
                heapq.heappush(heap, (-w, next(seq), v))
    return best


def fewest_hops_within(adj: Adjacency, s: Vertex, floor: float) -> dict[Vertex, tuple[int, float]]:
    """(hops, latency) from s along the fewest-hop, then lowest-latency paths that use only edges with
    bandwidth >= floor (lexicographic Dijkstra; both terms are additive, so it is exact)."""
    dist: dict[Vertex, tuple[int, float]] = {s: (0, 0.0)}
    done: set[Vertex] = set()
    seq = itertools.count()
    heap: list[tuple[int, float, int, Vertex]] = [(0, 0.0, next(seq), s)]
    while heap:
        h, lat, _, u = heapq.heappop(heap)
        if u in done:
            continue
        done.add(u)
        for v, bw, el in adj[u]:
            if bw < floor or v in done:
                continue
            cand = (h + 1, lat + el)
            if v not in dist or cand < dist[v]:
                dist[v] = cand
                heapq.heappush(heap, (h + 1, lat + el, next(seq), v))
    return dist


def widest_path(g: nx.Graph | Adjacency, a: Vertex, b: Vertex) -> tuple[float, float]:
    """(bandwidth, latency) of the widest a-b path; among equally wide paths the fewest hops, then the lowest
    latency. Two phases: the bottleneck W by widest-path Dijkstra, then a (hops, latency) Dijkstra restricted
    to edges >= W (the W-wide paths are exactly the a-b paths of that subgraph). (0, inf) if unreachable;
    (inf, 0) for a == b."""
    adj = adjacency(g) if isinstance(g, nx.Graph) else g
    if a == b:
        return math.inf, 0.0
    w = widest_bandwidths(adj, a).get(b, 0.0)
    if w <= 0.0:
        return 0.0, math.inf
    return w, fewest_hops_within(adj, a, w)[b][1]


# ---------------------------------------------------------------- queries

def _node_of(v: Vertex) -> int | None:
    return v[1] if len(v) > 1 else None


def _relabel(v: Vertex, mapping: dict[int, int]) -> Vertex:
    return v if len(v) < 2 else (v[0], mapping[v[1]], *v[2:])


class Topology:
    """Link questions about `n_nodes` nodes of one type, answered from the topology graph (memoized)."""

    def __init__(self, node: str | NodeType, n_nodes: int = 1):
        if isinstance(node, str):
            node = get_node(node)
        if not isinstance(n_nodes, int) or n_nodes < 1:
            raise ValueError(f"n_nodes must be a positive integer, got {n_nodes!r}")
        hw = load_hardware()
        self.node: NodeType = node
        self.n_nodes = n_nodes
        self.accelerator: Accelerator = hw.accelerators[node.accelerator]
        self.host: HostPlatform = hw.hosts[node.host]
        self.gpus_per_node = node.accelerators_per_node
        self.probe: nx.Graph = build_cluster_graph(node, min(n_nodes, 2))
        self._adj = adjacency(self.probe)
        self._widest: dict[Vertex, dict[Vertex, float]] = {}
        self._hops: dict[tuple[Vertex, float], dict[Vertex, tuple[int, float]]] = {}
        self._pair: dict[tuple[Vertex, Vertex], tuple[float, float]] = {}
        self._tp: dict[int, tuple[float, float]] = {}
        self._ep: dict[int, tuple[float, float]] = {}
        self._ep_pairs: dict[int, tuple[float, float]] = {}  # GPUs 0..n-1 of node 0 -> (min bw, max latency)
        self._ep_remote: dict[int, dict[int, float]] = {}  # n_local -> n_remote -> max latency

    def __repr__(self) -> str:
        return f"Topology({self.node.key!r}, n_nodes={self.n_nodes})"

    # ------------------------------------------------------------ graph access

    @cached_property
    def graph(self) -> nx.Graph:
        """The full cluster graph (built on first use; queries never need it)."""
        return self.probe if self.n_nodes <= 2 else build_cluster_graph(self.node, self.n_nodes)

    @property
    def n_gpus(self) -> int:
        return self.gpus_per_node * self.n_nodes

    def gpus(self) -> list[Vertex]:
        """All GPU vertices, node-major."""
        return [("gpu", n, i) for n in range(self.n_nodes) for i in range(self.gpus_per_node)]

    def gpu(self, k: int) -> Vertex:
        """The k-th GPU of the cluster, node-major."""
        if not 0 <= k < self.n_gpus:
            raise ValueError(f"GPU index {k} out of range (cluster has {self.n_gpus})")
        return ("gpu", k // self.gpus_per_node, k % self.gpus_per_node)

    def _check(self, v: Vertex) -> None:
        if not isinstance(v, tuple) or not v or (len(v) > 1 and not isinstance(v[1], int)):
            raise ValueError(f"{v!r} is not a vertex of {self!r}")
        n = _node_of(v)
        probe_v = v if n is None else _relabel(v, {n: 0})
        if probe_v not in self._adj or (n is not None and not 0 <= n < self.n_nodes):
            raise ValueError(f"{v!r} is not a vertex of {self!r}")

    def _canonical(self, a: Vertex, b: Vertex) -> tuple[Vertex, Vertex]:
        """Relabel (a, b) onto the probe graph (their nodes -> 0, 1) and order them."""
        nodes = sorted({x for x in (_node_of(a), _node_of(b)) if x is not None})
        mapping = {x: i for i, x in enumerate(nodes)}
        a2, b2 = _relabel(a, mapping), _relabel(b, mapping)
        return (a2, b2) if a2 <= b2 else (b2, a2)

    # ------------------------------------------------------------ widest paths

    def _widest_from(self, s: Vertex) -> dict[Vertex, float]:
        got = self._widest.get(s)
        if got is None:
            got = self._widest[s] = widest_bandwidths(self._adj, s)
        return got

    def _shortest_within(self, s: Vertex, floor: float) -> dict[Vertex, tuple[int, float]]:
        key = (s, floor)
        got = self._hops.get(key)
        if got is None:
            got = self._hops[key] = fewest_hops_within(self._adj, s, floor)
        return got

    def _path(self, a: Vertex, b: Vertex) -> tuple[float, float]:
        """(bandwidth, latency) of the widest a-b path; ties broken by fewest hops, then lowest latency."""
        self._check(a)
        self._check(b)
        if a == b:
            return math.inf, 0.0
        s, t = self._canonical(a, b)
        key = (s, t)
        got = self._pair.get(key)
        if got is not None:
            return got
        w = self._widest_from(s).get(t, 0.0)
        if w <= 0.0:
            out = (0.0, math.inf)
        else:
            out = (w, self._shortest_within(s, w)[t][1])
        self._pair[key] = out
        return out

    def bandwidth(self, a: Vertex, b: Vertex) -> float:
        """Widest-path (max-bottleneck) bandwidth between two vertices, bytes/s per direction (0 if unreachable)."""
        return self._path(a, b)[0]

    def latency(self, a: Vertex, b: Vertex) -> float:
        """Sum of edge latencies along the widest path (fewest hops among the widest; inf if unreachable)."""
        return self._path(a, b)[1]

    # ------------------------------------------------------------ structure

    @cached_property
    def _components(self) -> dict[int, int]:
        """GPU index -> id of its scale-up component on node 0 (scale-up edges + NVSwitch vertices only)."""
        parent: dict[Vertex, Vertex] = {}

        def find(x: Vertex) -> Vertex:
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for u, v, d in self.probe.edges(data=True):
            if d.get("scaleup") and _node_of(u) == 0 and _node_of(v) == 0:
                ru, rv = find(u), find(v)
                if ru != rv:
                    parent[ru] = rv
        roots: dict[Vertex, int] = {}
        return {i: roots.setdefault(find(("gpu", 0, i)), len(roots)) for i in range(self.gpus_per_node)}

    def fast_domain_size(self) -> int:
        """Largest set of GPUs joined only by scale-up links (NVLink / xGMI / bridge / NVSwitch), from the graph."""
        sizes: dict[int, int] = {}
        for c in self._components.values():
            sizes[c] = sizes.get(c, 0) + 1
        return max(sizes.values())

    def scaleup_bandwidth(self) -> float:
        """Per-GPU scale-up bandwidth (0 when the node has no scale-up links)."""
        best = 0.0
        for v, bw, _ in self._adj[("gpu", 0, 0)]:
            if self.probe.edges[("gpu", 0, 0), v].get("scaleup"):
                best = max(best, bw)
        return best

    def _host_edge(self, i: int, n: int = 0) -> tuple[Vertex, float]:
        """(neighbour, bw) of GPU i's host-side (non-scale-up) link."""
        g = ("gpu", n, i)
        for v, bw, _ in self._adj[g]:
            if v[0] in ("pcie_switch", "cpu"):
                return v, bw
        raise AssertionError(f"{g} has no host link")  # pragma: no cover - every GPU gets one

    def _uplink_share(self, sw: Vertex, group_behind: int) -> float:
        cpu_bw = max(bw for v, bw, _ in self._adj[sw] if v[0] == "cpu")
        return cpu_bw / max(group_behind, 1)

    def nic_bandwidth_per_gpu(self, node_index: int = 0) -> float:
        """Sum of the node's NIC bandwidth / GPUs of the node (0 without NICs)."""
        self._check(("cpu", node_index, 0))
        total = sum(bw for v, bw, _ in self._adj[FABRIC] if v[0] == "nic" and v[1] == 0) if FABRIC in self._adj else 0.0
        return total / self.gpus_per_node

    # ------------------------------------------------------------ collective groups

    def tp_bandwidth(self, tp: int) -> tuple[float, float]:
        """(bw, latency) of a TP ring over the first `tp` GPUs (node-major): bottleneck bandwidth and the
        largest latency over consecutive ring pairs. A group of one never communicates: (inf, 0.0)."""
        if not 1 <= tp <= self.n_gpus:
            raise ValueError(f"tp={tp} outside 1..{self.n_gpus}")
        got = self._tp.get(tp)
        if got is not None:
            return got
        if tp == 1:
            out = (math.inf, 0.0)
        else:
            bw, lat = math.inf, 0.0
            ring = [self.gpu(k) for k in range(tp)]
            seen: set[tuple[Vertex, Vertex]] = set()
            for k in range(tp):
                a, b = ring[k], ring[(k + 1) % tp]
                key = self._canonical(a, b)
                if key in seen:
                    continue
                seen.add(key)
                pb, pl = self._path(a, b)
                bw, lat = min(bw, pb), max(lat, pl)
            out = (bw, lat)
        self._tp[tp] = out
        return out

    def _local_pairs(self, n: int) -> tuple[float, float]:
        """(min bw, max latency) of the widest paths over every pair of GPUs 0..n-1 of node 0: grown one GPU at
        a time from the largest group already known (min and max over a growing set: the same answer as
        looping over every pair, each pair asked once across all group sizes)."""
        memo = self._ep_pairs
        k = max((m for m in memo if m <= n), default=1)
        bw, lat = memo.get(k, (math.inf, 0.0))
        for y in range(k, n):
            for x in range(y):
                pb, pl = self._path(("gpu", 0, x), ("gpu", 0, y))
                bw, lat = min(bw, pb), max(lat, pl)
            memo[y + 1] = (bw, lat)
        return bw, lat

    def _remote_latency(self, n_local: int, n_remote: int) -> float:
        """Max widest-path latency from GPUs 0..n_local-1 of node 0 to GPUs 0..n_remote-1 of node 1 (grown one
        remote GPU at a time, as `_local_pairs`)."""
        memo = self._ep_remote.setdefault(n_local, {})
        k = max((m for m in memo if m <= n_remote), default=0)
        lat = memo.get(k, 0.0)
        for y in range(k, n_remote):
            for x in range(n_local):
                lat = max(lat, self._path(("gpu", 0, x), ("gpu", 1, y))[1])
            memo[y + 1] = lat
        return lat

    def ep_bandwidth(self, ep: int) -> tuple[float, float]:
        """(per-GPU bw, latency) for an all-to-all among the first `ep` GPUs (node-major).

        bw = min of
          - the widest-path bottleneck over every intra-node pair of the group (scale-up bw inside one fast
            domain, else the PCIe / socket path);
          - when intra-node pairs fall in different fast domains behind different PCIe switches: the switch
            uplink divided by the group GPUs behind it;
          - when the group spans nodes: the node's NIC share per GPU (sum of NIC bw / GPUs of the node) and the
            GPU's own host-side link.
        latency = max over all pairs of the widest-path latency. A group of one: (inf, 0.0).
        """
        if not 1 <= ep <= self.n_gpus:
            raise ValueError(f"ep={ep} outside 1..{self.n_gpus}")
        got = self._ep.get(ep)
        if got is not None:
            return got
        if ep == 1:
            self._ep[ep] = (math.inf, 0.0)
            return self._ep[ep]
        gpn = self.gpus_per_node
        local = list(range(min(ep, gpn)))           # group members on node 0 (node 0 is always full or the group)
        spans = ep > gpn
        remote = list(range(min(gpn, ep - gpn))) if spans else []   # representative members on node 1
        bw, lat = self._local_pairs(len(local))
        lat = max(lat, self._remote_latency(len(local), len(remote)))
        comps = {self._components[i] for i in local}
        if len(comps) > 1:
            behind: dict[Vertex, int] = {}
            for i in local:
                hub, _ = self._host_edge(i)
                if hub[0] == "pcie_switch":
                    behind[hub] = behind.get(hub, 0) + 1
            if len(behind) > 1:
                bw = min(bw, *(self._uplink_share(sw, k) for sw, k in behind.items()))
        if spans:
            nic_share = self.nic_bandwidth_per_gpu()
            own = min(self._host_edge(i)[1] for i in local)
            bw = min(bw, nic_share, own)
            if nic_share <= 0.0:
                lat = math.inf
        self._ep[ep] = (bw, lat)
        return self._ep[ep]

    # ------------------------------------------------------------ host side

    def host_link_bandwidth(self, gpu: int = 0) -> float:
        """Per-GPU bandwidth to host memory (GPU index node-major). Behind a shared PCIe switch / C2C port the
        uplink is divided by the GPUs behind it; unified boxes get the accelerator's memory bandwidth."""
        v = self.gpu(gpu)
        i = v[2]
        hub, bw = self._host_edge(i)
        if hub[0] == "pcie_switch":
            bw = min(bw, self._uplink_share(hub, self.probe.nodes[hub]["gpus_behind"]))
        return bw

    def _cpus(self, node_index: int) -> list[dict[str, Any]]:
        self._check(("cpu", node_index, 0))
        return [self.probe.nodes[("cpu", 0, s)] for s in range(self.node.sockets)]

    def host_dram_bandwidth(self, node_index: int = 0) -> float:
        """Theoretical host DRAM bandwidth of one node: sum over its sockets."""
        return sum(c["dram_bw_bytes_per_s"] for c in self._cpus(node_index))

    def host_dram_bytes(self, node_index: int = 0) -> int:
        return sum(c["dram_bytes"] for c in self._cpus(node_index))

    def nvme_bandwidth(self, node_index: int = 0) -> float:
        """Aggregate NVMe sequential-read bandwidth of one node (0 without NVMe)."""
        self._check(("cpu", node_index, 0))
        if ("nvme", 0) not in self._adj:
            return 0.0
        return self._adj[("nvme", 0)][0][1]

    # ------------------------------------------------------------ printing

    def summary(self) -> dict[str, Any]:
        fast = self.fast_domain_size()
        tp_bw, tp_lat = self.tp_bandwidth(min(fast, self.n_gpus)) if fast > 1 else (None, None)
        out: dict[str, Any] = {
            "node": self.node.key,
            "name": self.node.name,
            "accelerator": self.accelerator.key,
            "n_nodes": self.n_nodes,
            "gpus_per_node": self.gpus_per_node,
            "n_gpus": self.n_gpus,
            "vertices_per_node": sum(1 for v in self._adj if _node_of(v) == 0),
            "fast_domain_size": fast,
            "scaleup_bw_bytes_per_s": self.scaleup_bandwidth(),
            "tp_fast_domain_bw_bytes_per_s": tp_bw,
            "tp_fast_domain_latency_s": tp_lat,
            "host_link_bw_bytes_per_s": self.host_link_bandwidth(0),
            "host_dram_bw_bytes_per_s": self.host_dram_bandwidth(0),
            "host_dram_bytes": self.host_dram_bytes(0),
            "nvme_bw_bytes_per_s": self.nvme_bandwidth(0),
            "nic_bw_per_gpu_bytes_per_s": self.nic_bandwidth_per_gpu(0),
        }
        if self.n_nodes > 1:
            bw, lat = self.ep_bandwidth(self.n_gpus)
            out["ep_cluster_bw_bytes_per_s"], out["ep_cluster_latency_s"] = bw, lat
        return out


@memoize("topology", maxsize=256)
def topology(node_key: str, n_nodes: int = 1) -> Topology:
    """Cached `Topology` for a node key (any spelling `get_node` accepts) and node count."""
    return Topology(get_node(node_key), n_nodes)


__all__ = [
    "CPU_SOCKET_LINK", "FABRIC", "MAX_MESHED_SOCKETS", "NVME_READ", "PCIE_SWITCH_HOP", "Topology", "adjacency",
    "build_cluster_graph",
    "fewest_hops_within", "topology", "widest_bandwidths", "widest_path",
]
