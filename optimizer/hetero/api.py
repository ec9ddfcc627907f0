"""`cheapest_mixed`: the best plan over an inventory of mixed GPUs (and, with `buy`, the cheapest additions)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.hardware_schema import Accelerator
from optimizer.catalog.host_spec import parse_host
from optimizer.catalog.models import ResolvedModel, resolve_model
from optimizer.errors import InputError
from optimizer.estimate.layers import model_layers
from optimizer.estimate.schemes import MOE_MIXES, get_scheme, mean_active_bits, quality_bits
from optimizer.estimate.uncertainty import DEFAULT_CONFIDENCE, conservative_speed_ratio, interval, model_class
from optimizer.hetero.engines import RULES, mixed_support
from optimizer.hetero.inventory import Inventory, parse_inventory
from optimizer.hetero.model import MixedModel
from optimizer.hetero.plan import MixedPlan, stages_of
from optimizer.hetero.scaling import TIME_UNIT
from optimizer.hetero.table import DEFAULT_BUY, build_instance, evaluate_int, period_int
from optimizer.hetero.validate import MixedCheck, check_plan
from optimizer.limits import MAX_BUDGET, check_number
from optimizer.solver.support import unsupported
from optimizer.units import MAX_CONCURRENCY, MAX_CONTEXT_TOKENS

# GGUF presets tried, best quality first (the order is recomputed from each preset's expert/attention bits)
MIXED_QUANTS = (
    "q8_0",
    "q6_k",
    "q5_k_m",
    "q4_k_m",
    "q4_k_m-moe",
    "iq4_xs",
    "q3_k_m",
    "q2_k-moe",
    "q2_k",
    "iq2_xxs-moe",
    "iq2_xxs",
    "iq1_s",
)


# vLLM: the checkpoint as stored, or FP8 quantized at load (W8A16 Marlin on GPUs without FP8 tensor cores)
MIXED_QUANTS_VLLM = ("native", "fp8")


@dataclass(frozen=True)
class MixedResult:
    plan: MixedPlan | None
    check: MixedCheck | None
    tried: tuple[tuple[str, str], ...]  # (quant, solver status) in the order tried
    reason: str = ""


# CPU seconds a buy search (one CP-SAT model per quantization) may spend before it settles for the cheapest plan
# found so far (bounded like every other command: a few seconds, not one time limit per quantization)
BUY_SEARCH_CPU_S = 6.0


def _quality_order(m: ResolvedModel, quants: Iterable[str]) -> list[str]:
    """Best quality first, as `rigopt cheapest` ranks it: expert bits, attention bits, mean active bits."""
    native = get_scheme("native", m.storage)
    rows = []
    for q in quants:
        if q in MOE_MIXES and not m.spec.is_moe:
            continue  # a dense model has no routed experts: the MoE mix is Q8_0 under another name
        try:
            scheme = get_scheme(q, m.storage)
        except InputError:
            continue
        e, a = quality_bits(m.spec, scheme, native)
        rows.append((-e, -a, -round(mean_active_bits(m.spec, scheme, native), 6), q))
    return [q for *_, q in sorted(rows)]


def cheapest_mixed(
    model: str,
    inventory: str | Inventory,
    *,
    context: int,
    tok_s: float = 0.0,
    concurrency: int = 1,
    quants: list[str] | None = None,
    engine: str = "llamacpp",
    buy: bool | tuple[str, ...] = False,
    max_budget: float | None = None,
    min_bits: float = 0.0,
    objective: str = "latency",
    time_limit_s: float = 30.0,
    workers: int = 1,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    host: str | None = None,
    host_experts: bool | None = None,
) -> MixedResult:
    """Without `buy`: the highest-quality quantization whose fastest assignment over the inventory meets `tok_s`,
    with that assignment. With `buy` (True = DEFAULT_BUY, or accelerator keys): the cheapest purchases (GPUs into
    free slots within lanes and power, DRAM up to the platform's maximum) meeting `tok_s`; among equal costs the
    higher quality, then the faster plan. `objective="throughput"` (without buy) minimises the pipelined period
    (busiest stage or host CPU) instead of the per-token time, for engines that stream micro-batches through the
    stages (vLLM PP).

    `confidence` (0 = none): the tok/s target must hold at the low end of that interval. A plan over mixed cards
    (or with experts in host DRAM) has no measured regime of its own, so it is held to the all-rows interval of
    the cross-validation, the widest (optimizer/estimate/uncertainty.py); a plan that computes experts on the host
    CPU is held to the cpu-experts regime's interval. `host_experts` (internal): None = solve for a plan without
    host experts first and, if the one found uses them, again under the cpu-experts interval."""
    if host_experts is None and confidence and tok_s:
        def again(host_experts: bool) -> MixedResult:
            # each pass gets half the time limit: the two together are bounded as one solve was
            return cheapest_mixed(model, inventory, context=context, tok_s=tok_s, concurrency=concurrency,
                                  quants=quants, engine=engine, buy=buy, max_budget=max_budget, min_bits=min_bits,
                                  objective=objective, time_limit_s=time_limit_s / 2, workers=workers, seed=seed,
                                  confidence=confidence, host=host, host_experts=host_experts)
        first = again(False)
        if first.plan is not None and not _uses_host_experts(first.plan):
            return first
        return again(True)
    if not 0 <= confidence < 1:
        raise InputError(f"confidence must lie in [0, 1), got {confidence}")
    if objective not in ("latency", "throughput"):
        raise InputError(f"objective must be latency or throughput, got {objective!r}")
    if not 1 <= context <= MAX_CONTEXT_TOKENS:
        raise InputError(f"context must be between 1 and {MAX_CONTEXT_TOKENS}, got {context}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InputError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}")
    for name, v, hi in (("--tok-s", tok_s, 1e6), ("--min-bits", min_bits, 64.0)):
        if isinstance(v, (int, float)) and v < 0:
            raise InputError(f"{name} must be non-negative, got {v:g}")
        check_number(v, name, 0.0, hi)
    if max_budget is not None:
        if isinstance(max_budget, (int, float)) and max_budget <= 0:
            raise InputError(f"--max-budget must be positive (USD), got {max_budget:g}; omit it for no cap")
        check_number(max_budget, "--max-budget (USD)", 0.0, MAX_BUDGET)
    m = resolve_model(model)
    inv = parse_inventory(inventory) if isinstance(inventory, str) else inventory
    if host:  # `mixed --host`: the main box's (box 0) CPU and DRAM population
        inv = replace(inv, boxes=(replace(inv.boxes[0], cpu=parse_host(host).resolve()), *inv.boxes[1:]))
    why = mixed_support(engine, [g.acc.key for g in inv.gpus])
    if why:
        raise InputError(why)
    if engine not in ("llamacpp", "vllm"):
        raise InputError(
            f"mixed-hardware planning is implemented for llama.cpp and vLLM; {engine}'s rule: {RULES[engine].source}"
        )
    other = sorted({g.acc.key for g in inv.gpus if g.acc.vendor != "nvidia"})
    if other:
        raise InputError(
            f"mixed plans here are for one CUDA build of the engine (devices CUDA0..N); not NVIDIA: {', '.join(other)}"
        )
    notes_pre: list[str] = []
    if len(inv.boxes) > 1:
        if engine != "llamacpp":
            raise InputError(
                "several boxes are planned for llama.cpp RPC (ggml-rpc-server on the other boxes); "
                f"{engine} across boxes (a Ray cluster) is not planned here"
            )
        net = load_hardware().interconnects[inv.link]
        notes_pre.append(
            f"network between boxes: {net.name} ({net.bw_bytes_per_s / 1e9:g} GB/s, "
            f"{net.latency_s * 1e6:g} us per crossing, {net.source})"
            + ("" if inv.link_given else "; assumed: add `net: 10gbe` (or 25gbe, ...) to the inventory")
            + f"; {inv.boxes[0].name} runs llama-server, the other boxes ggml-rpc-server (their experts stay on "
            "their GPUs)"
        )
    buy_types: tuple[str, ...] | None = None
    if buy is True:
        buy_types = tuple(DEFAULT_BUY)
    elif buy:
        buy_types = tuple(buy)
    if engine != "llamacpp":
        # kernel support per architecture (optimizer/solver/support.py): cards the engine cannot run this model on
        # are left out of its plans
        from dataclasses import replace as _replace

        dropped = [g for g in inv.gpus if unsupported(engine, m.spec, g.acc.arch)]
        if dropped:
            notes_pre.append(
                "left out: " + "; ".join(f"{g.uid} ({unsupported(engine, m.spec, g.acc.arch)})" for g in dropped)
            )
            keep = {g.uid for g in inv.gpus} - {g.uid for g in dropped}
            inv = _replace(
                inv, boxes=tuple(_replace(b, gpus=tuple(g for g in b.gpus if g.uid in keep)) for b in inv.boxes)
            )
        if not inv.gpus:
            raise InputError(f"{engine} cannot run {m.key} on any card of this inventory: " + notes_pre[0])
        if buy_types:
            accs = load_hardware().accelerators
            buy_types = tuple(k for k in buy_types if not unsupported(engine, m.spec, accs[k].arch))
    acc0 = inv.gpus[0].acc
    ratio = conservative_speed_ratio("decode", engine if host_experts else MIXED_CARDS, acc0, concurrency,
                                     confidence, offload=bool(host_experts), mclass=model_class(m.spec))
    planned_tok_s = tok_s / ratio if tok_s else 0.0
    if tok_s and ratio < 1.0:
        notes_pre.append(f"the {tok_s:g} tok/s target is held at the low end of the {confidence:.0%} interval: the "
                         f"plan must be expected to reach {planned_tok_s:.1f} tok/s")
    tried = []
    best = None
    native = get_scheme("native", m.storage)
    order = _quality_order(m, quants or (MIXED_QUANTS if engine == "llamacpp" else MIXED_QUANTS_VLLM))
    cpu0 = time.process_time()
    for q in order:
        if best is not None and time.process_time() - cpu0 > BUY_SEARCH_CPU_S:
            # a buy search solves one model per quantization; past the budget the cheapest plan found so far
            # stands, and the plan says which quantizations were not priced
            notes_pre.append(f"search stopped after {BUY_SEARCH_CPU_S:g} s of CPU: "
                             f"{', '.join(order[order.index(q):])} not priced")
            break
        e_bits, _ = quality_bits(m.spec, get_scheme(q, m.storage), native)
        if e_bits < min_bits:
            continue
        ml = model_layers(m, q, engine, context, concurrency)
        inst = build_instance(m, ml, inv, tok_s=planned_tok_s or None, buy=buy_types, buy_dram=bool(buy),
                              max_budget=max_budget)
        mm = MixedModel(inst, objective="cost" if buy_types else objective)
        sol = mm.solve(time_limit_s=time_limit_s, workers=workers, seed=seed)
        tried.append((q, sol.status))
        if sol.assignment is None:
            continue
        ok, t_units, cost, why = evaluate_int(inst, sol.assignment)
        if not ok:
            raise AssertionError(f"solver returned an assignment its own arithmetic rejects: {why}")
        cand = (cost, q, ml, inst, sol)
        if best is None or cost < best[0]:
            best = cand
        if not buy_types or cost == 0:
            break  # quality order: the first feasible quantization is the best (and nothing is cheaper than 0)
    if best is None:
        return MixedResult(None, None, tuple(tried), reason="no quantization fits the inventory and meets the target")
    cost, q, ml, inst, sol = best
    assert sol.assignment is not None  # `best` holds feasible solutions only
    stages = stages_of(inst, sol.assignment)
    chk = check_plan(m, ml, inv, stages, sol.assignment.dram_gb, tok_s=planned_tok_s or None)
    if not chk.ok:
        raise AssertionError("independent check rejected the solver's plan: " + "; ".join(chk.violations))
    bought = tuple(s.accelerator for s in stages if not s.owned)
    notes = list(notes_pre)
    if objective == "throughput" and not buy_types:
        notes.append(
            f"pipelined period {period_int(inst, sol.assignment) * TIME_UNIT * 1e3:.2f} ms per micro-batch "
            f"(busiest stage or host CPU; integer model)"
        )
    unused = [g.uid for g in inv.gpus if g.uid not in {s.uid for s in stages}]
    if unused:
        notes.append(f"not used: {', '.join(unused)} (the fastest plan found no use for them)")
    plan = MixedPlan(
        model=m.key,
        quant=q,
        engine=engine,
        kv_dtype=ml.kv_dtype,
        context=context,
        concurrency=concurrency,
        inventory=inv.text or inv.describe(),
        stages=stages,
        dram_bought_gb=sol.assignment.dram_gb,
        bought=bought,
        cost_usd=float(cost),
        step_time_s=chk.step_time_s,
        tok_s=chk.tok_s,
        status=sol.status,
        solve_s=sol.wall_s,
        notes=tuple(notes),
        **_trust(engine, acc0, concurrency, confidence, chk.tok_s, _uses_host_experts(stages), model_class(m.spec)),
    )
    return MixedResult(plan, chk, tuple(tried))


# the regime name of a plan over mixed cards: no rows of its own, so every level backs off to "*" (all rows)
MIXED_CARDS = "mixed-cards"


def _uses_host_experts(plan_or_stages: object) -> bool:
    stages = getattr(plan_or_stages, "stages", plan_or_stages)
    return any(s.cpu_expert_layers or s.nvme_expert_layers for s in stages)  # type: ignore[attr-defined]


def _trust(engine: str, acc: Accelerator, batch: int, confidence: float, tok_s: float,
           host_experts: bool, mclass: str) -> dict[str, Any]:
    # the same lookup as the planner's target above (conservative_speed_ratio) and as estimate: model class included
    iv = interval("decode", engine if host_experts else MIXED_CARDS, acc, batch, confidence or DEFAULT_CONFIDENCE,
                  offload=host_experts, mclass=mclass)
    if iv is None:
        return {"confidence": confidence}
    lo, hi = iv.bounds(tok_s)
    return {"confidence": confidence, "tok_s_low": lo, "tok_s_high": hi,
            "trust_regime": f"{iv.regime} ({iv.n_rows} rows)"}


def describe(res: MixedResult) -> str:
    """Human-readable lines for a result (what the CLI prints)."""
    if res.plan is None:
        tried = ", ".join(f"{q}: {s}" for q, s in res.tried)
        return f"no mixed plan: {res.reason} (tried {tried})"
    p, c = res.plan, res.check
    assert c is not None  # a plan is returned with its independent check
    lines = [
        f"Mixed plan: {p.model}, {p.engine}, {p.quant}, KV {p.kv_dtype}, context {p.context:,} x {p.concurrency}; "
        f"solver {p.status} in {p.solve_s:.2f} s",
        f"decode: {p.tok_s:.1f} tok/s per sequence (independent float check)"
        + (f"; {p.confidence or 0.8:.0%} interval {p.tok_s_low:.1f}-{p.tok_s_high:.1f} (cross-validated, "
           f"{p.trust_regime})" if p.tok_s_low is not None and p.tok_s_high is not None else ""),
    ]
    if p.bought or any(p.dram_bought_gb):
        buys = [*p.bought] + [f"{gb} GB DRAM" for gb in p.dram_bought_gb if gb]
        lines.append(f"buy: {', '.join(buys)} for ${p.cost_usd:,.0f}")
    for sc in c.stages:
        s = sc.stage
        lines.append(
            f"  {s.uid:<24} {s.accelerator:<12} layers {s.start:>2}-{s.end - 1:<2} experts GPU "
            f"{len(s.gpu_expert_layers):>2} / DRAM {len(s.cpu_expert_layers):>2} / NVMe "
            f"{len(s.nvme_expert_layers):>2}; {sc.used_bytes / 2**30:5.1f} of {sc.budget_bytes / 2**30:5.1f} "
            f"GiB; {sc.figures.time_s * 1e3:6.2f} ms"
        )
    lines.append("  time per token: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in c.terms_s.items() if v))
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)
