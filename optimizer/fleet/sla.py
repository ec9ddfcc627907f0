"""The SLA form of the `cheapest` question, shared by `rigopt cheapest` and scenario files (`rigopt solve`), so
both ask the fleet solver the same thing.

A question is a fleet question when it gives a TPOT SLA (`--tpot` / `tpot_s`), a TTFT percentile (`--percentile`
/ `percentile`), or a request rate with both SLAs in the older form (`--rate` with `--ttft` and `--tok-s` > 0,
where the TPOT SLA is 1 / tok_s). Everything else stays the single-deployment `cheapest` question (a rate with
one target or none is still sized as one deployment, as before).
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.errors import InputError
from optimizer.estimate.kv import check_engine
from optimizer.fleet.money import ApiPrice
from optimizer.fleet.solve import DEFAULT_ENGINES, DEFAULT_QUANTS, FleetQuery

FLEET_ENGINES = ("vllm", "sglang")


@dataclass(frozen=True)
class SlaFields:
    """The fields of one question that the fleet form reads (None = not given)."""

    model: str
    isl: int | None = None
    osl: int | None = None
    rate_rps: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    tok_s: float = 0.0
    percentile: float | None = None  # percent, 50 .. 99.9
    objective: str = "capex"
    gpus: tuple[str, ...] | None = None
    engines: tuple[str, ...] | None = None
    quants: tuple[str, ...] | None = None
    time_limit_s: float | None = None
    api_price: ApiPrice | None = None
    disagg: bool | None = None
    amortize_months: float | None = None
    usd_per_kwh: float | None = None


def wants_fleet(f: SlaFields) -> bool:
    return (
        f.tpot_s is not None
        or f.percentile is not None
        or (f.rate_rps is not None and f.ttft_s is not None and f.tok_s > 0)
    )


def fleet_query(f: SlaFields, names: dict[str, str] | None = None) -> FleetQuery:
    """The FleetQuery of an SLA-form question; `names` maps field names to how the user spelled them (CLI options
    or scenario keys) for the error messages."""
    n = {
        "isl": "isl",
        "osl": "osl",
        "rate_rps": "rate_rps",
        "ttft_s": "ttft_s",
        "tpot_s": "tpot_s",
        "tok_s": "tok_s",
        "percentile": "percentile",
        "objective": "objective",
        "engines": "engines",
        **(names or {}),
    }
    missing = [n[k] for k in ("isl", "osl", "rate_rps", "ttft_s") if getattr(f, k) is None]
    if f.tpot_s is None and not f.tok_s > 0:
        missing.append(n["tpot_s"])
    if missing:
        raise InputError(
            f"the SLA form (the cheapest fleet for a request rate) needs {', '.join(missing)}: give "
            f"{n['isl']}, {n['osl']}, {n['rate_rps']}, {n['ttft_s']} and {n['tpot_s']} (or {n['tok_s']})"
        )
    tpot = f.tpot_s
    if f.tok_s > 0:
        if tpot is not None and abs(tpot * f.tok_s - 1.0) > 1e-9:
            raise InputError(f"{n['tpot_s']} {tpot:g} s and {n['tok_s']} {f.tok_s:g} disagree: give one of them")
        tpot = 1.0 / f.tok_s
    if f.objective not in ("capex", "hourly"):
        raise InputError(f"{n['objective']}: the fleet solver minimises capex (buy) or hourly (rent), "
                         f"got '{f.objective}'")
    engines = DEFAULT_ENGINES if f.engines is None else tuple(dict.fromkeys(check_engine(e) for e in f.engines))
    bad = [e for e in engines if e not in FLEET_ENGINES]
    if bad:
        raise InputError(f"{n['engines']}: fleets are planned for {' and '.join(FLEET_ENGINES)}, not {', '.join(bad)}")
    assert f.isl is not None and f.osl is not None and f.rate_rps is not None and f.ttft_s is not None
    assert tpot is not None
    pct = 90.0 if f.percentile is None else f.percentile
    if not 50.0 <= pct <= 99.9:
        raise InputError(f"{n['percentile']} must be between 50 and 99.9, got {pct:g}")
    return FleetQuery(
        model=f.model,
        isl=f.isl,
        osl=f.osl,
        rate_rps=f.rate_rps,
        ttft_s=f.ttft_s,
        tpot_s=tpot,
        percentile=pct / 100.0,
        objective=f.objective,
        gpus=f.gpus,
        engines=engines,
        quants=DEFAULT_QUANTS if f.quants is None else tuple(f.quants),
        time_limit_s=10.0 if f.time_limit_s is None else min(f.time_limit_s, 60.0),
        api_price=f.api_price,
        disagg=True if f.disagg is None else f.disagg,
        amortize_months=36.0 if f.amortize_months is None else f.amortize_months,
        usd_per_kwh=0.12 if f.usd_per_kwh is None else f.usd_per_kwh,
    )
