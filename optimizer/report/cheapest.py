"""Rich rendering of a `cheapest` result."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optimizer.solver.plan import Plan
from optimizer.solver.search import CheapestResult
from optimizer.units import GB, GiB


def _money(objective: str, v: float | None) -> str:
    if v is None:
        return "-"
    return {"capex": f"${v:,.0f}", "hourly": f"${v:,.2f}/h", "power": f"{v:,.0f} W"}[objective]


def _fill(p: Plan) -> str:
    """", 4 of 8 slots filled" for a partly filled server bought (a cloud instance is whole as rented)."""
    from optimizer.catalog.hardware import get_node
    h, pr = p.hardware, p.costs.price
    if h.owned or pr is None or pr.offer.startswith("rent:"):
        return ""
    slots = get_node(h.node).accelerators_per_node
    return "" if h.gpus_per_node == slots else f", {h.gpus_per_node} of {slots} slots filled"


def render_cheapest(r: CheapestResult, console: Console) -> None:
    q = r.query
    wl = q.workload
    console.print(f"[bold]cheapest[/bold] {q.model} at {q.context:,} tokens × {q.concurrency}"
                  + (f" (workload {wl.isl:,} in / {wl.osl:,} out"
                     + (f", {wl.rate_rps:g} req/s)" if wl.rate_rps else ", closed loop)") if wl else "")
                  + (f", ≥ {q.tok_s:g} tok/s per sequence" if q.tok_s else "")
                  + (f", TTFT ≤ {q.ttft_s:g} s" if q.ttft_s else "") + f"; objective {q.objective}"
                  + (f", budget {q.max_budget:,.0f}" if q.max_budget else ""))
    console.print(f"{r.candidates} candidates; solver {r.status}"
                  + (f", bound {_money(r.objective, r.bound)}, gap {r.gap:.2%}" if r.gap is not None else "")
                  + f"; solve {r.solve_s:.2f} s, total {r.total_s:.2f} s")
    if q.calibration is not None:  # rigopt calibrate: which of the user's systems the candidates were corrected on
        def factors(e) -> str:
            pairs = (("decode", e.decode, e.decode_runs), ("prefill", e.prefill, e.prefill_runs))
            return "".join(f" {k} ×{v:.2f} ({n} run{'s' if n != 1 else ''})" for k, v, n in pairs if v is not None)
        systems = "; ".join(e.label + factors(e) for e in q.calibration.entries)
        console.print(f"calibration profile {q.calibration.profile}: {systems}")
    p = r.plan
    if r.headline and p is not None:
        console.print(f"headline: {r.headline}")
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
                  f"{h.accelerator}" + _fill(p)
                  + (", owned" if h.owned else "") + f"), {p.engine}, {p.quant}, KV {p.kv_dtype}, "
                  f"TP{p.parallel.tp} PP{p.parallel.pp} DP{p.parallel.dp}"
                  + (f" EP{p.parallel.ep_size}" if p.parallel.ep else ""))
    costs = p.costs
    console.print(f"cost: capex {_money('capex', costs.capex_usd)}, {_money('hourly', costs.usd_per_hour)}, "
                  f"{_money('power', costs.power_watts)}")
    if costs.price is not None:
        pr = costs.price
        where = f" {pr.region}" if pr.region else ""
        console.print(escape(f"priced from: {pr.offer} ({pr.provider}{where}, as of {pr.as_of}; {pr.source})"))
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
    tp = p.trust
    if tp is not None and tp.tok_s_per_seq_low is not None and tp.tok_s_per_seq_high is not None:
        held = ("the targets hold at its low end" if tp.planned_at_low_end
                else "planned on the expected figures (--confidence 0)")
        ttft = (f"; TTFT {tp.ttft_s_low:,.1f}-{tp.ttft_s_high:,.1f} s ({tp.ttft_rows} rows of {tp.ttft_regime})"
                if tp.ttft_s_low is not None and tp.ttft_s_high is not None else "")
        console.print(f"trust: {tp.confidence:.0%} interval of decode {tp.tok_s_per_seq_low:,.1f}-"
                      f"{tp.tok_s_per_seq_high:,.1f} tok/s per sequence ({tp.decode_rows} cross-validated rows of "
                      f"{tp.decode_regime}){ttft}; {held}")
    sv = p.serving
    if sv is not None:
        load = f"{sv.concurrency} in flight" if sv.concurrency is not None else f"{sv.rate_rps:g} req/s"
        console.print(f"serving {sv.isl:,} in / {sv.osl:,} out, {load}: TPOT {sv.tpot_s * 1e3:,.1f} ms "
                      f"({1 / sv.tpot_s:,.1f} tok/s per sequence), TTFT {sv.ttft_s:,.2f} s "
                      f"(p90 {sv.ttft_p90_s:,.2f} s), "
                      f"{sv.request_rate_rps:,.2f} req/s, output {sv.output_tok_s:,.0f} tok/s "
                      f"({sv.output_tok_s_per_gpu:,.0f}/GPU), total {sv.total_tok_s:,.0f} tok/s; "
                      f"prefill {sv.prefill_share:.0%} of engine time")
    if p.spec_decode is not None:
        sd = p.spec_decode
        console.print(f"speculative decoding: {sd.method}, {sd.num_tokens} draft tokens, mean acceptance length "
                      f"{sd.accept_len:.2f}" + (f", draft {sd.draft_model}" if sd.draft_model else "")
                      + f" ({sd.source})")
    if p.settings is not None:
        st = p.settings
        console.print(f"engine settings: max_model_len {st.max_model_len:,}, max_num_seqs {st.max_num_seqs:,}, "
                      f"max_num_batched_tokens {st.max_num_batched_tokens:,}"
                      + (f", gpu_memory_utilization {st.gpu_memory_utilization:.2f}"
                         if st.gpu_memory_utilization else "")
                      + (f", mem_fraction_static {st.mem_fraction_static:.3f}" if st.mem_fraction_static else ""))
    for n in p.notes:
        console.print(f"note: {n}")
    if r.frontier:
        ft = Table(title="Cost-quality frontier: the cheapest plan per quality tier (experts/FFN bits per weight)")
        for col in ("tier", "bits", "cost", "hardware", "engine", "quant", "tok/s", "TTFT s", "headroom GiB"):
            ft.add_column(col)
        for f in r.frontier:
            a = f.plan
            ft.add_row(f.tier + (" ◀" if f.headline else "") + (" ✗" if f.dominated_by else ""),
                       f"{f.expert_bits:.2f}", _money(r.objective, a.costs.objective_value),
                       f"{a.hardware.n_nodes}× {a.hardware.node}", a.engine, a.quant,
                       f"{(1 / a.serving.tpot_s) if a.serving else a.speed.tok_s_per_seq:,.1f}",
                       f"{a.serving.ttft_s if a.serving else a.speed.ttft_s:,.1f}",
                       f"{a.memory.headroom_bytes / GiB:,.1f}")
        console.print(ft)
        for f in r.frontier:
            if f.dominated_by:
                console.print(f"✗ {f.tier}: the {f.dominated_by} tier's cheapest plan costs no more (higher quality "
                              "for the same money or less)")
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
