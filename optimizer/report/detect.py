"""`rigopt detect`: the local machine as a table and as the `--owned` inventory string."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optimizer.detect import Machine, detect
from optimizer.errors import InputError


def _gb(b: int | None) -> str:
    return f"{b / 1e9:,.1f} GB" if b else "?"


def _link(gen: int | None, width: int | None) -> str:
    return f"Gen{gen} x{width}" if gen and width else (f"Gen{gen}" if gen else (f"x{width}" if width else "?"))


def render_detect(m: Machine, console: Console) -> None:
    if m.gpus:
        t = Table(title="Accelerators (GB = 10^9 bytes)")
        for col in ("#", "name", "memory", "PCIe max", "PCIe now", "catalogue key", "how", "source"):
            t.add_column(col)
        for g in m.gpus:
            t.add_row(str(g.index), escape(g.name), _gb(g.memory_bytes), _link(g.pcie_gen_max, g.pcie_width_max),
                      _link(g.pcie_gen_current, g.pcie_width_current), g.catalogue_key or "unknown", escape(g.match),
                      g.source)
        console.print(t)
    c, mem = m.cpu, m.memory
    console.print(f"CPU: {escape(c.model or '?')}, {c.sockets or '?'} socket(s), {c.cores or '?'} cores, "
                  f"{c.threads or '?'} threads ({c.source or 'not read'})")
    dimms = (f"; {mem.dimms} DIMM(s) {_gb(mem.installed_bytes)} installed, {mem.ddr or '?'}"
             f"{f'-{mem.speed_mt_s}' if mem.speed_mt_s else ''}, {mem.channels or '?'} channel(s)") if mem.dimms else ""
    console.print(f"Memory: {_gb(mem.total_bytes)} usable{dimms} ({mem.source or 'not read'})")
    for n in m.nvme:
        console.print(f"NVMe {n.name}: {escape(n.model or '?')}, {_gb(n.size_bytes)}, "
                      f"{_link(n.pcie_gen, n.pcie_width)}")
    for u in m.unknown:
        console.print(f"not in the catalogue (left out of the inventory): {escape(u)}")
    for u in m.unread:
        console.print(f"could not read: {escape(u)}")
    if m.host:
        console.print(f"host (for --host): {escape(m.host)}")
    for u in m.host_unknown:
        console.print(f"host field not read: {escape(u)}")
    if m.inventory:
        console.print(f"inventory (for --owned): {escape(m.inventory)}")
    else:
        console.print("inventory: none (no accelerator of the catalogue was found on this machine)")


def local_inventory() -> str:
    """The detected machine as an `--owned` string (`--owned local`), or one InputError saying why there is none."""
    m = detect()
    if m.inventory is None:
        why = "; ".join(m.unknown + m.unread)[:200] or "nothing detected"
        raise InputError(f"--owned local: no catalogue accelerator detected on this machine ({why}); "
                         "run `rigopt detect` for details or give the inventory, e.g. '2x rtx-4090, 128GB ddr5'")
    return m.inventory
