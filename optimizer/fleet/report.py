"""Text rendering of a fleet result (`rigopt fleet` without --json)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimizer.fleet.solve import Fleet, FleetResult, Pool

if TYPE_CHECKING:
    from rich.console import Console


def _usd(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"${x:,.{digits}f}"


def _tokens(x: float | None) -> str:
    if x is None:
        return "never"
    for unit, f in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
        if x >= f:
            return f"{x / f:,.2f}{unit}"
    return f"{x:,.0f}"


def fleet_lines(f: Fleet, p: float) -> list[str]:
    cost = _usd(f.usd_per_hour) + "/h" if f.objective == "hourly" else _usd(f.capex_usd, 0) + " capex"
    out = [
        f"{f.kind} fleet, {f.gpus} GPUs, {cost} ({f.status}), TTFT p{p * 100:g} {f.ttft_s:.3f} s, "
        f"TPOT {f.tpot_s * 1000:.1f} ms, {f.output_tok_s_per_gpu:,.0f} output tok/s/GPU"
    ]
    for x in f.pools:
        extra = (
            f", KV transfer {x.kv_transfer_s * 1000:.2f} ms over {x.kv_link} ({x.kv_transport})"
            if x.kv_transfer_s is not None
            else ""
        )
        tpot = f"TPOT {x.tpot_s * 1000:.1f} ms" if x.tpot_s is not None else ""  # prefill pools emit no tokens
        tt = f"TTFT {x.ttft_s:.3f} s" if x.role != "decode" else tpot
        if x.role == "aggregated":
            tt += f", {tpot}"
        out.append(
            f"  {x.role:10s} {x.replicas} x [{x.nodes_per_replica}x{x.gpus_per_node} {x.accelerator}] "
            f"{x.offer} {x.engine} {x.quant} {x.layout}: {x.rate_per_replica_rps:.3g} req/s each "
            f"(capacity {x.capacity_rps:.3g}), {tt}{extra}; price {_where(x)} ({x.price_source}, as of {x.price_as_of})"
        )
        if x.kernel_path:
            out.append(f"    {x.kernel_path}")
    return out


def _where(x: Pool) -> str:
    """Provider and region of a pool's offer, as the answer prints them."""
    return x.price_provider + (f" {x.price_region}" if x.price_region else "")


def render_fleet(r: FleetResult, console: Console) -> None:
    from rich.markup import escape

    console.print(
        f"[bold]fleet[/bold] {escape(r.model)}: {r.isl:,} in / {r.osl:,} out at {r.rate_rps:g} req/s, "
        f"TTFT p{r.percentile * 100:g} <= {r.ttft_s:g} s, TPOT <= {r.tpot_s * 1000:g} ms "
        f"({r.candidates} replica candidates, {r.rows} rows, solved in {r.total_s:.1f} s)"
    )
    if r.fleet is None:
        for n in r.notes:
            console.print(f"[red]{escape(n)}[/red]")
        return
    for line in fleet_lines(r.fleet, r.percentile):
        console.print(escape(line), highlight=False, soft_wrap=True)
    if r.other is not None:
        console.print(f"cheapest to {'own' if r.other.objective == 'capex' else 'rent'}:")
        for line in fleet_lines(r.other, r.percentile):
            console.print("  " + escape(line), highlight=False, soft_wrap=True)
    m = r.money
    if m is not None:
        console.print(
            f"money: {_usd(m.usd_per_hour)}/h, {_usd(m.usd_per_m_in, 4)}/M input, "
            f"{_usd(m.usd_per_m_out, 4)}/M output, {_usd(m.usd_per_m_blended, 4)}/M blended; "
            f"own {_usd(m.own_monthly_usd, 0)}/month ({m.amortize_months:g}-month amortisation + power at "
            f"${m.usd_per_kwh:g}/kWh), rent 24x7 {_usd(m.rent_monthly_usd, 0)}/month; capacity "
            f"{_tokens(m.monthly_capacity_tokens)} tokens/month",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            f"break-even (tokens/month): own beats rent above {_tokens(m.own_beats_rent_above_tokens_per_month)}"
            + (
                f"; own beats the API ({_usd(m.api_usd_per_m_blended, 4)}/M blended) above "
                f"{_tokens(m.own_beats_api_above_tokens_per_month)}; renting 24x7 beats it above "
                f"{_tokens(m.rent_24x7_beats_api_above_tokens_per_month)}"
                if m.api_usd_per_m_blended is not None
                else ""
            ),
            highlight=False,
            soft_wrap=True,
        )
        for n in m.notes:
            console.print(f"note: {escape(n)}", highlight=False)
    for n in r.notes:
        console.print(f"note: {escape(n)}", highlight=False)
