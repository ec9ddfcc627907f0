"""Rich rendering of a `cheapest` result."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from optimizer.solver.search import CheapestResult
from optimizer.units import GB, GiB


def _money(objective: str, v: float | None) -> str:
    if v is None:
        return "-"
    return {"capex": f"${v:,.0f}", "hourly": f"${v:,.2f}/h", "power": f"{v:,.0f} W"}[objective]


def render_cheapest(r: CheapestResult, console: Console) -> None:
    q = r.query
    console.print(f"[bold]cheapest[/bold] {q.model} at {q.context:,} tokens × {q.concurrency}"
                  + (f", ≥ {q.tok_s:g} tok/s per sequence" if q.tok_s else "")
                  + (f", TTFT ≤ {q.ttft_s:g} s" if q.ttft_s else "") + f"; objective {q.objective}"
                  + (f", budget {q.max_budget:,.0f}" if q.max_budget else ""))
    console.print(f"{r.candidates} candidates; solver {r.status}"
                  + (f", bound {_money(r.objective, r.bound)}, gap {r.gap:.2%}" if r.gap is not None else "")
                  + f"; solve {r.solve_s:.2f} s, total {r.total_s:.2f} s")
    p = r.plan
    if p is None:
        console.print("[red]No plan meets every target.[/red]")
        for reason in r.infeasible_reasons:
            console.print(f"  why: {reason}")
        if r.relaxations:
            t = Table(title="Cheapest relaxations")
            for c in ("relax", "cost", "plan"):
                t.add_column(c)
            for x in r.relaxations:
                t.add_row(x.change, _money(r.objective, x.cost), x.plan or "-")
            console.print(t)
        return
    h = p.hardware
    console.print(f"\n[bold green]Plan:[/bold green] {h.n_nodes}× {h.node} ({h.n_nodes * h.gpus_per_node}× "
                  f"{h.accelerator}"
                  + (", owned" if h.owned else "") + f"), {p.engine}, {p.quant}, KV {p.kv_dtype}, "
                  f"TP{p.parallel.tp} PP{p.parallel.pp} DP{p.parallel.dp}"
                  + (f" EP{p.parallel.ep_size}" if p.parallel.ep else ""))
    costs = p.costs
    console.print(f"cost: capex {_money('capex', costs.capex_usd)}, {_money('hourly', costs.usd_per_hour)}, "
                  f"{_money('power', costs.power_watts)}")
    if p.offload.expert_layers_offloaded or p.offload.nvme_layers:
        console.print(f"offload: {p.offload.expert_layers_offloaded} expert layers in host DRAM ({p.offload.mode}), "
                      f"{p.offload.host_bytes / GB:,.1f} GB; host RAM {h.host_dram_bytes / GB:,.0f} GB"
                      + (f" (+{h.extra_dram_bytes / GB:,.0f} GB to buy)" if h.extra_dram_bytes else "")
                      + (f"; {len(p.offload.nvme_layers)} expert layers on NVMe ({p.offload.nvme_bytes / GB:,.0f} GB)"
                         if p.offload.nvme_layers else ""))
    mm = p.memory
    console.print(f"per device: weights {mm.weights_bytes / GiB:,.1f} GiB + KV {mm.kv_bytes / GiB:,.1f} GiB + runtime "
                  f"{mm.runtime_bytes / GiB:,.1f} GiB of {mm.budget_bytes / GiB:,.1f} GiB budget "
                  f"(headroom {mm.headroom_bytes / GiB:,.1f} GiB)")
    s = p.speed
    console.print(f"decode: {s.tok_s_per_seq:,.1f} tok/s per sequence expected (bound {s.tok_s_bound_per_seq:,.1f}); "
                  f"TTFT {s.ttft_s:,.1f} s (bound {s.ttft_bound_s:,.1f}); binding constraint: {p.binding_constraint}")
    for n in p.notes:
        console.print(f"note: {n}")
    if r.alternatives:
        t = Table(title="Next-cheapest alternatives")
        for col in ("cost", "hardware", "engine", "quant", "layout", "offload", "tok/s", "headroom GiB"):
            t.add_column(col)
        for a in r.alternatives:
            t.add_row(_money(r.objective, a.costs.objective_value),
                      f"{a.hardware.n_nodes}× {a.hardware.node}", a.engine, a.quant,
                      f"TP{a.parallel.tp} PP{a.parallel.pp} DP{a.parallel.dp}" + (" EP" if a.parallel.ep else ""),
                      str(a.offload.expert_layers_offloaded)
                      + (f" +{len(a.offload.nvme_layers)} NVMe" if a.offload.nvme_layers else ""),
                      f"{a.speed.tok_s_per_seq:,.1f}",
                      f"{a.memory.headroom_bytes / GiB:,.1f}")
        console.print(t)
