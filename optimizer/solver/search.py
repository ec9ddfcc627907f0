"""Orchestration: candidates -> integer table -> CP-SAT (with greedy hint) -> plans -> independent check."""

from __future__ import annotations

import math
import time

from pydantic import BaseModel, ConfigDict

from optimizer.cache import without_gc
from optimizer.catalog.hardware import get_accelerator, load_hardware
from optimizer.catalog.models import ResolvedModel, resolve_model
from optimizer.estimate.factors import HOST_RESERVED_BYTES
from optimizer.estimate.uncertainty import DEFAULT_CONFIDENCE, Trust, expected_figure, trust
from optimizer.solver.bounded import Holds, Space
from optimizer.solver.candidates import Candidate, enumerate_candidates
from optimizer.solver.cpsat import DeploymentModel
from optimizer.solver.frontier import TIERS, tier_named, tier_of
from optimizer.solver.oracle import RowOptimum, row_optima
from optimizer.solver.plan import (
    Costs,
    EngineSettingsPlan,
    Hardware,
    Memory,
    Offload,
    ParallelLayout,
    Plan,
    PriceRef,
    ServingPlan,
    SpecPlan,
    Speed,
    TrustPlan,
)
from optimizer.solver.query import Query
from optimizer.solver.relax import Relaxation, relaxations
from optimizer.solver.scaling import COST_UNIT
from optimizer.solver.table import IntRow, extra_gb_needed, limits, to_rows
from optimizer.solver.validate import PlanEvaluation, check, evaluate

RESULT_SCHEMA = "rigopt.cheapest/1"


class CheapestResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_id: str = RESULT_SCHEMA
    query: Query
    status: str                      # OPTIMAL | FEASIBLE | INFEASIBLE
    objective: str
    cost: float | None               # objective value of the best plan (USD, USD/h or W)
    bound: float | None              # proven lower bound on that cost
    gap: float | None                # (cost - bound) / cost
    plan: Plan | None
    alternatives: list[Plan]
    candidates: int
    solve_s: float
    total_s: float
    infeasible_reasons: list[str] = []
    relaxations: list[Relaxation] = []
    frontier: list[FrontierEntry] = []
    headline: str = ""               # which plan `plan` is: the headline rule applied, in words


class FrontierEntry(BaseModel):
    """The cheapest plan of one quality tier (experts/FFN bits per weight), checked like the headline."""
    model_config = ConfigDict(extra="forbid")
    tier: str
    expert_bits: float
    attn_bits: float
    headline: bool
    plan: Plan
    # a higher-quality tier whose cheapest plan costs no more than this one's (a buyer never picks this tier)
    dominated_by: str | None = None


def dominating_tiers(costs: list[tuple[str, float]]) -> dict[str, str]:
    """For (tier, cost) in ascending quality order: tier -> the first higher tier that costs no more."""
    out: dict[str, str] = {}
    for i, (name, cost) in enumerate(costs):
        better = next((n for n, c in costs[i + 1:] if c <= cost), None)
        if better is not None:
            out[name] = better
    return out


def build_plan(candidate: Candidate, query: Query, *, dram_layers: int, extra_dram_gb: int, nvme_layers: int = 0,
               status_note: str = "") -> Plan:
    """The plan for `candidate` with `dram_layers` expert layers in host DRAM, `nvme_layers` on NVMe and
    `extra_dram_gb` GB of DRAM bought per node, re-evaluated in floats by the independent checker."""
    c, q, x, z, extra_gb = candidate, query, dram_layers, nvme_layers, extra_dram_gb
    offloaded = sorted(c.offload_order[:x])
    on_nvme = sorted(c.offload_order[x:x + z])
    hw = Hardware(node=c.node, accelerator=c.accelerator, n_nodes=c.n_nodes, gpus_per_node=c.gpus_per_node,
                  host_dram_bytes=int(c.dram_base_bytes + extra_gb * 1e9), extra_dram_bytes=int(extra_gb * 1e9),
                  owned=c.owned)
    par = ParallelLayout(tp=c.par.tp, pp=c.par.pp, dp=c.par.dp, ep=c.par.ep, ep_size=c.par.ep_size)
    skeleton = Plan(model=q.model, engine=c.engine, quant=c.quant, kv_dtype=c.kv_dtype, context=q.context,
                    concurrency=q.kv_sequences, hardware=hw, parallel=par,
                    offload=Offload(mode=c.offload_mode if x + z else "none", expert_layers_offloaded=x,
                                    offloaded_layers=offloaded, host_bytes=0.0, nvme_layers=on_nvme,
                                    nvme_bytes=c.nvme(z)),
                    costs=Costs(capex_usd=None, usd_per_hour=None, power_watts=0, objective=q.objective,
                                objective_value=0),
                    memory=Memory(capacity_bytes=0, budget_bytes=0, weights_bytes=0, kv_bytes=0, runtime_bytes=0,
                                  headroom_bytes=0, host_used_bytes=0, host_capacity_bytes=0),
                    speed=Speed(tok_s_per_seq=0, tok_s_bound_per_seq=0, tok_s_aggregate=0, ttft_s=0, ttft_bound_s=0,
                                binding="", terms_s={}),
                    binding_constraint="", candidate_id=c.id,
                    # the candidate's own settings (0 = the engine default); replaced below by the resolved ones
                    settings=EngineSettingsPlan(max_model_len=q.context, max_num_seqs=c.settings.max_num_seqs or 0,
                                                max_num_batched_tokens=c.settings.max_num_batched_tokens or 0,
                                                block_size=c.settings.block_size or 0),
                    spec_decode=None if c.spec_decode is None else SpecPlan(
                        method=c.spec_decode.method, num_tokens=c.spec_decode.num_tokens,
                        accept_len=c.spec_decode.accept_len, draft_model=c.spec_decode.draft_model,
                        draft_params=c.spec_decode.draft_params, source=c.spec_decode.source))
    ev = evaluate(skeleton, q)
    mem, speed, prefill = ev.mem, ev.speed, ev.prefill
    cost = {"capex": ev.capex_usd, "hourly": ev.usd_per_hour, "power": ev.power_watts}[q.objective] or 0.0
    slack = {"device memory": mem.headroom_bytes / mem.budget_bytes}
    if ev.host_used:
        slack["host DRAM"] = (ev.host_capacity - ev.host_used) / ev.host_capacity
    if q.tok_s:
        slack["decode tok/s"] = ev.planned_tok_s / q.tok_s - 1
    if q.ttft_s:
        slack["TTFT"] = q.ttft_s / ev.planned_ttft_s - 1
    if q.max_budget:
        slack["budget"] = q.max_budget / cost - 1 if cost else 1.0
    binding = binding_constraint(slack)
    notes = list(c.notes)
    world = c.n_nodes * c.gpus_per_node
    acct = {"vllm": f"vLLM budget = gpu_memory_utilization {mem.budget_bytes / mem.capacity_bytes:.2f} x total memory",
            "sglang": "SGLang: weights + KV within total memory less its activation/graph reserve",
            "llamacpp": "llama.cpp: weights + KV + compute buffer within device memory",
            "ik_llama": "ik_llama.cpp (llama.cpp's accounting): weights + KV + compute buffer within device memory",
            "ollama": "Ollama (llama-server): weights + KV of num_ctx x OLLAMA_NUM_PARALLEL + compute buffer "
                      "within device memory less llama.cpp's 1 GiB fit margin",
            "lmstudio": "LM Studio (llama.cpp engine): weights + KV + compute buffer within device memory",
            "mlx": "mlx-lm: weights + KV + prefill chunk within the Metal wired limit"}[c.engine]
    notes.insert(0, f"{world}x {c.accelerator}: {mem.weights_bytes / 1e9:,.1f} GB of weights per device"
                    + (f" ({x} expert layers in host DRAM)" if x else "")
                    + f" + {mem.kv_bytes / 1e9:,.2f} GB KV + {mem.runtime_bytes / 1e9:,.1f} GB runtime = "
                    f"{mem.used_bytes / 1e9:,.1f} GB of a {mem.budget_bytes / 1e9:,.1f} GB budget ({acct}): "
                    + ("fits" if mem.fits else "does NOT fit"))
    if z:
        notes.append(f"{z} expert layers ({c.nvme(z) / 1e9:,.0f} GB) stay on NVMe and are paged in by llama.cpp's mmap "
                     f"for every token that routes to them; expect the decode figure only with a fast local NVMe")
    if not q.ttft_s and prefill.ttft_s > 600:
        notes.append(f"prefill of a {q.prompt_tokens or q.context:,}-token prompt takes about "
                     f"{prefill.ttft_s / 60:,.0f} min on this plan; add --ttft SECONDS to bound it")
    if c.expert_bits < 3.5:
        notes.append(f"quality: {'experts' if m_is_moe(q) else 'weights'} at {c.expert_bits:.2f} bits/weight "
                     f"({c.quant}) lose noticeably more accuracy than 4-bit; add --min-bits 4 to exclude such plans")
    if ev.physics.calibration is not None:
        notes.insert(1, ev.physics.calibration.describe())
    tr = _plan_trust(q, c, offloaded=x + z > 0)
    if status_note:
        notes.append(status_note)
    return skeleton.model_copy(update=dict(
        offload=skeleton.offload.model_copy(
            update={"host_bytes": max(0.0, ev.host_used - (HOST_RESERVED_BYTES if x + z else 0))}),
        costs=Costs(capex_usd=ev.capex_usd, usd_per_hour=ev.usd_per_hour, power_watts=ev.power_watts,
                    objective=q.objective, objective_value=cost, price=_price_ref(ev)),
        memory=Memory(capacity_bytes=mem.capacity_bytes, budget_bytes=mem.budget_bytes, weights_bytes=mem.weights_bytes,
                      kv_bytes=mem.kv_bytes, runtime_bytes=mem.runtime_bytes, headroom_bytes=mem.headroom_bytes,
                      host_used_bytes=ev.host_used, host_capacity_bytes=ev.host_capacity),
        # expected figures: the model's times its regime's bias (uncertainty.expected_figure), as `estimate` prints
        speed=Speed(tok_s_per_seq=expected_figure(tr.decode, speed.tok_s_per_seq),
                    tok_s_bound_per_seq=speed.tok_s_bound_per_seq,
                    tok_s_aggregate=expected_figure(tr.decode, speed.tok_s_aggregate),
                    ttft_s=expected_figure(tr.prefill, prefill.ttft_s, time=True),
                    ttft_bound_s=prefill.ttft_bound_s, binding=speed.binding, terms_s=speed.terms_s),
        binding_constraint=binding, notes=notes, settings=_settings_plan(ev), serving=_serving_plan(ev, q, tr),
        trust=_trust_plan(ev, q, tr)))


def _plan_trust(q: Query, c: Candidate, offloaded: bool) -> Trust:
    """The plan's intervals (at q.confidence, or the default level when planning on the expected figures), in its
    own regime: cpu-experts only when it keeps experts in host memory."""
    return trust(c.engine, get_accelerator(c.accelerator), q.planning_batch, q.confidence or DEFAULT_CONFIDENCE,
                 offload=offloaded, spec=resolve_model(q.model).spec)


def _trust_plan(ev: PlanEvaluation, q: Query, tr: Trust) -> TrustPlan:
    """The plan's decode and TTFT intervals and whether the targets were held at their low end."""
    conf = tr.confidence
    tok = 1.0 / ev.physics.tpot_s if ev.physics.tpot_s > 0 else 0.0
    ttft = ev.physics.ttft_s
    served = q.workload is not None
    t_iv = tr.ttft if served else tr.prefill
    out = TrustPlan(confidence=conf, planned_at_low_end=bool(q.confidence))
    # a served workload's per-sequence speed is 1 / TPOT: the served-TPOT interval where served rows back one (the
    # planner held it to the same one: planning_ratios)
    d_iv, is_speed = tr.served_tpot() if served else (tr.decode, True)
    if d_iv is not None and math.isfinite(tok):
        if is_speed:
            lo, hi = d_iv.bounds(tok)
        else:
            t_lo, t_hi = d_iv.bounds(ev.physics.tpot_s)
            lo, hi = 1.0 / t_hi, 1.0 / t_lo
        out = out.model_copy(update=dict(tok_s_per_seq_low=lo, tok_s_per_seq_high=hi,
                                          decode_regime=d_iv.regime, decode_rows=d_iv.n_rows))
    if t_iv is not None and math.isfinite(ttft):
        lo, hi = t_iv.bounds(ttft) if served else t_iv.time_bounds(ttft)  # served: a TTFT interval; else prefill
        out = out.model_copy(update=dict(ttft_s_low=lo, ttft_s_high=hi, ttft_regime=t_iv.regime,
                                          ttft_rows=t_iv.n_rows))
    return out


def _price_ref(ev: PlanEvaluation) -> PriceRef | None:
    o = ev.offer
    if o is None:
        return None
    return PriceRef(offer=o.key, provider=o.provider, region=o.region, as_of=o.as_of, source=o.source)


def _settings_plan(ev: PlanEvaluation) -> EngineSettingsPlan:
    st = ev.physics.settings
    return EngineSettingsPlan(max_model_len=st.max_model_len, max_num_seqs=st.max_num_seqs,
                              max_num_batched_tokens=st.max_num_batched_tokens,
                              gpu_memory_utilization=st.gpu_memory_utilization,
                              mem_fraction_static=st.mem_fraction_static, block_size=st.block_size)


def _serving_plan(ev: PlanEvaluation, q: Query, tr: Trust) -> ServingPlan | None:
    s, w = ev.physics.serving, q.workload
    if s is None or w is None or not s.stable:
        return None
    (dec, dec_speed), ttf, thr = tr.served_tpot(), tr.ttft, tr.throughput  # as `estimate`'s serving report
    return ServingPlan(isl=w.isl, osl=w.osl, concurrency=w.concurrency, rate_rps=w.rate_rps,
                       tpot_s=expected_figure(dec, s.tpot_s, time=dec_speed), ttft_s=expected_figure(ttf, s.ttft_s),
                       ttft_p90_s=s.ttft_p90_s, request_rate_rps=s.request_rate_rps,
                       output_tok_s=expected_figure(thr, s.output_tok_s), total_tok_s=s.total_tok_s,
                       output_tok_s_per_gpu=expected_figure(thr, s.output_tok_s_per_gpu), admitted_seqs=s.admitted_seqs,
                       prefill_share=s.prefill_share, binding=s.binding)


BINDING_SLACK = 0.10  # a constraint with less than 10% slack is named as the one that binds


def binding_constraint(slack: dict[str, float]) -> str:
    """The constraint closest to its limit, when one is within BINDING_SLACK of it; otherwise the plan is the
    cheapest that runs at all and none of its constraints is near binding (it says so rather than naming one)."""
    name = min(slack, key=lambda k: slack[k])
    if slack[name] <= BINDING_SLACK:
        return name
    return f"none within {BINDING_SLACK:.0%} (tightest: {name}, {slack[name]:.0%} spare)"


def m_is_moe(q: Query) -> bool:
    return resolve_model(q.model).spec.is_moe


@without_gc
def cheapest(q: Query, exhaustive: bool = False) -> CheapestResult:
    """The headline plan proven optimal by CP-SAT (one solve), its next-cheapest alternatives and the cheapest
    plan per quality tier. The table is separable, so each row's own optimum (oracle.row_optima, the same integer
    arithmetic) ranks the alternatives and tiers exactly; CP-SAT proves the headline and the two must agree.

    The speed model runs only for the rows that can reach the answer (branch and bound on cost,
    optimizer/solver/bounded.py, where the bound argument is); `exhaustive` finishes every row first (the same
    answer, tests/test_bounded.py)."""
    t0 = time.perf_counter()
    m = resolve_model(q.model)
    load_hardware()
    if exhaustive:
        cands = enumerate_candidates(q, m)
        return _answer(q, m, cands, len(cands), t0)
    space = Space(q, m)
    floor = _floor(q)
    while True:
        todo = _unsettled(q, space, floor, None)
        if todo:
            space.advance_all(todo)
            continue
        result = _answer(q, m, space.finished(), space.count, t0)
        if space.complete or not _unsettled(q, space, floor, result):
            return result
        space.finish_all()  # the independent check moved a pick past the bound (rare): answer from every row


def _floor(q: Query) -> Holds | None:
    """The headline's tier or quality floor as a predicate on expert bits (`_headline_rows`' rule)."""
    if q.tier is not None:
        return tier_named(q.tier).holds
    floor = q.headline_min_bits
    if floor:
        return lambda bits: bits >= floor
    return None


def _unsettled(q: Query, space: Space, floor: Holds | None, result: CheapestResult | None) -> list[int]:
    """Rows to advance before the answer is the exhaustive one ([] when it is). Without `result`: from the rows'
    known costs (assuming the check passes them); with it: from the rows the answer actually picked."""
    allowed: Holds = _every
    if floor is not None:
        if space.has_feasible(floor):
            allowed = floor
        else:  # advance floor rows until one is feasible, or none may be (then every row is allowed)
            need = space.settled(floor, 1)
            if need:
                return need
    if result is None:
        need = space.settled(allowed, q.top)
        for t in TIERS:
            need += space.settled(t.holds, 1)
        return sorted(set(need))
    plans = ([result.plan] if result.plan is not None else []) + result.alternatives
    if not plans:
        return list(range(len(space.rows)))  # infeasible: the relaxation report reads every row
    costs = [space.cost_of(p.candidate_id) for p in plans]
    if len(plans) < q.top or None in costs:
        need = space.open_rows(allowed)
    else:
        need = space.settled(allowed, q.top, max(c for c in costs if c is not None))
    for t in TIERS:
        f = next((f for f in result.frontier if f.tier == t.name), None)
        c = space.cost_of(f.plan.candidate_id) if f is not None else None
        need += space.settled(t.holds, 1, c) if c is not None else space.open_rows(t.holds)
    return sorted(set(need))


def _every(_bits: float) -> bool:
    return True


def _answer(q: Query, m: ResolvedModel, cands: list[Candidate], count: int, t0: float) -> CheapestResult:
    """`cheapest` from a list of rows (every row, or every row that can reach the answer); `count` is how many
    rows the question has."""
    rows = to_rows(cands, q)
    lim = limits(q)
    optima = row_optima(rows, lim)
    ranked = sorted(optima, key=lambda i: optima[i][0])
    allowed, headline = _headline_rows(q, cands, ranked)
    status, best_cost, bound = "INFEASIBLE", None, None
    solve_s = 0.0
    plans: list[Plan] = []
    exclude: set[int] = {r.index for r in rows if r.index not in allowed}
    # Rows whose own exhaustive optimum costs more than the cheapest allowed row's cannot be the optimum: CP-SAT
    # proves the optimum (and its tie-breaks) over the rows that can reach that cost, and over all rows again if
    # the check rejected every one of those.
    best_allowed = next((optima[i][3] for i in ranked if i in allowed), None)
    pruned: set[int] = set()
    if best_allowed is not None:
        pruned = {i for i in allowed if i not in optima or optima[i][3] > best_allowed}
    exclude |= pruned
    chosen: int | None = None
    while True:  # one solve; again only if the independent check rejects what it found
        model = DeploymentModel(rows, lim, frozenset(exclude))
        first = next((i for i in ranked if i not in exclude), None)  # each row's exhaustive optimum: the hint
        if first is not None:
            model.hint(first, optima[first][1], optima[first][2])
        sol = model.solve(time_limit_s=q.time_limit_s, workers=q.workers)
        solve_s += sol.wall_s
        if sol.index is None and pruned:
            exclude -= pruned  # every row at the best cost was rejected: search the rest
            pruned = set()
            continue
        if sol.index is None:
            break
        if best_cost is None:
            status, best_cost, bound = sol.status, sol.cost, sol.bound
        note = f"solver status {sol.status}" + (
            f", proven gap {(sol.cost - sol.bound) / sol.cost:.2%}"
            if sol.status == "FEASIBLE" and sol.cost and sol.bound is not None else "")
        plan = build_plan(cands[sol.index], q, dram_layers=sol.dram_layers, extra_dram_gb=sol.extra_dram_gb,
                          nvme_layers=sol.nvme_layers, status_note=note)
        problems = check(plan, q)
        exclude.add(sol.index)
        if problems:  # never return a plan the independent check rejects
            status = "CHECK_FAILED"
            continue
        plans.append(plan)
        chosen = sol.index
        break
    if chosen is not None:
        for i in ranked:  # alternatives: the next rows in the solver's own order, same quality rule
            if len(plans) >= q.top:
                break
            if i == chosen or i not in allowed:
                continue
            p = _row_plan(cands, rows, optima, i, q)
            if p is not None:
                plans.append(p)
    frontier = _frontier(q, cands, rows, optima, ranked, chosen, plans[0] if plans else None)
    unit = COST_UNIT[q.objective]
    result = CheapestResult(
        query=q, status=status if plans else "INFEASIBLE", objective=q.objective,
        cost=plans[0].costs.objective_value if plans else None,
        bound=bound * unit if bound is not None else None,
        gap=((best_cost - bound) / best_cost) if (best_cost and bound is not None) else (0.0 if plans else None),
        plan=plans[0] if plans else None, alternatives=plans[1:], candidates=count, solve_s=solve_s,
        total_s=time.perf_counter() - t0, frontier=frontier, headline=headline)
    if not plans:
        reasons, relax = relaxations(q, m, cands)
        result = result.model_copy(update={"infeasible_reasons": reasons, "relaxations": relax,
                                           "total_s": time.perf_counter() - t0})
    return result


def _headline_rows(q: Query, cands: list[Candidate], ranked: list[int]) -> tuple[set[int], str]:
    """Rows the headline may use, and the rule in words. With a floor (or a tier) and no feasible row meeting
    it, the headline falls back to the cheapest at any width and says so."""
    every = set(range(len(cands)))
    if q.tier is not None:
        t = tier_named(q.tier)
        rows = {i for i in every if t.holds(cands[i].expert_bits)}
        if any(i in rows for i in ranked):
            return rows, f"cheapest plan in the {t.name} tier (--tier)"
        return every, f"nothing in the {t.name} tier meets the targets: cheapest plan at any width"
    if q.headline_min_bits:
        rows = {i for i in every if cands[i].expert_bits >= q.headline_min_bits}
        floor = f"{tier_of(q.headline_min_bits).name} experts or wider"
        if any(i in rows for i in ranked):
            return rows, (f"cheapest plan with {floor} (the default quality floor; --min-bits 0 for any width, "
                          f"cheaper tiers in the frontier)")
        return every, f"nothing with {floor} meets the targets: cheapest plan at any width"
    floor_note = f" with experts of at least {q.min_expert_bits:g} bits" if q.min_expert_bits else ""
    return every, "cheapest plan" + floor_note


def _row_plan(cands: list[Candidate], rows: list[IntRow], optima: dict[int, RowOptimum], i: int,
              q: Query) -> Plan | None:
    """Candidate i at its own optimum, re-evaluated and checked (None if the check rejects it)."""
    _, x, z, _ = optima[i]
    plan = build_plan(cands[i], q, dram_layers=x, extra_dram_gb=extra_gb_needed(rows[i], x), nvme_layers=z)
    return None if check(plan, q) else plan


def _frontier(q: Query, cands: list[Candidate], rows: list[IntRow], optima: dict[int, RowOptimum], ranked: list[int],
              chosen: int | None, headline: Plan | None) -> list[FrontierEntry]:
    """The cheapest checked plan of every quality tier that has one (ranked by the solver's own order)."""
    out: list[FrontierEntry] = []
    for t in TIERS:
        for i in ranked:
            c = cands[i]
            if not t.holds(c.expert_bits):
                continue
            p = headline if i == chosen and headline is not None else _row_plan(cands, rows, optima, i, q)
            if p is None:
                continue
            out.append(FrontierEntry(tier=t.name, expert_bits=c.expert_bits, attn_bits=c.attn_bits,
                                     headline=i == chosen, plan=p))
            break
    dom = dominating_tiers([(f.tier, f.plan.costs.objective_value) for f in out])
    return [f.model_copy(update={"dominated_by": dom.get(f.tier)}) for f in out]
