"""The question, once: what a user asks `rigopt cheapest`, `fleet` or `mixed` (the `Ask`, every field None when not
given), and the three shapes a back end answers (a pydantic discriminated union on `kind`):

- `speed`: one deployment that meets decode/TTFT targets, bought or rented (`optimizer/solver/`, CP-SAT);
- `fleet`: the cheapest serving fleet for a request rate within TTFT/TPOT SLAs (`optimizer/fleet/`);
- `owned`: the best plan over a mixed inventory the user owns, per device (`optimizer/hetero/`).

Each shape carries its back end's own validated query (`Query`, `FleetQuery`, `MixedQuery`: the field bounds are
declared there, once). Defaults are the question's, never a command's: one default context, objective,
confidence and engine set, whichever command is used (`DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from optimizer.solver.query import Query

if TYPE_CHECKING:
    from optimizer.front.kinds import FleetQuestion as FleetQuestion
    from optimizer.front.kinds import OwnedQuestion as OwnedQuestion
    from optimizer.front.kinds import Question as Question

# the fleet and mixed-inventory shapes live in optimizer/front/kinds.py: importing them imports the fleet and
# mixed-hardware back ends, which a single-deployment question never needs (start-up time, issue 23)
_KINDS = ("FleetQuestion", "OwnedQuestion", "Question")


def __getattr__(name: str) -> Any:
    if name in _KINDS:
        from optimizer.front import kinds
        return getattr(kinds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

DEFAULT_CONTEXT_TOKENS = 384 * 1024  # `384K`: the context a question plans for when it names none (no workload)
DEFAULTS: dict[str, Any] = {
    "context": DEFAULT_CONTEXT_TOKENS,
    "objective": Query.model_fields["objective"].default,
    "confidence": Query.model_fields["confidence"].default,
    "percentile": 90.0,
}


class SpeedQuestion(BaseModel):
    """One deployment meeting speed targets at the least cost (capex, $/h or watts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["speed"] = "speed"
    query: Query




@dataclass(frozen=True)
class Ask:
    """A question as asked, by any command: None (or the empty value) where the user gave nothing, so the
    question's defaults apply. `names` maps field names to how the user spelled them (CLI options or scenario
    keys), for error messages; `outputs` names the files asked for (--out, --export, --plot) that only some back
    ends write."""

    model: str
    context: int | None = None
    concurrency: int | None = None
    tok_s: float | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    isl: int | None = None
    osl: int | None = None
    rate_rps: float | None = None
    prefix_hit: float | None = None
    spec: str | None = None
    confidence: float | None = None
    objective: str | None = None
    max_budget: float | None = None
    min_bits: float | None = None
    tier: str | None = None
    min_attn_bits: float | None = None
    gpus: tuple[str, ...] | None = None
    owned: str | None = None
    engines: tuple[str, ...] | None = None
    quants: tuple[str, ...] | None = None
    kv_dtypes: tuple[str, ...] | None = None
    loads: str | None = None
    max_nodes: int | None = None
    top: int | None = None
    time_limit_s: float | None = None
    calibration: Any = None
    # the SLA form
    tpot_s: float | None = None
    percentile: float | None = None  # percent, 50 .. 99.9
    api_price: Any = None  # fleet.money.ApiPrice
    disagg: bool | None = None
    amortize_months: float | None = None
    usd_per_kwh: float | None = None
    # buying on top of an owned inventory
    buy: bool | None = None
    buy_types: tuple[str, ...] | None = None
    host: str | None = None  # the owned box's CPU + DRAM (optimizer/catalog/host_spec.py): `mixed --host`
    outputs: tuple[str, ...] = ()
    names: dict[str, str] = field(default_factory=dict)

    def given(self, *fields: str) -> list[str]:
        """The user's spelling of each of `fields` that was given."""
        return [self.name(f) for f in fields if getattr(self, f) not in (None, (), False)]

    def name(self, f: str) -> str:
        return self.names.get(f, f)
