"""What a fleet can be built from: the catalogue's offers (`optimizer/catalog/offers.py`: rented cloud instances
and bought servers, whole or partly filled), each with how fast KV can leave it (the per-GPU share of its NICs
from the topology graph, or the shape's own NIC) and whether that link is RDMA or TCP.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from optimizer.catalog import offers as catalog
from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.offers import PriceOffer, load_shapes
from optimizer.topology import topology

__all__ = ["RDMA_KINDS", "Offer", "buy_offers", "load_shapes", "offers", "rent_offers"]

RDMA_KINDS = ("infiniband", "roce", "efa", "nvlink")  # NIXL/UCX moves KV GPU-to-GPU over these


@dataclass(frozen=True)
class Offer(PriceOffer):
    """A catalogue offer with the link KV crosses when it leaves or enters one unit."""

    kv_link_bw: float = 0.0  # bytes/s per GPU
    kv_link_latency_s: float = 0.0
    kv_link: str = ""  # interconnect key
    kv_transport: Literal["rdma", "tcp"] = "tcp"


def _node_link(node_key: str, gpus: int, nic: str | None = None, nic_count: int = 1) -> tuple[float, float, str, str]:
    """(bytes/s per GPU, latency, interconnect key, rdma|tcp) for KV leaving a unit of `gpus` GPUs."""
    hw = load_hardware()
    node = hw.nodes[node_key]
    key = nic or node.nic
    if key is None:
        key = "eth-25g"  # no NIC in the catalogue row: a 25 GbE port (TCP), stated in the plan
        bw = hw.interconnects[key].bw_bytes_per_s / gpus
    elif nic is not None:
        bw = hw.interconnects[key].bw_bytes_per_s * nic_count / gpus
    else:
        bw = topology(node.key, 1).nic_bandwidth_per_gpu()  # the node's NICs shared by its GPUs (NICs scale with slots)
    ic = hw.interconnects[key]
    return bw, ic.latency_s, key, "rdma" if ic.kind in RDMA_KINDS else "tcp"


@lru_cache(maxsize=4096)
def _with_link(o: PriceOffer) -> Offer:
    bw, lat, link, kind = _node_link(o.node, o.gpus, o.nic, o.nic_count)
    fields = {f: getattr(o, f) for f in PriceOffer.__dataclass_fields__}
    return Offer(**fields, kv_link_bw=bw, kv_link_latency_s=lat, kv_link=link,
                 kv_transport="rdma" if kind == "rdma" else "tcp")


def rent_offers(accelerators: set[str] | None = None) -> list[Offer]:
    return [_with_link(o) for o in catalog.rent_offers(accelerators)]


def buy_offers(accelerators: set[str] | None = None) -> list[Offer]:
    return [_with_link(o) for o in catalog.buy_offers(accelerators)]


def offers(objective: str, accelerators: set[str] | None = None) -> list[Offer]:
    return [_with_link(o) for o in catalog.offers(objective, accelerators)]
