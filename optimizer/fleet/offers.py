"""What a fleet can be built from: rented cloud instances (`hardware/cloud_shapes.yaml`: 1/2/4/8-GPU shapes with
their whole-instance $/h) and bought servers, whole or partly filled (4 of 8 slots: capex = node base + the GPUs
bought; power = node base watts + the GPUs' TDP). Each offer also says how fast KV can leave it (the per-GPU
share of its NICs from the topology graph, or the shape's own NIC) and whether that link is RDMA or TCP.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from optimizer.catalog.hardware import load_hardware, purchase_usd
from optimizer.catalog.paths import data_dir
from optimizer.errors import CatalogError
from optimizer.topology import topology

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader of the same safe schema, when built

RDMA_KINDS = ("infiniband", "roce", "efa", "nvlink")  # NIXL/UCX moves KV GPU-to-GPU over these
PARTIAL_FILLS = (1, 2, 4)  # GPUs bought in an 8-slot server besides the full fill


class Shape(BaseModel):
    """One row of cloud_shapes.yaml."""

    model_config = ConfigDict(extra="forbid")
    provider: str
    instance: str
    accelerator: str
    gpus: Annotated[int, Field(gt=0, le=72)]
    usd_per_hour: Annotated[float, Field(gt=0)]
    node: str
    nic: str | None = None
    nic_count: Annotated[int, Field(ge=1)] = 1
    per_gpu_billing: bool = False
    region: str | None = None
    as_of: str
    source: str
    estimate: bool = False
    notes: str = ""

    @field_validator("as_of", mode="before")
    @classmethod
    def _date(cls, v: object) -> object:
        return str(v) if v is not None else v


@dataclass(frozen=True)
class Offer:
    """A unit of hardware a replica is built from (one instance, or one server)."""

    key: str  # rent:<provider>/<instance>[xG] | buy:<node>[G/8]
    mode: Literal["rent", "buy"]
    accelerator: str
    node: str  # nodes.yaml key (topology)
    gpus: int  # GPUs in one unit
    full_node: bool  # all the node type's slots: may be joined with others of its kind (multi-node)
    usd_per_hour: float | None  # rent: per unit
    capex_usd: float | None  # buy: per unit
    power_watts: float  # per unit, at TDP
    kv_link_bw: float  # bytes/s per GPU for KV leaving / entering this unit
    kv_link_latency_s: float
    kv_link: str  # interconnect key
    kv_transport: Literal["rdma", "tcp"]
    source: str
    as_of: str

    def cost(self, objective: str) -> float | None:
        return self.usd_per_hour if objective == "hourly" else self.capex_usd


@lru_cache(maxsize=1)
def load_shapes() -> tuple[Shape, ...]:
    path = data_dir("hardware") / "cloud_shapes.yaml"
    try:
        rows = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)  # libyaml when built
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path.name}: cannot read: {exc}") from exc
    if not isinstance(rows, list):
        raise CatalogError(f"{path.name}: expected a YAML list")
    hw = load_hardware()
    out = []
    for i, raw in enumerate(rows):
        try:
            s = Shape.model_validate(raw)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise CatalogError(f"{path.name}: entry #{i}: field '{'.'.join(map(str, e['loc']))}': {e['msg']}") from exc
        node = hw.nodes.get(s.node)
        if node is None or s.accelerator not in hw.accelerators or node.accelerator != s.accelerator:
            raise CatalogError(
                f"{path.name}: entry #{i} ({s.instance}): node '{s.node}' / accelerator "
                f"'{s.accelerator}' unknown or inconsistent"
            )
        if s.gpus > node.accelerators_per_node:
            raise CatalogError(
                f"{path.name}: entry #{i} ({s.instance}): {s.gpus} GPUs > {node.key}'s "
                f"{node.accelerators_per_node} slots"
            )
        if s.nic is not None and s.nic not in hw.interconnects:
            raise CatalogError(f"{path.name}: entry #{i} ({s.instance}): unknown nic '{s.nic}'")
        out.append(s)
    return tuple(out)


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


def rent_offers(accelerators: set[str] | None = None) -> list[Offer]:
    hw = load_hardware()
    out: list[Offer] = []
    for s in load_shapes():
        if accelerators is not None and s.accelerator not in accelerators:
            continue
        apn = hw.nodes[s.node].accelerators_per_node
        counts = [g for g in (1, 2, 4, 8) if g <= apn] if s.per_gpu_billing else [s.gpus]
        for g in counts:
            bw, lat, link, kind = _node_link(s.node, g, s.nic, s.nic_count)
            price = s.usd_per_hour * g if s.per_gpu_billing else s.usd_per_hour
            tag = f"x{g}" if s.per_gpu_billing else ""
            out.append(
                Offer(
                    key=f"rent:{s.provider}/{s.instance}{tag}",
                    mode="rent",
                    accelerator=s.accelerator,
                    node=s.node,
                    gpus=g,
                    full_node=g == apn,
                    usd_per_hour=price,
                    capex_usd=None,
                    power_watts=_power(s.node, g),
                    kv_link_bw=bw,
                    kv_link_latency_s=lat,
                    kv_link=link,
                    kv_transport=kind,
                    source=s.source,
                    as_of=s.as_of,
                )
            )
    return out


def _power(node_key: str, g: int) -> float:
    hw = load_hardware()
    node = hw.nodes[node_key]
    return node.node_base_watts + g * (hw.accelerators[node.accelerator].tdp_watts or 0.0)


def buy_offers(accelerators: set[str] | None = None) -> list[Offer]:
    """Every node type that can be bought, full and (8-slot servers) partly filled: 1, 2 or 4 GPUs."""
    hw = load_hardware()
    out: list[Offer] = []
    for node in sorted(hw.nodes.values(), key=lambda n: n.key):
        acc = hw.accelerators[node.accelerator]
        if acc.kind != "gpu" or (accelerators is not None and acc.key not in accelerators):
            continue
        price = purchase_usd(acc.key)
        if node.node_base_usd is None or price is None or price.usd is None or not price.available:
            continue
        apn = node.accelerators_per_node
        fills = sorted({apn, *(g for g in PARTIAL_FILLS if apn == 8 and g < apn)})
        for g in fills:
            bw, lat, link, kind = _node_link(node.key, g)
            out.append(
                Offer(
                    key=f"buy:{node.key}[{g}/{apn}]",
                    mode="buy",
                    accelerator=acc.key,
                    node=node.key,
                    gpus=g,
                    full_node=g == apn,
                    usd_per_hour=None,
                    capex_usd=node.node_base_usd + g * price.usd,
                    power_watts=_power(node.key, g),
                    kv_link_bw=bw,
                    kv_link_latency_s=lat,
                    kv_link=link,
                    kv_transport=kind,
                    source=f"{node.source}; GPU {price.source}",
                    as_of=str(price.as_of),
                )
            )
    return out


def offers(objective: str, accelerators: set[str] | None = None) -> list[Offer]:
    return rent_offers(accelerators) if objective == "hourly" else buy_offers(accelerators)
