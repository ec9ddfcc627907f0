"""Inventories of mixed hardware: one box or several (`box1: ...; box2: ...`), each with its own GPUs (any mix of
types, in the order given = CUDA device order), host DRAM, NVMe and host platform.

    "1x rtx-5090, 2x rtx-4090, 1x rtx-3090, 1x rtx-a6000, 192GB ddr5, 2TB nvme"
    "box1: 2x rtx-4090, 128GB ddr5; box2: 1x rtx-3090, 64GB ddr4, 1TB nvme gen5; net: 10gbe"

Items (comma separated): `N x GPU` or `GPU` (catalogue keys or aliases), `SIZE ddr4|ddr5|dram|ram`, `SIZE nvme
[gen4|gen5]`, `host KEY` (a hosts.yaml platform) or `host SPEC` (a host spec, optimizer/catalog/host_spec.py,
its KEY=VALUE fields following it, as `rigopt detect` writes it), `psu WATTS`. Unknown names are one InputError.

Several boxes: the FIRST box runs the engine (llama.cpp's `llama-server`, which serves HTTP, embeds the tokens and
samples); every other box runs `ggml-rpc-server` for its GPUs. A `net: LINK` part (1gbe, 2.5gbe, 10gbe, 25gbe, 100gbe,
thunderbolt4, thunderbolt5, usb4 or an interconnects.yaml key) names the network every box is on; without it the
network is DEFAULT_BOX_LINK.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from optimizer.catalog.hardware import get_accelerator, get_host, load_hardware
from optimizer.catalog.hardware_schema import Accelerator, HostPlatform
from optimizer.catalog.host_spec import join_host_items, parse_host, platform_host
from optimizer.errors import CatalogError, InputError
from optimizer.layout import CpuHost
from optimizer.limits import MAX_BOX_GPUS, MAX_BOXES, MAX_INVENTORY_CHARS, check_number, clip_for_message
from optimizer.units import parse_bytes

# Host platform assumed from the DRAM generation when no `host KEY` is given (hosts.yaml rows)
DEFAULT_HOST = {"ddr5": "desktop-am5-2ch-ddr5", "ddr4": "desktop-am4-2ch-ddr4"}
# NVMe drive class assumed for `SIZE nvme [genN]` (storage.yaml rows: read bandwidth; capacity is the stated size)
NVME_CLASS = {"gen4": "nvme-gen4-x4", "gen5": "nvme-gen5-x4"}
# Network between boxes (llama.cpp RPC): interconnects.yaml row. Default: 1 GbE, the slowest onboard NIC of current
# desktop boards (the eth-1g row cites an AM5 board that ships it; stated in every multi-box plan that relies on it),
# so a plan never counts on a faster network than the user said they have.
DEFAULT_BOX_LINK = "eth-1g"
# `net:` names -> interconnects.yaml keys (any key of these kinds is accepted as well)
NET_ALIASES = {
    "1gbe": "eth-1g",
    "1g": "eth-1g",
    "2.5gbe": "eth-2p5g",
    "2.5g": "eth-2p5g",
    "10gbe": "eth-10g",
    "10g": "eth-10g",
    "25gbe": "eth-25g",
    "25g": "eth-25g",
    "100gbe": "eth-100g",
    "100g": "eth-100g",
}
NET_KINDS = ("ethernet", "roce", "infiniband", "thunderbolt", "usb4")
MAX_BOX_NAME = 32


@dataclass(frozen=True)
class Gpu:
    """One physical device: `cuda` is its index inside its box (CUDA_VISIBLE_DEVICES order = inventory order)."""

    uid: str  # "box0/cuda1"
    box: int
    cuda: int
    acc: Accelerator
    owned: bool = True
    price_usd: float = 0.0  # purchase price (0 for owned)


@dataclass(frozen=True)
class Box:
    name: str
    gpus: tuple[Gpu, ...]
    host: HostPlatform
    dram_bytes: int
    nvme_bytes: int = 0
    nvme_key: str | None = None
    psu_watts: float | None = None
    cpu: CpuHost | None = None  # the host as given (`mixed --host`); None: one socket of the `host` row

    @property
    def cpu_host(self) -> CpuHost:
        """The CPU that computes this box's host-resident experts."""
        return self.cpu if self.cpu is not None else platform_host(self.host)

    @property
    def nvme_bw(self) -> float:
        return load_hardware().storage[self.nvme_key].read_bw_bytes_per_s if self.nvme_key else 0.0


@dataclass(frozen=True)
class Inventory:
    boxes: tuple[Box, ...]
    link: str = DEFAULT_BOX_LINK
    text: str = ""
    link_given: bool = False  # `net:` was in the inventory (else DEFAULT_BOX_LINK is assumed)

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return tuple(g for b in self.boxes for g in b.gpus)

    def describe(self) -> str:
        parts = []
        for b in self.boxes:
            counts: dict[str, int] = {}
            for g in b.gpus:
                counts[g.acc.key] = counts.get(g.acc.key, 0) + 1
            s = ", ".join(f"{n}x {k}" for k, n in counts.items())
            s += f", {b.dram_bytes / 1e9:.0f} GB DRAM ({b.host.key})"
            if b.nvme_bytes:
                s += f", {b.nvme_bytes / 1e12:.1f} TB NVMe"
            parts.append(f"{b.name}: {s}" if len(self.boxes) > 1 else s)
        if len(self.boxes) > 1:
            parts.append(f"net: {self.link}")
        return "; ".join(parts)


def _acc(name: str) -> Accelerator:
    try:
        return get_accelerator(name)
    except CatalogError as e:
        raise InputError(f"inventory: {e}") from None


_GPU = re.compile(r"^(\d+)\s*[x×*]\s*(.+)$", re.I)
_SIZE = r"(\d+(?:\.\d+)?)\s*([kmgt]i?b)"
_DRAM = re.compile(rf"^{_SIZE}\s*(ddr4|ddr5|dram|ram|memory)?$", re.I)
_NVME = re.compile(rf"^{_SIZE}\s*nvme(?:\s+(gen4|gen5))?$", re.I)
_HOST = re.compile(r"^host\s+(\S.*)$", re.I)
_PSU = re.compile(r"^psu\s+(\d+(?:\.\d+)?)\s*w?$", re.I)


def _box(name: str, index: int, text: str) -> Box:
    gpus: list[Accelerator] = []
    dram = nvme = 0
    dram_kind = None
    nvme_key = None
    host = None
    cpu = None
    psu = None
    for part in join_host_items([p.strip() for p in text.split(",") if p.strip()]):
        if m := _NVME.match(part):
            nvme += parse_bytes(m.group(1) + m.group(2))
            nvme_key = NVME_CLASS[(m.group(3) or "gen4").lower()]
        elif m := _DRAM.match(part):
            dram += parse_bytes(m.group(1) + m.group(2))
            kind = (m.group(3) or "").lower()
            if kind in DEFAULT_HOST:
                dram_kind = kind
        elif m := _HOST.match(part):
            text = m.group(1).strip()
            if text in load_hardware().hosts:
                host = get_host(text)
            else:  # a host spec: its CPU's catalogue row prices the box, the spec drives the CPU-expert physics
                spec = parse_host(text)
                cpu = spec.resolve()
                host = spec.platform()
                if host is None:
                    raise InputError(f"inventory: host '{clip_for_message(spec.cpu)}' is not a catalogue CPU "
                                     "platform; give a hardware/hosts.yaml key for the box")
        elif m := _PSU.match(part):
            psu = check_number(float(m.group(1)), "inventory: psu watts", 1.0, 1e6)
        elif m := _GPU.match(part):
            n = int(m.group(1)) if len(m.group(1)) <= 6 else MAX_BOX_GPUS + 1
            if not 1 <= n <= MAX_BOX_GPUS:
                raise InputError(f"inventory: '{clip_for_message(part)}': device count must be between 1 and "
                                 f"{MAX_BOX_GPUS}")
            gpus += [_acc(m.group(2).strip())] * n
        else:
            gpus.append(_acc(part))
        if len(gpus) > MAX_BOX_GPUS:
            raise InputError(f"inventory {name!r}: more than {MAX_BOX_GPUS} accelerators in one box")
    if not gpus:
        raise InputError(f"inventory {name!r} names no accelerator: use e.g. '1x rtx-4090, 1x rtx-3090, 128GB ddr5'")
    for a in gpus:
        if a.kind != "gpu":
            raise InputError(f"inventory: {a.key} is a unified-memory system, not a card for a mixed box")
    host = host or get_host(DEFAULT_HOST[dram_kind or "ddr5"])
    if dram > host.max_dram_bytes * 1.0001 * 1.1:  # marketed GB vs binary DIMM sizes
        raise InputError(
            f"inventory {name!r}: {dram / 1e9:.0f} GB DRAM exceeds what {host.key} holds "
            f"({host.max_dram_bytes / 2**30:.0f} GiB)"
        )
    devs = tuple(Gpu(uid=f"{name}/cuda{i}", box=index, cuda=i, acc=a) for i, a in enumerate(gpus))
    return Box(name=name, gpus=devs, host=host, dram_bytes=dram, nvme_bytes=nvme, nvme_key=nvme_key, psu_watts=psu,
               cpu=cpu)


def network_link(name: str) -> str:
    """`net:` value -> interconnects.yaml key (an alias or a key of a network kind)."""
    name = name.strip()
    key = NET_ALIASES.get(name.lower(), name.lower())
    row = load_hardware().interconnects.get(key)
    if row is None or row.kind not in NET_KINDS:
        raise InputError(
            f"inventory: unknown network {name[:40]!r} between boxes (use {', '.join(sorted(set(NET_ALIASES)))} "
            f"or an interconnects.yaml key of kind {'/'.join(NET_KINDS)})"
        )
    return key


def parse_inventory(text: str) -> Inventory:
    """Parse an inventory string (see module doc)."""
    if isinstance(text, str) and len(text) > MAX_INVENTORY_CHARS:
        raise InputError(f"inventory: {len(text):,} characters, more than the limit of {MAX_INVENTORY_CHARS:,}")
    if not text or not text.strip():
        raise InputError("empty inventory: use e.g. '1x rtx-4090, 1x rtx-3090, 128GB ddr5'")
    chunks = [c.strip() for c in text.split(";") if c.strip()]
    link, link_given = DEFAULT_BOX_LINK, False
    nets = [c for c in chunks if re.match(r"^net\s*:", c, re.I)]
    if len(nets) > 1:
        raise InputError("inventory: `net:` given twice (one network joins all boxes)")
    if nets:
        link, link_given = network_link(nets[0].split(":", 1)[1]), True
        chunks = [c for c in chunks if c not in nets]
    if not chunks:
        raise InputError("inventory names no box: use e.g. 'box1: 2x rtx-4090, 128GB ddr5; box2: 1x rtx-3090'")
    if len(chunks) > MAX_BOXES:
        raise InputError(f"inventory: {len(chunks):,} boxes, more than the limit of {MAX_BOXES}")
    boxes = []
    names: set[str] = set()
    for i, c in enumerate(chunks):
        m = re.match(r"^([A-Za-z][A-Za-z0-9_-]*)\s*:\s*(.*)$", c)
        name, body = (m.group(1), m.group(2)) if m else (f"box{i}" if len(chunks) > 1 else "box0", c)
        if len(name) > MAX_BOX_NAME:
            raise InputError(f"inventory: box name {name[:MAX_BOX_NAME]!r}... is longer than {MAX_BOX_NAME} characters")
        if name in names:
            raise InputError(f"inventory: box name {name!r} given twice")
        names.add(name)
        boxes.append(_box(name, i, body))
    return Inventory(boxes=tuple(boxes), text=text, link=link, link_given=link_given)
