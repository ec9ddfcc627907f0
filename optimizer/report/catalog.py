"""`rigopt catalog models|gpus|nodes`: listings with sources."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.table import Table

from optimizer.catalog.hardware import cloud_usd_per_gpu_hour, load_hardware, node_capex_usd, purchase_usd
from optimizer.catalog.models import load_cards
from optimizer.units import GB


class _L(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelEntry(_L):
    key: str
    name: str
    hf_id: str
    aliases: list[str]
    total_params: float | None
    active_params: float | None
    checkpoint_bytes: int | None
    checkpoint_source: str | None
    config_source: str
    smaller_alternative: bool


class GpuEntry(_L):
    key: str
    name: str
    kind: str
    memory_bytes: int
    memory_usable_bytes: int
    memory_bw_bytes_per_s: float
    bf16_flops: float
    fp8_flops: float | None
    fp4_flops: float | None
    purchase_usd: float | None
    purchase_as_of: str | None
    cloud_usd_per_hour: float | None
    cloud_as_of: str | None
    source: str
    estimate: bool


class NodeEntry(_L):
    key: str
    name: str
    accelerator: str
    accelerators_per_node: int
    scaleup_domain: str
    scaleup_domain_size: int
    dram_bytes: int
    capex_usd: float | None
    source: str


class Listing(_L):
    models: list[ModelEntry] = []
    gpus: list[GpuEntry] = []
    nodes: list[NodeEntry] = []


def list_models() -> Listing:
    return Listing(models=[ModelEntry(key=c.key, name=c.name, hf_id=c.hf_id, aliases=c.aliases,
                                      total_params=c.total_params, active_params=c.active_params,
                                      checkpoint_bytes=c.checkpoint_bytes, checkpoint_source=c.checkpoint_source,
                                      config_source=c.config_source, smaller_alternative=c.smaller_alternative)
                           for c in load_cards().values()])


def list_gpus() -> Listing:
    out = []
    for a in load_hardware().accelerators.values():
        p, c = purchase_usd(a.key), cloud_usd_per_gpu_hour(a.key)
        out.append(GpuEntry(key=a.key, name=a.name, kind=a.kind, memory_bytes=a.memory_bytes,
                            memory_usable_bytes=a.memory_usable_bytes, memory_bw_bytes_per_s=a.memory_bw_bytes_per_s,
                            bf16_flops=a.bf16_flops, fp8_flops=a.fp8_flops, fp4_flops=a.fp4_flops,
                            purchase_usd=p.usd if p else None, purchase_as_of=p.as_of if p else None,
                            cloud_usd_per_hour=c.usd_per_hour if c else None, cloud_as_of=c.as_of if c else None,
                            source=a.source, estimate=a.estimate))
    return Listing(gpus=out)


def list_nodes() -> Listing:
    return Listing(nodes=[NodeEntry(key=n.key, name=n.name, accelerator=n.accelerator,
                                    accelerators_per_node=n.accelerators_per_node, scaleup_domain=n.scaleup_domain,
                                    scaleup_domain_size=n.scaleup_domain_size, dram_bytes=n.dram_bytes,
                                    capex_usd=node_capex_usd(n.key), source=n.source)
                          for n in load_hardware().nodes.values()])


def render_models(l: Listing, console: Console) -> None:
    t = Table(title="Models")
    for c in ("key", "params", "active", "checkpoint GB", "aliases", "config source"):
        t.add_column(c)
    for m in l.models:
        t.add_row(m.key, f"{m.total_params / 1e9:,.1f}B" if m.total_params else "?",
                  f"{m.active_params / 1e9:,.1f}B" if m.active_params else "?",
                  f"{m.checkpoint_bytes / GB:,.2f}" if m.checkpoint_bytes else "-", ", ".join(m.aliases),
                  m.config_source[:60])
    console.print(t)


def render_gpus(l: Listing, console: Console) -> None:
    t = Table(title="Accelerators (GB = 10^9 bytes; usable = what a runtime can allocate)")
    for c in ("key", "memory GB", "usable GB", "BW TB/s", "BF16 TFLOPS", "FP8", "FP4", "buy USD", "cloud $/h",
              "source"):
        t.add_column(c)
    for g in l.gpus:
        t.add_row(g.key, f"{g.memory_bytes / GB:,.0f}", f"{g.memory_usable_bytes / GB:,.1f}",
                  f"{g.memory_bw_bytes_per_s / 1e12:,.3f}", f"{g.bf16_flops / 1e12:,.0f}",
                  f"{g.fp8_flops / 1e12:,.0f}" if g.fp8_flops else "-",
                  f"{g.fp4_flops / 1e12:,.0f}" if g.fp4_flops else "-",
                  f"{g.purchase_usd:,.0f}" if g.purchase_usd else "-",
                  f"{g.cloud_usd_per_hour:,.2f}" if g.cloud_usd_per_hour else "-", g.source[:40])
    console.print(t)


def render_nodes(l: Listing, console: Console) -> None:
    t = Table(title="Node types")
    for c in ("key", "accelerators", "fast domain", "DRAM GB", "capex USD", "source"):
        t.add_column(c)
    for n in l.nodes:
        t.add_row(n.key, f"{n.accelerators_per_node}× {n.accelerator}", f"{n.scaleup_domain} ({n.scaleup_domain_size})",
                  f"{n.dram_bytes / GB:,.0f}", f"{n.capex_usd:,.0f}" if n.capex_usd else "-", n.source[:40])
    console.print(t)
