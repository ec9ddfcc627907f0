"""Rich tables for people. Programs use --json."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from optimizer.report.estimate import EstimateResult
from optimizer.units import GB, GiB, fmt_tokens


def _gb(b: float) -> str:
    return f"{b / GB:,.1f}"


def _fit_list(row, limit: int = 5) -> str:
    single = row.fits_single
    multi = [f"{o.count}× {o.accelerator}" for o in sorted(row.fits_multi, key=lambda o: (o.count, o.accelerator))]
    parts = []
    if single:
        parts.append("1× " + ", ".join(single[:limit]) + (" …" if len(single) > limit else ""))
    if multi:
        parts.append(", ".join(multi[:limit]) + (" …" if len(multi) > limit else ""))
    return "; ".join(parts) or "nothing in the catalogue (try offload: rigopt cheapest)"


def _range(low: float | None, high: float | None, iv, fmt: str, unit: str = "") -> str:
    """ " (80% interval 17.0-27.3, 46 rows of llamacpp/nvidia-consumer)" or "" without data."""
    if low is None or high is None or iv is None:
        return ""
    return (f" ({iv.confidence:.0%} interval {low:,{fmt}}-{high:,{fmt}}{unit}; cross-validated, {iv.n_rows} rows of "
            f"{iv.regime})")


def render_estimate(r: EstimateResult, console: Console) -> None:
    m = r.model
    console.print(f"[bold]{m.name}[/bold]  ({m.architecture}, {m.total_params / 1e9:,.1f}B params, "
                  f"{m.active_params / 1e9:,.1f}B active, max context {m.max_context:,})")
    kv = r.kv
    console.print(f"KV cache ({kv.engine}, {kv.kv_dtype}): {kv.per_seq_bytes / GiB:,.2f} GiB per sequence at "
                  f"{r.context:,} tokens ({fmt_tokens(r.context)}); {kv.growth_bytes_per_token:,.1f} B/token growth + "
                  f"{kv.fixed_bytes_per_seq / 2**20:,.1f} MiB fixed; decode reads {kv.read_bytes_per_token / GB:,.3f} "
                  "GB/token")
    for rs in r.recurrent_state or []:
        extra = (f", attention block {rs.vllm_block_size} tokens, {rs.vllm_padding_layers} padding layer(s)"
                 if rs.vllm_block_size else "")
        extra += (f", separate state pool = {rs.sglang_state_pool_share:.0%} of cache memory"
                  if rs.sglang_state_pool_share is not None else "")
        console.print(f"recurrent state ({rs.engine}, conv {rs.conv_dtype} / state {rs.ssm_dtype}, "
                      f"{rs.layers} layers): "
                      f"{rs.recurrent_state_bytes_per_seq / 2**20:,.1f} MiB per running sequence "
                      f"({rs.copies_per_seq:g} × {rs.state_set_bytes / 2**20:,.1f} MiB{extra}), independent of context")
    t = Table(title=f"Memory at {r.context:,} tokens × {r.concurrency} sequence(s)  (GB = 10^9 bytes)")
    hybrid = bool(r.recurrent_state)
    cols = [("quant", "left"), ("engine", "left"), ("weights GB", "right"), ("+ KV GB", "right")]
    cols += [("+ state GB", "right")] if hybrid else []
    cols += [("+ runtime GB", "right"), ("total GB", "right"), ("fits on", "left")]
    for col, j in cols:
        t.add_column(col, justify="left" if j == "left" else "right")
    for row in r.quants:
        cells = [row.quant, row.engine, _gb(row.weights_bytes), _gb(row.kv_bytes)]
        cells += [_gb(row.recurrent_state_bytes)] if hybrid else []
        t.add_row(*cells, _gb(row.runtime_bytes), _gb(row.total_bytes), _fit_list(row))
    console.print(t)
    h = r.hardware
    if h:
        d = h.per_device
        ok = "[green]fits[/green]" if d.fits else "[red]does not fit[/red]"
        console.print(f"\n[bold]{h.count}× {h.accelerator_name}[/bold] ({h.parallel}, {h.quant}, {h.engine}, "
                      f"KV {h.kv_dtype} {h.kv_per_seq_bytes / GiB:,.2f} GiB/seq, node {h.node}): {ok}")
        t2 = Table(title="Per device (busiest)")
        cols2 = ("capacity", "engine budget", "weights", "KV") + (("state",) if hybrid else ()) \
            + ("runtime", "headroom")
        for col in cols2:
            t2.add_column(col + " GiB", justify="right")
        vals = (d.capacity_bytes, d.budget_bytes, d.weights_bytes, d.kv_bytes) \
            + ((d.recurrent_state_bytes,) if hybrid else ()) + (d.runtime_bytes, d.headroom_bytes)
        t2.add_row(*(f"{x / GiB:,.2f}" for x in vals))
        console.print(t2)
        console.print(f"max context at concurrency {r.concurrency}: {h.max_context_tokens:,} tokens; "
                      f"max concurrency at {r.context:,} tokens: {h.max_concurrency}")
        s = h.decode
        tr = h.trust
        console.print(f"decode: expected {s.tok_s_per_seq:,.1f} tok/s per sequence"
                      f"{_range(s.tok_s_per_seq_low, s.tok_s_per_seq_high, tr.decode if tr else None, '.1f')} "
                      f"(bound {s.tok_s_bound_per_seq:,.1f}), "
                      f"{s.tok_s_aggregate:,.1f} tok/s aggregate; binding: {s.binding}")
        console.print(f"prefill of {s.prompt_tokens:,} tokens: TTFT expected {s.ttft_s:,.1f} s"
                      f"{_range(s.ttft_s_low, s.ttft_s_high, tr.prefill if tr else None, '.1f', ' s')} (bound "
                      f"{s.ttft_bound_s:,.1f} s)")
        c = s.cpu_experts
        if c is not None:
            console.print(f"cpu experts ({c.host}, {c.isa}): {c.time_s * 1e3:,.1f} ms per decode step "
                          f"({c.exposed_s * 1e3:,.1f} ms exposed: {c.combine}); binding term: {c.binding}",
                          markup=False)
            console.print(f"  host DRAM bandwidth assumed: {c.dram_bw_bytes_per_s / 1e9:,.1f} GB/s "
                          f"-> {c.dram_s * 1e3:,.1f} ms; basis: {c.dram_bw_basis}", markup=False)
            console.print(f"  CPU compute: {c.cpu_flops_per_s / 1e12:,.1f} TFLOP/s -> {c.compute_s * 1e3:,.1f} ms; "
                          f"prefill experts: {c.prefill_path} (streamed over PCIe {c.prefill_stream_s:,.1f} s vs "
                          f"computed on the CPU {c.prefill_cpu_s:,.1f} s)", markup=False)
        st = h.settings
        eng = [f"max_model_len {st.max_model_len:,}", f"max_num_seqs {st.max_num_seqs:,}",
               f"max_num_batched_tokens {st.max_num_batched_tokens:,}", f"block_size {st.block_size}"]
        if st.gpu_memory_utilization is not None:
            eng.insert(0, f"gpu_memory_utilization {st.gpu_memory_utilization:.3f}")
        if st.mem_fraction_static is not None:
            eng.insert(0, f"mem_fraction_static {st.mem_fraction_static:.3f}")
        console.print(f"engine settings assumed: {', '.join(eng)}")
        sv = h.serving
        if sv is not None:
            load = (f"{sv.concurrency} in flight" if sv.concurrency is not None else f"{sv.rate_rps:g} req/s")
            head = f"serving {sv.isl:,} in / {sv.osl:,} out, {load}"
            if not sv.stable or sv.tpot_s is None or sv.ttft_s is None or sv.ttft_p90_s is None:
                console.print(f"{head}: [red]not sustainable[/red] (binding: {sv.binding})")
            else:
                lo_ms = None if sv.tpot_s_low is None else sv.tpot_s_low * 1e3
                hi_ms = None if sv.tpot_s_high is None else sv.tpot_s_high * 1e3
                thr = _range(sv.output_tok_s_low, sv.output_tok_s_high, tr.throughput if tr else None, ".0f")
                console.print(f"{head}: TPOT {sv.tpot_s * 1e3:,.1f} ms"
                              f"{_range(lo_ms, hi_ms, (tr.tpot or tr.decode) if tr else None, '.1f', ' ms')}"
                              f", TTFT {sv.ttft_s:,.2f} s"
                              f"{_range(sv.ttft_s_low, sv.ttft_s_high, tr.ttft if tr else None, '.2f', ' s')} "
                              f"(p90 {sv.ttft_p90_s:,.2f} s), "
                              f"{sv.request_rate_rps:,.2f} req/s, output {sv.output_tok_s:,.0f} tok/s{thr} "
                              f"({sv.output_tok_s_per_gpu:,.0f}/GPU), total {sv.total_tok_s:,.0f} tok/s "
                              f"({sv.total_tok_s_per_gpu:,.0f}/GPU); {sv.decoding_seqs:,.1f} decoding of "
                              f"{sv.admitted_seqs:,} admitted; prefill {sv.prefill_share:.0%} of engine time; "
                              f"binding: {sv.binding}")
        for n in h.notes:
            console.print(f"note: {n}")
    for w in r.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
