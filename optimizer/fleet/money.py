"""Money per token and break-even volumes.

At the served rate R (requests/s of isl prompt and osl output tokens) a fleet costing C $/h serves
R x isl input and R x osl output tokens per second.

- $/M tokens (blended) = C / (3600 R (isl + osl)) x 1e6.
- The hour is split between input and output by where the GPU time goes: a disaggregated fleet's prefill pools
  are input and its decode pools output; an aggregated replica's time is split by its prefill share rho (the
  share of engine time spent on prefill chunks, serving.py). $/M input = C_in / (3600 R isl) x 1e6, likewise out.
- Owning: capex amortised over `months` (default 36) + power at TDP x hours per month x $/kWh (default 0.12)
  = a fixed monthly cost F_own, whatever the volume up to the fleet's capacity (R x seconds per month tokens).
- Renting elastically costs the blended rent $/token x volume V, so owning beats renting above
  V = F_own / rent $/token; owning beats a hosted API above V = F_own / API $/token, with the API's blended
  price for this workload = (isl x in + osl x out) / (isl + osl) per token; renting 24/7 (F_rent = C x hours per
  month) beats the API above V = F_rent / API $/token. A break-even above the fleet's monthly capacity is reported
  as such (that fleet never gets there; a larger one would have its own figure).
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.errors import InputError
from optimizer.limits import MAX_AMORTIZE_MONTHS, MAX_USD_PER_KWH, MAX_USD_PER_M_TOKENS, check_number, clip_for_message

HOURS_PER_MONTH = 730.0  # 8,760 h / 12
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600.0


@dataclass(frozen=True)
class ApiPrice:
    usd_per_m_in: float
    usd_per_m_out: float

    @classmethod
    def parse(cls, text: str) -> ApiPrice:
        """'in:0.27,out:1.10' (USD per million tokens)."""
        vals: dict[str, float] = {}
        for part in text.split(","):
            k, sep, v = part.strip().partition(":")
            try:
                if not sep or k.strip() not in ("in", "out"):
                    raise ValueError
                vals[k.strip()] = float(v)
            except ValueError:
                raise InputError(
                    f"cannot read --api-price '{clip_for_message(text)}': use e.g. in:0.27,out:1.10 (USD per M tokens)"
                ) from None
        if set(vals) != {"in", "out"} or not all(0 <= v <= MAX_USD_PER_M_TOKENS for v in vals.values()):
            raise InputError(f"--api-price needs both in: and out: as USD per M tokens within "
                             f"0..{MAX_USD_PER_M_TOKENS:g}, got '{clip_for_message(text)}'")
        return cls(vals["in"], vals["out"])

    def blended_per_token(self, isl: int, osl: int) -> float:
        return (isl * self.usd_per_m_in + osl * self.usd_per_m_out) / (isl + osl) / 1e6


@dataclass(frozen=True)
class TokenCost:
    usd_per_hour: float
    usd_per_m_in: float
    usd_per_m_out: float
    usd_per_m_blended: float


def token_cost(usd_per_hour: float, usd_per_hour_in: float, rate_rps: float, isl: int, osl: int) -> TokenCost:
    """$/M tokens at the served rate; `usd_per_hour_in` is the part of the hour spent on input (prefill)."""
    if rate_rps <= 0:
        raise InputError("the served rate must be positive")
    tin, tout = rate_rps * isl * 3600.0, rate_rps * osl * 3600.0
    return TokenCost(
        usd_per_hour=usd_per_hour,
        usd_per_m_in=usd_per_hour_in / tin * 1e6,
        usd_per_m_out=(usd_per_hour - usd_per_hour_in) / tout * 1e6,
        usd_per_m_blended=usd_per_hour / (tin + tout) * 1e6,
    )


def check_costs(months: float, usd_per_kwh: float) -> None:
    """The amortisation period and electricity price of a fleet question, within the input limits."""
    if isinstance(months, (int, float)) and not months > 0:
        raise InputError(f"--amortize-months must be positive, got {clip_for_message(months)}")
    check_number(months, "--amortize-months", 1e-3, MAX_AMORTIZE_MONTHS)
    check_number(usd_per_kwh, "--usd-per-kwh", 0.0, MAX_USD_PER_KWH)


def own_monthly_usd(capex_usd: float, power_watts: float, months: float = 36.0, usd_per_kwh: float = 0.12) -> float:
    check_costs(months, usd_per_kwh)
    return capex_usd / months + power_watts / 1000.0 * HOURS_PER_MONTH * usd_per_kwh


def break_even_tokens(fixed_monthly_usd: float, usd_per_token: float) -> float | None:
    """Monthly token volume above which a fixed monthly cost beats paying `usd_per_token` (None: never)."""
    if usd_per_token <= 0:
        return None
    return fixed_monthly_usd / usd_per_token
