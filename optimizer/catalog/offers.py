"""One catalogue of offers: every way a plan can be priced, for every back end (`cheapest`, `fleet`, scenarios).

- **rent**: a cloud instance shape (`hardware/cloud_shapes.yaml`): provider, instance, region, date, GPUs in one
  instance and the whole instance's on-demand $/h. A provider that bills per GPU (`per_gpu_billing`) rents 1, 2, 4
  or 8 GPUs of one machine. So "hourly" has one price per GPU type, provider and instance size, the same for
  every solver.
- **buy**: a server from `nodes.yaml` bought whole, or an 8-slot server partly filled (1, 2 or 4 GPUs): capex =
  node base + the GPUs bought (`prices.yaml`, preferred purchase row); power = node base watts + the GPUs' TDP.

`prices.yaml`'s cloud rows stay the market reference `rigopt catalog gpus` lists (bands, medians, third-party
quotes); plans are priced only from offers a user can actually rent or buy, each naming its provider, region
and date. The KV link of an offer (topology) is added by the fleet layer above (`optimizer/fleet/offers.py`).
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
from optimizer.limits import load_yaml

PARTIAL_FILLS = (1, 2, 4)  # GPUs bought in an 8-slot server besides the full fill
Objective = Literal["capex", "hourly", "power"]


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
class PriceOffer:
    """A unit of hardware a plan or a replica is built from (one instance, or one server), with its price."""

    key: str  # rent:<provider>/<instance>[xG] | buy:<node>[G/slots]
    mode: Literal["rent", "buy"]
    accelerator: str
    node: str  # nodes.yaml key (topology)
    gpus: int  # GPUs in one unit
    full_node: bool  # all the node type's slots: may be joined with others of its kind (multi-node)
    usd_per_hour: float | None  # rent: per unit
    capex_usd: float | None  # buy: per unit
    power_watts: float  # per unit, at TDP
    provider: str  # rent: the cloud; buy: "purchase"
    instance: str | None
    region: str | None
    as_of: str
    source: str
    nic: str | None = None  # rent: the instance's own NIC when it differs from the node type's
    nic_count: int = 1

    def cost(self, objective: str) -> float | None:
        if objective == "hourly":
            return self.usd_per_hour
        if objective == "power":
            return self.power_watts
        return self.capex_usd

    def label(self) -> str:
        """How an answer names the offer: provider, instance, region and date."""
        if self.mode == "buy":
            return f"bought {self.node} ({self.gpus} GPUs), prices as of {self.as_of}"
        where = f", {self.region}" if self.region else ""
        return f"{self.provider} {self.instance}{where}, as of {self.as_of}"


@lru_cache(maxsize=1)
def load_shapes() -> tuple[Shape, ...]:
    path = data_dir("hardware") / "cloud_shapes.yaml"
    try:
        rows = load_yaml(path.read_text(encoding="utf-8"))
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


def unit_power_watts(node_key: str, gpus: int) -> float:
    """Node base watts + `gpus` x the accelerator's TDP (a missing TDP counts as 0 W)."""
    hw = load_hardware()
    node = hw.nodes[node_key]
    return node.node_base_watts + gpus * (hw.accelerators[node.accelerator].tdp_watts or 0.0)


@lru_cache(maxsize=1)
def _all_rent() -> tuple[PriceOffer, ...]:
    hw = load_hardware()
    out: list[PriceOffer] = []
    for s in load_shapes():
        apn = hw.nodes[s.node].accelerators_per_node
        counts = [g for g in (1, 2, 4, 8) if g <= apn] if s.per_gpu_billing else [s.gpus]
        for g in counts:
            out.append(PriceOffer(
                key=f"rent:{s.provider}/{s.instance}" + (f"x{g}" if s.per_gpu_billing else ""),
                mode="rent", accelerator=s.accelerator, node=s.node, gpus=g, full_node=g == apn,
                usd_per_hour=s.usd_per_hour * g if s.per_gpu_billing else s.usd_per_hour, capex_usd=None,
                power_watts=unit_power_watts(s.node, g), provider=s.provider, instance=s.instance,
                region=s.region, as_of=s.as_of, source=s.source, nic=s.nic, nic_count=s.nic_count))
    return tuple(out)


@lru_cache(maxsize=1)
def _all_buy() -> tuple[PriceOffer, ...]:
    hw = load_hardware()
    out: list[PriceOffer] = []
    for node in sorted(hw.nodes.values(), key=lambda n: n.key):
        acc = hw.accelerators[node.accelerator]
        price = purchase_usd(acc.key)
        if node.node_base_usd is None or price is None or price.usd is None or not price.available:
            continue
        apn = node.accelerators_per_node
        for g in fills(node.key):
            out.append(PriceOffer(
                key=f"buy:{node.key}[{g}/{apn}]", mode="buy", accelerator=acc.key, node=node.key, gpus=g,
                full_node=g == apn, usd_per_hour=None, capex_usd=node.node_base_usd + g * price.usd,
                power_watts=unit_power_watts(node.key, g), provider="purchase", instance=None, region=None,
                as_of=str(price.as_of), source=f"{node.source}; GPU {price.source}"))
    return tuple(out)


def rent_offers(accelerators: set[str] | None = None) -> list[PriceOffer]:
    """Every cloud instance shape (per-GPU billing expanded to 1, 2, 4, 8 GPUs)."""
    return [o for o in _all_rent() if accelerators is None or o.accelerator in accelerators]


def buy_offers(accelerators: set[str] | None = None) -> list[PriceOffer]:
    """Every node type that can be bought, full and (8-slot servers) partly filled: 1, 2 or 4 GPUs."""
    return [o for o in _all_buy() if accelerators is None or o.accelerator in accelerators]


def offers(objective: str, accelerators: set[str] | None = None) -> list[PriceOffer]:
    """The offers an objective prices: rented instances for `hourly`, bought servers otherwise."""
    return rent_offers(accelerators) if objective == "hourly" else buy_offers(accelerators)


def _rank(o: PriceOffer, objective: str) -> tuple[float, str]:
    c = o.cost(objective)
    return (c if c is not None else float("inf"), o.key)


@lru_cache(maxsize=4096)
def unit_offer(node_key: str, gpus: int, objective: str) -> PriceOffer | None:
    """The cheapest offer for `gpus` GPUs of node type `node_key` under `objective` (ties: the offer key), None
    when the catalogue neither sells nor rents that unit. The one rule every back end prices a unit by."""
    rows = [o for o in offers(objective) if o.node == node_key and o.gpus == gpus and o.cost(objective) is not None]
    return min(rows, key=lambda o: _rank(o, objective)) if rows else None


def fills(node_key: str) -> list[int]:
    """GPU counts one server of `node_key` can hold: all its slots, or 1, 2 or 4 of an 8-slot server."""
    apn = load_hardware().nodes[node_key].accelerators_per_node
    return sorted({apn, *(g for g in PARTIAL_FILLS if apn == 8 and g < apn)})


def unit_counts(node_key: str, objective: str) -> list[int]:
    """GPU counts of one unit of `node_key` the catalogue offers under `objective` (ascending). Watts are known
    for every fill of every node type, priced or not."""
    if objective == "power":
        return fills(node_key)
    return sorted({o.gpus for o in offers(objective) if o.node == node_key and o.cost(objective) is not None})
