"""The front door: `question(ask)` gives an asked question its shape, `solve(question)` picks the back end by that
shape (as SkyPilot's optimizer picks its DP or ILP by the problem), so every command that asks the same question
gets the same answer:

- an SLA (a TPOT target, a TTFT percentile, or a request rate with both a TTFT and a decode target) -> `fleet`;
- an owned inventory of several GPU types or boxes, buying on top of one, or an owned inventory planned for one
  engine that can split layers per device (llama.cpp, vLLM) -> `owned` (per-device assignment);
- everything else, owned single-type boxes with the default engines included -> `speed` (CP-SAT over whole and
  partly filled servers and cloud instances).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import ValidationError

from optimizer.catalog.hardware import get_accelerator
from optimizer.errors import InputError, RigoptError
from optimizer.front.answer import Answer
from optimizer.front.question import DEFAULTS, Ask, SpeedQuestion
from optimizer.solver.frontier import DEFAULT_HEADLINE_MIN_BITS
from optimizer.solver.query import Owned, Query

if TYPE_CHECKING:
    from optimizer.fleet.sla import SlaFields
    from optimizer.front.kinds import OwnedQuestion, Question

# The fleet and mixed-hardware back ends are imported only by the questions that reach them (start-up time of a
# single-deployment question, issue 23).

# what only the single-deployment solver answers (workloads, TTFT, speculative decoding, placement, plan files)
SOLVER_ONLY = ("isl", "osl", "rate_rps", "ttft_s", "prompt_tokens", "prefix_hit", "spec", "kv_dtypes", "loads",
               "tier", "max_nodes", "top", "min_attn_bits", "gpus")
# what only the SLA form answers
FLEET_ONLY = ("api_price", "disagg", "amortize_months", "usd_per_kwh")
PER_DEVICE_ENGINES = ("llamacpp", "vllm")
T = TypeVar("T")  # engines that split one model's layers over unlike devices


def _sla(a: Ask) -> SlaFields:
    from optimizer.fleet.sla import SlaFields
    return SlaFields(model=a.model, isl=a.isl, osl=a.osl, rate_rps=a.rate_rps, ttft_s=a.ttft_s, tpot_s=a.tpot_s,
                     tok_s=a.tok_s or 0.0, percentile=a.percentile,
                     objective=a.objective or DEFAULTS["objective"], gpus=a.gpus, engines=a.engines, quants=a.quants,
                     time_limit_s=a.time_limit_s, api_price=a.api_price, disagg=a.disagg,
                     amortize_months=a.amortize_months, usd_per_kwh=a.usd_per_kwh)


def several_kinds(owned: str) -> bool:
    """An inventory of several GPU types or several boxes (only a per-device plan can use it)."""
    if ";" in owned:
        return True
    from optimizer.hetero.inventory import parse_inventory
    try:
        inv = parse_inventory(owned)
    except RigoptError:
        try:
            kinds = len(Owned.parse(owned).accelerators)
        except RigoptError:
            return False  # let the single-type parser report it
        if kinds > 1:
            raise  # several GPU types: only the per-device planner can use it, so its error (a limit) applies
        return False
    return len({g.acc.key for g in inv.gpus}) > 1


def _per_device(a: Ask) -> bool:
    """Is an owned question planned per device (`owned`) rather than as one deployment (`speed`)?"""
    if a.owned is None:
        return False
    if several_kinds(a.owned) or a.buy or a.buy_types:
        return True
    return a.engines is not None and len(a.engines) == 1 and a.engines[0] in PER_DEVICE_ENGINES


def question(a: Ask) -> Question:
    """The shape of an asked question, validated, with the question's defaults filled in."""
    if a.objective is not None and a.objective not in ("capex", "hourly", "power"):
        raise InputError(f"unknown objective '{a.objective}' (use capex, hourly or power)")
    if (a.isl is None) != (a.osl is None):
        raise InputError(f"a workload needs both {a.name('isl')} and {a.name('osl')}")
    if a.rate_rps is not None and a.isl is None:
        raise InputError(f"{a.name('rate_rps')} needs a workload: give {a.name('isl')} and {a.name('osl')}")
    if _fleet_form(a):
        from optimizer.fleet.sla import fleet_query
        from optimizer.front.kinds import FleetQuestion
        sla = _sla(a)
        extra = a.given("owned", "context", "prompt_tokens", "max_budget", "tier", "min_bits", "kv_dtypes", "spec",
                        "prefix_hit", "loads", "buy", "buy_types") + [o for o in a.outputs
                                                                                       if o != a.name("out_dir")]
        if extra:
            raise InputError(f"{', '.join(extra)} do(es) not apply to the SLA form (the cheapest fleet for a "
                             f"request rate): drop them, or ask without {a.name('tpot_s')}/{a.name('percentile')}")
        return FleetQuestion(query=fleet_query(sla, a.names))
    fleet_only = a.given(*FLEET_ONLY)
    if fleet_only:
        raise InputError(f"{', '.join(fleet_only)} apply only to the SLA form: give {a.name('isl')}, "
                         f"{a.name('osl')}, {a.name('rate_rps')}, {a.name('ttft_s')} and {a.name('tpot_s')}")
    if _per_device(a):
        return _owned(a)
    if a.buy or a.buy_types:
        raise InputError(f"{a.name('buy')} needs {a.name('owned')}: what to buy on top of")
    return _speed(a)


def _fleet_form(a: Ask) -> bool:
    """Is this the SLA form (fleet.sla.wants_fleet), asked without importing the fleet back end when none of the
    fields that rule reads is given?"""
    if a.tpot_s is None and a.percentile is None and (a.rate_rps is None or a.ttft_s is None):
        return False  # wants_fleet needs a TPOT, a percentile, or a rate with a TTFT
    from optimizer.fleet.sla import wants_fleet
    return wants_fleet(_sla(a))


def _owned(a: Ask) -> OwnedQuestion:
    from optimizer.front.kinds import OwnedQuestion
    from optimizer.hetero.query import MixedQuery
    assert a.owned is not None
    bad = a.given(*SOLVER_ONLY) + list(a.outputs)
    if a.objective not in (None, DEFAULTS["objective"]):
        bad.append(a.name("objective"))
    if bad:
        raise InputError(f"an owned inventory planned per device (several GPU types or boxes, or one engine that "
                         f"splits layers per device) cannot take {', '.join(bad)} yet")
    engines = a.engines or ("llamacpp",)  # the engine that runs any mix of devices (README: Mixed hardware)
    if len(engines) != 1 or engines[0] not in PER_DEVICE_ENGINES:
        raise InputError(f"{a.name('engines')}: a mixed inventory is planned for one engine, llamacpp or vllm")
    mq = _valid(a, lambda: MixedQuery(
        model=a.model, inventory=a.owned, context=a.context or DEFAULTS["context"],
        concurrency=a.concurrency or 1, tok_s=a.tok_s or 0.0, engine=engines[0], buy=bool(a.buy),
        buy_types=tuple(get_accelerator(k).key for k in a.buy_types) if a.buy_types else None,
        max_budget=a.max_budget, min_bits=a.min_bits or 0.0, quants=a.quants,
        confidence=DEFAULTS["confidence"] if a.confidence is None else a.confidence, host=a.host))
    return OwnedQuestion(query=mq)


def _speed(a: Ask) -> SpeedQuestion:
    owned = None
    if a.host is not None and a.owned is None:
        raise InputError(f"{a.name('host')} is the host of hardware you own: give {a.name('owned')} too")
    if a.owned is not None:
        text = a.owned if a.host is None else f"{a.owned}, host {a.host}"  # `mixed --host` on one GPU type
        try:
            owned = Owned.parse(text)
        except RigoptError as e:
            raise InputError(f"{a.name('owned')}: {e}") from None
    ctx = a.context or (a.isl + a.osl if a.isl and a.osl else DEFAULTS["context"])
    kw = {k: v for k, v in dict(
        concurrency=a.concurrency, tok_s=a.tok_s, ttft_s=a.ttft_s, isl=a.isl, osl=a.osl, rate_rps=a.rate_rps,
        prefix_hit=a.prefix_hit, spec=a.spec, confidence=a.confidence, prompt_tokens=a.prompt_tokens,
        objective=a.objective, max_budget=a.max_budget, min_attn_bits=a.min_attn_bits, tier=a.tier, loads=a.loads,
        max_nodes=a.max_nodes, top=a.top, time_limit_s=a.time_limit_s, calibration=a.calibration).items()
        if v is not None}
    q = _valid(a, lambda: Query(
        model=a.model, context=ctx, min_expert_bits=a.min_bits or 0.0,
        headline_min_bits=DEFAULT_HEADLINE_MIN_BITS if (a.min_bits is None and a.tier is None) else None,
        gpus=list(a.gpus) if a.gpus else None, owned=owned, engines=list(a.engines) if a.engines else None,
        quants=list(a.quants) if a.quants else None, kv_dtypes=list(a.kv_dtypes) if a.kv_dtypes else None, **kw))
    return SpeedQuestion(query=q)


def _valid(a: Ask, build: Callable[[], T]) -> T:
    """`build()`, a pydantic validation error named by the user's spelling of the field."""
    try:
        return build()
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a rule across fields (e.g. isl needs osl)
            raise InputError(msg) from None
        f = str(err["loc"][0])
        alias = {"min_expert_bits": "min_bits", "inventory": "owned", "engine": "engines"}.get(f, f)
        raise InputError(f"{a.names.get(alias, '--' + alias.replace('_', '-'))}: {msg}") from None


def solve(q: Question) -> Answer:
    """Answer a question with the back end its shape names."""
    if q.kind == "fleet":
        from optimizer.fleet import solve_fleet
        return Answer(question=q, backend="fleet", result=solve_fleet(q.query))
    if q.kind == "owned":
        return Answer(question=q, backend="hetero", result=q.query.solve())
    from optimizer.solver.search import cheapest
    return Answer(question=q, backend="solver", result=cheapest(q.query))
