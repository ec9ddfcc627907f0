"""Load, validate and query the hardware catalogue in `hardware/*.yaml`."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from optimizer.cache import BoundedCache, memoize
from optimizer.catalog.hardware_schema import (
    Accelerator,
    HardwareCatalog,
    HostPlatform,
    Interconnect,
    NodeType,
    Price,
    Storage,
)
from optimizer.catalog.paths import data_dir
from optimizer.errors import CatalogError
from optimizer.limits import load_yaml

M = TypeVar("M", bound=BaseModel)

_FILES: dict[str, tuple[str, type[Any]]] = {
    "accelerators": ("accelerators.yaml", Accelerator),
    "interconnects": ("interconnects.yaml", Interconnect),
    "hosts": ("hosts.yaml", HostPlatform),
    "storage": ("storage.yaml", Storage),
    "nodes": ("nodes.yaml", NodeType),
}


# ---------------------------------------------------------------- loading

def _read_list(path: Path) -> list:
    if not path.is_file():
        raise CatalogError(f"hardware catalogue file missing: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path.name}: not valid YAML: {exc}") from exc
    if not isinstance(data, list):
        raise CatalogError(f"{path.name}: expected a YAML list of entries at top level")
    return data


def _entry_name(raw: object, index: int) -> str:
    if isinstance(raw, dict):
        for field in ("key", "item"):
            if isinstance(raw.get(field), str):
                extra = f" {raw.get('provider')}" if field == "item" and raw.get("provider") else ""
                return f"'{raw[field]}'{extra} (#{index})"
    return f"#{index}"


def _validate(path: Path, model: type[M]) -> list[M]:
    rows = []
    for i, raw in enumerate(_read_list(path)):
        try:
            rows.append(model.model_validate(raw))
        except ValidationError as exc:
            problems = "; ".join(
                f"field '{'.'.join(map(str, e['loc'])) or '(entry)'}': {e['msg']}" for e in exc.errors()
            )
            raise CatalogError(f"{path.name}: entry {_entry_name(raw, i)}: {problems}") from exc
    return rows


def _keyed(fname: str, rows: list[M]) -> dict[str, M]:
    out: dict[str, M] = {}
    for row in rows:
        if row.key in out:  # type: ignore[attr-defined]
            raise CatalogError(f"{fname}: duplicate key '{row.key}'")  # type: ignore[attr-defined]
        out[row.key] = row  # type: ignore[attr-defined]
    return out


def _check_refs(cat: HardwareCatalog) -> None:
    def need(fname: str, entry: str, field: str, value: str | None, table: dict) -> None:
        if value is not None and value not in table:
            close = difflib.get_close_matches(value, list(table), n=3)
            raise CatalogError(f"{fname}: entry '{entry}': field '{field}' refers to unknown '{value}'", close)

    names: dict[str, str] = {}
    for a in cat.accelerators.values():
        need("accelerators.yaml", a.key, "scaleup", a.scaleup, cat.interconnects)
        need("accelerators.yaml", a.key, "host_link", a.host_link, cat.interconnects)
        for name in [a.key, *a.aliases]:
            norm = _norm(name)
            if names.get(norm, a.key) != a.key:
                raise CatalogError(f"accelerators.yaml: entry '{a.key}': alias '{name}' already names '{names[norm]}'")
            names[norm] = a.key
    for n in cat.nodes.values():
        need("nodes.yaml", n.key, "accelerator", n.accelerator, cat.accelerators)
        need("nodes.yaml", n.key, "host", n.host, cat.hosts)
        need("nodes.yaml", n.key, "nic", n.nic, cat.interconnects)
        need("nodes.yaml", n.key, "nvme", n.nvme, cat.storage)
        unified = cat.accelerators[n.accelerator].kind == "unified"
        if unified != (n.scaleup_domain == "unified"):
            raise CatalogError(f"nodes.yaml: entry '{n.key}': field 'scaleup_domain' must be 'unified' "
                               "exactly when the accelerator is a unified-memory part")
    for p in cat.prices:
        table = cat.nodes if p.unit == "per_node" else cat.accelerators
        need("prices.yaml", f"{p.item} {p.provider or ''}".strip(), "item", p.item, table)


@memoize("catalog.hardware", maxsize=1)
def load_hardware() -> HardwareCatalog:
    """Load and validate every hardware file; cached. Raises CatalogError naming file, entry, field."""
    root = data_dir("hardware")
    tables = {name: _keyed(fname, _validate(root / fname, model)) for name, (fname, model) in _FILES.items()}
    cat = HardwareCatalog(**tables, prices=_validate(root / "prices.yaml", Price))
    _check_refs(cat)
    return cat


# ---------------------------------------------------------------- lookups

def _norm(name: str) -> str:
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _compact(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


def _names(table: dict[str, Any], aliases: dict[str, list[str]] | None) -> dict[str, str]:
    """Normalised name (keys, then aliases) -> key."""
    names = {_norm(k): k for k in table}
    for target, al in (aliases or {}).items():
        names.update({_norm(a): target for a in al})
    return names


# the normalised names of a table, keyed by its keys and aliases (content): built once per table, not per lookup
_NAMES: BoundedCache[tuple[object, ...], dict[str, str]] = BoundedCache("catalog.lookup_names", 64)


def _lookup(kind: str, table: dict[str, M], name: str, aliases: dict[str, list[str]] | None = None) -> M:
    from optimizer.limits import MAX_NAME_CHARS, clip_for_message
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise CatalogError(f"unknown {kind} '{clip_for_message(name, 40)}' (names have at most {MAX_NAME_CHARS} "
                           "characters)")
    names = _NAMES.get_or_compute((kind, tuple(table), tuple((t, tuple(a)) for t, a in (aliases or {}).items())),
                                  lambda: _names(table, aliases))
    key = names.get(_norm(name))
    if key is None:
        compact: dict[str, set[str]] = {}
        for n, k in names.items():
            compact.setdefault(_compact(n), set()).add(k)
        hits = compact.get(_compact(name), set())
        key = next(iter(hits)) if len(hits) == 1 else None
    if key is None:
        close = difflib.get_close_matches(_norm(name), list(names), n=4, cutoff=0.5)
        suggestions = list(dict.fromkeys(names[c] for c in close))
        raise CatalogError(f"unknown {kind} '{clip_for_message(name)}'", suggestions)
    return table[key]


def get_accelerator(name: str) -> Accelerator:
    accs = load_hardware().accelerators
    return _lookup("accelerator", accs, name, {k: a.aliases for k, a in accs.items()})


def get_node(name: str) -> NodeType:
    return _lookup("node type", load_hardware().nodes, name)


def get_host(name: str) -> HostPlatform:
    return _lookup("host platform", load_hardware().hosts, name)


def get_interconnect(name: str) -> Interconnect:
    return _lookup("interconnect", load_hardware().interconnects, name)


def get_storage(name: str) -> Storage:
    return _lookup("storage device", load_hardware().storage, name)


# ---------------------------------------------------------------- prices

def _date_key(as_of: str) -> str:
    return as_of if len(as_of) == 10 else as_of + "-00"


def purchase_usd(item_key: str) -> Price | None:
    """Preferred purchase row: non-estimate first, then newest as_of, then lowest usd, then source."""
    rows = [p for p in load_hardware().prices if p.kind == "purchase" and p.item == item_key]
    if not rows:
        return None
    return min(rows, key=lambda p: (p.estimate, _neg_date(p.as_of), p.usd, p.source))


def _neg_date(as_of: str) -> tuple[int, ...]:
    return tuple(-int(x) for x in _date_key(as_of).split("-"))


def cloud_usd_per_gpu_hour(accel_key: str) -> Price | None:
    """Cheapest on-demand (non-spot) per-GPU cloud row; ties: non-estimate, newest, provider, instance."""
    rows = [p for p in load_hardware().prices
            if p.kind == "cloud" and p.unit == "per_gpu" and not p.spot and p.item == accel_key]
    if not rows:
        return None
    return min(rows, key=lambda p: (p.usd_per_hour, p.estimate, _neg_date(p.as_of),
                                    p.provider or "", p.instance or "", p.source))


def node_capex_usd(node_key: str, include_unavailable: bool = False) -> float | None:
    """node_base_usd + accelerators_per_node x preferred accelerator purchase price; None if unknown, or if the
    accelerator can no longer be bought (price row `available: false`) unless include_unavailable."""
    node = load_hardware().nodes.get(node_key) or get_node(node_key)
    price = purchase_usd(node.accelerator)
    if node.node_base_usd is None or price is None or price.usd is None:
        return None
    if not price.available and not include_unavailable:
        return None
    return node.node_base_usd + node.accelerators_per_node * price.usd


def node_power_watts(node_key: str) -> float:
    """node_base_watts + accelerators_per_node x TDP (a missing TDP counts as 0 W)."""
    cat = load_hardware()
    node = cat.nodes.get(node_key) or get_node(node_key)
    tdp = cat.accelerators[node.accelerator].tdp_watts or 0.0
    return node.node_base_watts + node.accelerators_per_node * tdp
