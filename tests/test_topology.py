"""Topology graph (optimizer/topology.py): structure, link queries, brute-force widest paths, scale."""

from __future__ import annotations

import itertools
import math
import time
from types import SimpleNamespace

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.catalog.hardware import get_interconnect, get_node, load_hardware
from optimizer.topology import (
    CPU_SOCKET_LINK,
    FABRIC,
    Topology,
    build_cluster_graph,
    topology,
    widest_path,
)
from tests.hyp import examples

HW = load_hardware()
NODE_KEYS = sorted(HW.nodes)


def _bw(key: str) -> float:
    return get_interconnect(key).bw_bytes_per_s


def _lat(key: str) -> float:
    return get_interconnect(key).latency_s


def brute_widest(g: nx.Graph, a, b) -> tuple[float, float]:
    """Enumerate every simple path: max bottleneck, then fewest hops, then lowest latency."""
    best = None
    for path in nx.all_simple_paths(g, a, b):
        edges = [g.edges[u, v] for u, v in itertools.pairwise(path)]
        key = (-min(e["bw_bytes_per_s"] for e in edges), len(edges), sum(e["latency_s"] for e in edges))
        best = key if best is None or key < best else best
    if best is None:
        return 0.0, math.inf
    return -best[0], best[2]


# ---------------------------------------------------------------- named node types

def test_hgx_h100_8():
    node = get_node("hgx-h100-8")
    t = Topology("hgx-h100-8")
    nvl = _bw("nvlink4")
    assert t.n_gpus == 8 and len(t.gpus()) == 8
    assert t.fast_domain_size() == 8
    assert t.scaleup_bandwidth() == nvl == HW.accelerators["h100-sxm"].scaleup_bw_bytes_per_s
    bw, lat = t.tp_bandwidth(8)
    assert bw == nvl
    assert lat == pytest.approx(_lat("nvlink4"))
    # every GPU hangs off the one NVSwitch vertex with the per-GPU NVLink figure
    g = t.graph
    assert sorted(g[("nvswitch", 0)]) == [("gpu", 0, i) for i in range(8)]
    assert all(g.edges[("nvswitch", 0), v]["kind"] == "nvlink" for v in g[("nvswitch", 0)])
    # 2 GPUs per PCIe switch in the YAML: the PCIe5 x16 uplink is shared
    assert node.gpus_per_pcie_switch == 2
    assert t.host_link_bandwidth() == _bw("pcie5-x16") / 2
    assert [v for v in g[("gpu", 0, 0)] if v[0] == "pcie_switch"] == [("pcie_switch", 0, 0)]
    # host side
    host = HW.hosts[node.host]
    assert t.host_dram_bandwidth() == 2 * host.dram_bw_bytes_per_s
    assert t.host_dram_bytes() == node.dram_bytes
    assert t.nvme_bandwidth() == 8 * HW.storage["nvme-gen4-dc"].read_bw_bytes_per_s
    socket_bw = get_interconnect(CPU_SOCKET_LINK).bw_bytes_per_s
    assert g.edges[("cpu", 0, 0), ("cpu", 0, 1)]["bw_bytes_per_s"] == socket_bw == 64.0e9
    # inside one node EP stays on NVLink
    assert t.ep_bandwidth(8)[0] == nvl


def test_hgx_h100_two_nodes_ep_and_tp():
    t = Topology("hgx-h100-8", 2)
    nvl, ndr = _bw("nvlink4"), _bw("ib-ndr")
    nic_share = ndr * 8 / 8
    assert t.nic_bandwidth_per_gpu() == nic_share
    bw, lat = t.ep_bandwidth(16)
    assert bw == min(nvl, nic_share) == 50e9
    assert lat > _lat("ib-ndr")             # NIC latency plus the PCIe legs on both sides
    assert lat == pytest.approx(t.latency(("gpu", 0, 0), ("gpu", 1, 0)))
    # a TP ring of 16 crosses the fabric twice: limited by the NIC path
    tp_bw, tp_lat = t.tp_bandwidth(16)
    assert tp_bw == min(ndr, _bw("pcie5-x16"))
    assert tp_lat > t.tp_bandwidth(8)[1]
    # cross-node pair path: GPU -> PCIe switch -> NIC -> fabric -> NIC -> PCIe switch -> GPU
    assert t.bandwidth(("gpu", 0, 3), ("gpu", 1, 5)) == ndr
    assert t.bandwidth(("gpu", 0, 0), FABRIC) == ndr


def links_for(acc, node, tp: int, multi_node: bool) -> SimpleNamespace:
    """Independent closed-form link figures (no graph), the oracle the graph queries must agree with."""
    host_link = get_interconnect(acc.host_link)
    pcie_bw = host_link.bw_bytes_per_s
    if node.gpus_per_pcie_switch > 1:
        pcie_bw /= node.gpus_per_pcie_switch
    fast = None
    if acc.scaleup and node.scaleup_domain in ("switch", "pairs") and tp <= node.scaleup_domain_size:
        fast = get_interconnect(acc.scaleup)
    tp_bw = (acc.scaleup_bw_bytes_per_s or fast.bw_bytes_per_s) if fast else pcie_bw
    ep_bw = tp_bw
    if multi_node and node.nic:
        nic = get_interconnect(node.nic)
        ep_bw = min(ep_bw, nic.bw_bytes_per_s * max(node.nics_per_node, 1) / node.accelerators_per_node)
    host = HW.hosts[node.host]
    nvme_bw = HW.storage[node.nvme].read_bw_bytes_per_s * max(node.nvme_count, 1) if node.nvme else 0.0
    return SimpleNamespace(tp_bw=tp_bw, ep_bw=ep_bw, host_link_bw=pcie_bw,
                           host_dram_bw=host.dram_bw_bytes_per_s * node.sockets
                           * (node.dram_channels_populated or host.memory_channels) / host.memory_channels,
                           nvme_bw=nvme_bw)


def test_matches_devices_links_for_where_semantics_agree():
    """host link, EP across nodes and TP inside a fast domain agree with the closed-form oracle for every node."""
    for key, node in HW.nodes.items():
        acc = HW.accelerators[node.accelerator]
        t = Topology(node, 2)
        lf = links_for(acc, node, node.scaleup_domain_size, multi_node=True)
        if node.scaleup_domain == "unified":
            assert t.host_link_bandwidth() == acc.memory_bw_bytes_per_s, key
        else:
            assert t.host_link_bandwidth() == pytest.approx(lf.host_link_bw), key
        assert t.ep_bandwidth(2 * node.accelerators_per_node)[0] == pytest.approx(lf.ep_bw), key
        if node.scaleup_domain_size > 1:
            assert t.tp_bandwidth(node.scaleup_domain_size)[0] == pytest.approx(lf.tp_bw), key
        assert t.host_dram_bandwidth() == pytest.approx(lf.host_dram_bw), key
        assert t.nvme_bandwidth() == pytest.approx(lf.nvme_bw), key


def test_pcie_workstation_4090_x2():
    t = Topology("ws-rtx-4090-2")
    pcie4 = _bw("pcie4-x16")
    assert t.fast_domain_size() == 1
    assert t.scaleup_bandwidth() == 0.0
    bw, lat = t.tp_bandwidth(2)
    # AM5: one CPU x16 bifurcated x8/x8, so each card has half an x16 and no NVLink
    assert bw == pcie4 / 2
    assert bw < 100e9
    assert lat == pytest.approx(_lat("pcie4-x16"))
    assert t.host_link_bandwidth(0) == t.host_link_bandwidth(1) == pcie4 / 2
    assert t.ep_bandwidth(2) == t.tp_bandwidth(2)
    assert all(d["kind"] != "nvlink" for _, _, d in t.graph.edges(data=True))


def test_pcie_server_real_switch_and_uplink_sharing():
    t = Topology("pcie-l40s-8")
    pcie4 = _bw("pcie4-x16")
    assert t.fast_domain_size() == 1
    # two GPUs under one real PCIe switch talk at full x16; the ring is PCIe-limited
    assert t.bandwidth(("gpu", 0, 0), ("gpu", 0, 1)) == pcie4
    assert t.tp_bandwidth(8)[0] == pcie4
    # host traffic and all-to-all share each switch's x16 uplink between its two GPUs
    assert t.host_link_bandwidth() == pcie4 / 2
    assert t.ep_bandwidth(8)[0] == pcie4 / 2
    assert t.ep_bandwidth(2)[0] == pcie4          # both GPUs behind one switch: no uplink crossed


def test_h100_nvl_bridged_pairs():
    t = Topology("pcie-h100-nvl-8")
    bridge = _bw("nvlink-bridge-h100-nvl")
    assert t.fast_domain_size() == 2
    g = t.graph
    for i in range(0, 8, 2):
        e = g.edges[("gpu", 0, i), ("gpu", 0, i + 1)]
        assert e["bw_bytes_per_s"] == bridge and e["kind"] == "nvlink" and e["scaleup"]
    assert not g.has_edge(("gpu", 0, 1), ("gpu", 0, 2))
    assert ("nvswitch", 0) not in g
    assert t.tp_bandwidth(2)[0] == bridge
    assert t.tp_bandwidth(4)[0] == _bw("pcie5-x16")   # ring 1->2 and 3->0 leave the bridge
    assert t.ep_bandwidth(4)[0] == _bw("pcie5-x16") / 2


def test_gb200_nvl72_whole_rack_one_domain():
    t = Topology("gb200-nvl72")
    assert t.n_gpus == 72
    assert t.fast_domain_size() == 72
    assert len(t.graph[("nvswitch", 0)]) == 72
    assert t.tp_bandwidth(72)[0] == _bw("nvlink5")
    assert t.ep_bandwidth(72)[0] == _bw("nvlink5")
    # one Grace C2C port per two GPUs
    assert t.host_link_bandwidth(5) == _bw("nvlink-c2c") / 2
    assert t.host_dram_bytes() == get_node("gb200-nvl72").dram_bytes
    assert t.graph.edges[("gpu", 0, 0), ("pcie_switch", 0, 0)]["kind"] == "c2c"


def test_mac_studio_unified():
    node = get_node("mac-studio-m3-ultra-512")
    acc = HW.accelerators[node.accelerator]
    t = Topology(node)
    g = t.graph
    assert t.n_gpus == 1 and t.gpus() == [("gpu", 0, 0)]
    assert t.fast_domain_size() == 1
    e = g.edges[("gpu", 0, 0), ("cpu", 0, 0)]
    assert e["kind"] == "unified" and e["bw_bytes_per_s"] == acc.memory_bw_bytes_per_s
    assert not any(v[0] == "pcie_switch" for v in g)
    assert t.host_link_bandwidth() == acc.memory_bw_bytes_per_s
    assert t.tp_bandwidth(1) == (math.inf, 0.0)
    assert t.host_dram_bytes() == 0
    # six Thunderbolt 5 ports on the fabric
    assert len([v for v in g[FABRIC]]) == 6
    t2 = Topology(node, 2)
    assert t2.ep_bandwidth(2)[0] == 6 * _bw("thunderbolt5")
    assert t2.bandwidth(("gpu", 0, 0), ("gpu", 1, 0)) == _bw("thunderbolt5")


# ---------------------------------------------------------------- whole catalogue

@pytest.mark.parametrize("key", NODE_KEYS)
def test_every_node_builds_and_fast_domain_matches_yaml(key):
    node = HW.nodes[key]
    for n_nodes in (1, 3):
        g = build_cluster_graph(node, n_nodes)
        assert nx.is_connected(g), key
        gpus = [v for v, d in g.nodes(data=True) if d["kind"] == "gpu"]
        assert len(gpus) == n_nodes * node.accelerators_per_node
        for _, _, d in g.edges(data=True):
            assert d["bw_bytes_per_s"] > 0 and d["latency_s"] >= 0
            assert d["kind"] in {"internal", "pcie", "nvlink", "xgmi", "infiniband", "ethernet", "roce", "efa",
                                 "c2c", "unified", "nvme", "thunderbolt", "usb4"}
    t = Topology(key, 3)
    assert t.fast_domain_size() == node.scaleup_domain_size
    assert t.graph.number_of_nodes() == 3 * (t.probe.number_of_nodes() - 1) // 2 + 1
    s = t.summary()
    assert s["fast_domain_size"] == node.scaleup_domain_size and s["n_gpus"] == 3 * node.accelerators_per_node
    assert s["ep_cluster_bw_bytes_per_s"] > 0


def test_graph_attributes():
    g = build_cluster_graph(get_node("hgx-h100-8"), 2)
    d = g.nodes[("gpu", 1, 3)]
    assert d == {"kind": "gpu", "node": 1, "index": 3, "accelerator": "h100-sxm",
                 "memory_bytes": HW.accelerators["h100-sxm"].memory_bytes,
                 "memory_bw_bytes_per_s": HW.accelerators["h100-sxm"].memory_bw_bytes_per_s}
    c = g.nodes[("cpu", 0, 1)]
    assert c["host"] == "xeon-spr-8ch-ddr5-4800" and c["dram_bytes"] * 2 == get_node("hgx-h100-8").dram_bytes
    nic = g.edges[("nic", 0, 0), FABRIC]
    assert nic["kind"] == "infiniband" and nic["bw_bytes_per_s"] == _bw("ib-ndr")
    assert g.degree(FABRIC) == 16
    assert g.edges[("nvme", 0), ("cpu", 0, 0)]["kind"] == "nvme"


# ---------------------------------------------------------------- scale

def test_128_node_cluster_is_fast():
    node = get_node("hgx-h100-8")
    t0 = time.process_time()
    g = build_cluster_graph(node, 128)
    assert time.process_time() - t0 < 1.0
    assert sum(1 for _, d in g.nodes(data=True) if d["kind"] == "gpu") == 1024
    t0 = time.process_time()
    t = Topology(node, 128)
    bw, lat = t.ep_bandwidth(1024)
    assert bw == min(_bw("nvlink4"), _bw("ib-ndr") * 8 / 8)
    assert 0 < lat < 1e-4
    assert t.tp_bandwidth(64)[0] == _bw("ib-ndr")
    assert t.n_gpus == 1024 and t.gpus()[-1] == ("gpu", 127, 7)
    assert time.process_time() - t0 < 1.0
    # node pairs far apart answer like nodes 0 and 1
    assert t.bandwidth(("gpu", 100, 2), ("gpu", 17, 6)) == t.bandwidth(("gpu", 0, 2), ("gpu", 1, 6))
    assert t.latency(("gpu", 100, 2), ("gpu", 17, 6)) == t.latency(("gpu", 1, 2), ("gpu", 0, 6))
    assert t.graph.number_of_nodes() == g.number_of_nodes()


# ---------------------------------------------------------------- API details

def test_factory_is_cached_and_accepts_spellings():
    assert topology("hgx-h100-8", 2) is topology("hgx-h100-8", 2)
    assert topology("HGX_H100_8", 1).node.key == "hgx-h100-8"


def test_group_of_one_and_errors():
    t = Topology("hgx-h100-8", 2)
    assert t.tp_bandwidth(1) == (math.inf, 0.0)
    assert t.ep_bandwidth(1) == (math.inf, 0.0)
    assert t.bandwidth(("gpu", 0, 0), ("gpu", 0, 0)) == math.inf
    for bad in (0, 17):
        with pytest.raises(ValueError):
            t.tp_bandwidth(bad)
        with pytest.raises(ValueError):
            t.ep_bandwidth(bad)
    with pytest.raises(ValueError):
        t.bandwidth(("gpu", 2, 0), ("gpu", 0, 0))
    with pytest.raises(ValueError):
        t.bandwidth(("gpu", 0, 8), ("gpu", 0, 0))
    with pytest.raises(ValueError):
        Topology("hgx-h100-8", 0)
    with pytest.raises(ValueError):
        t.host_dram_bandwidth(5)


# ---------------------------------------------------------------- properties

def _vertices(key: str, n_nodes: int) -> list:
    return sorted(Topology(key, n_nodes).probe.nodes, key=repr)


@settings(max_examples=examples(150, 30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(NODE_KEYS), n_nodes=st.integers(1, 2), data=st.data())
def test_bandwidth_symmetric_and_bounded(key, n_nodes, data):
    t = topology(key, n_nodes)
    verts = _vertices(key, n_nodes)
    a = data.draw(st.sampled_from(verts))
    b = data.draw(st.sampled_from(verts))
    assert t.bandwidth(a, b) == t.bandwidth(b, a)
    assert t.latency(a, b) == t.latency(b, a)
    if a != b:
        max_edge = max(d["bw_bytes_per_s"] for _, _, d in t.probe.edges(data=True))
        assert 0 < t.bandwidth(a, b) <= max_edge
        assert 0 <= t.latency(a, b) < math.inf
        # a path's bottleneck never exceeds either endpoint's widest edge
        assert t.bandwidth(a, b) <= min(max(bw for *_, bw in t.probe.edges(v, data="bw_bytes_per_s"))
                                        for v in (a, b))


BRUTE_CASES = [("hgx-h100-8", 1), ("pcie-h100-nvl-8", 1), ("pcie-l4-8", 1), ("ws-rtx-3090-4", 2),
               ("ws-rtx-4090-2", 2), ("dgx-spark", 2), ("mac-studio-m4-max-128", 2)]


@settings(max_examples=examples(120, 30), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(BRUTE_CASES), data=st.data())
def test_widest_path_matches_brute_force_on_catalogue_graphs(case, data):
    key, n_nodes = case
    t = topology(key, n_nodes)
    verts = _vertices(key, n_nodes)
    a = data.draw(st.sampled_from(verts))
    b = data.draw(st.sampled_from(verts).filter(lambda v: v != a))
    bw, lat = brute_widest(t.probe, a, b)
    assert t.bandwidth(a, b) == bw
    assert t.latency(a, b) == pytest.approx(lat, rel=1e-12, abs=1e-18)


@st.composite
def small_graphs(draw):
    n = draw(st.integers(2, 7))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    pairs = [(u, v) for u in range(n) for v in range(u + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    for u, v in chosen:
        # few distinct values, so ties in bandwidth (and in hop count) are common
        g.add_edge(u, v, bw_bytes_per_s=draw(st.sampled_from([1.0, 2.0, 3.0, 5.0])),
                   latency_s=draw(st.sampled_from([0.0, 0.5, 1.0, 4.0])))
    a = draw(st.integers(0, n - 1))
    b = draw(st.integers(0, n - 1).filter(lambda x: x != a))
    return g, a, b


@settings(max_examples=examples(300, 60), deadline=None)
@given(small_graphs())
def test_widest_path_matches_brute_force_on_random_graphs(case):
    g, a, b = case
    bw, lat = widest_path(g, a, b)
    want_bw, want_lat = brute_widest(g, a, b)
    assert bw == want_bw
    assert lat == pytest.approx(want_lat) if want_lat < math.inf else lat == math.inf
    assert widest_path(g, b, a)[0] == bw
