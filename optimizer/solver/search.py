"""Orchestration: candidates -> integer table -> CP-SAT (with greedy hint) -> plans -> independent check."""

from __future__ import annotations

import time
from typing import cast

from pydantic import BaseModel, ConfigDict

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.estimate.factors import HOST_RESERVED_BYTES
from optimizer.estimate.memory import DeviceMemory
from optimizer.estimate.speed import PrefillEstimate, SpeedEstimate
from optimizer.solver.candidates import Candidate, enumerate_candidates
from optimizer.solver.cpsat import DeploymentModel, greedy_hint
from optimizer.solver.plan import Costs, Hardware, Memory, Offload, ParallelLayout, Plan, Speed
from optimizer.solver.query import Query
from optimizer.solver.relax import Relaxation, relaxations
from optimizer.solver.scaling import COST_UNIT
from optimizer.solver.table import limits, to_rows
from optimizer.solver.validate import check, evaluate

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
                    concurrency=q.concurrency, hardware=hw, parallel=par,
                    offload=Offload(mode=c.offload_mode if x + z else "none", expert_layers_offloaded=x,
                                    offloaded_layers=offloaded, host_bytes=0.0, nvme_layers=on_nvme,
                                    nvme_bytes=c.nvme(z)),
                    costs=Costs(capex_usd=None, usd_per_hour=None, power_watts=0, objective=q.objective,
                                objective_value=0),
                    memory=Memory(capacity_bytes=0, budget_bytes=0, weights_bytes=0, kv_bytes=0, runtime_bytes=0,
                                  headroom_bytes=0, host_used_bytes=0, host_capacity_bytes=0),
                    speed=Speed(tok_s_per_seq=0, tok_s_bound_per_seq=0, tok_s_aggregate=0, ttft_s=0, ttft_bound_s=0,
                                binding="", terms_s={}),
                    binding_constraint="", candidate_id=c.id)
    ev = evaluate(skeleton, q)
    # TODO(issue 11): Evaluation types these fields as `object`; the new evaluate() will return them typed
    mem = cast(DeviceMemory, ev.mem)
    speed = cast(SpeedEstimate, ev.speed)
    prefill = cast(PrefillEstimate, ev.prefill)
    cost = {"capex": ev.capex_usd, "hourly": ev.usd_per_hour, "power": ev.power_watts}[q.objective] or 0.0
    slack = {"device memory": mem.headroom_bytes / mem.budget_bytes}
    if ev.host_used:
        slack["host DRAM"] = (ev.host_capacity - ev.host_used) / ev.host_capacity
    if q.tok_s:
        slack["decode tok/s"] = speed.tok_s_per_seq / q.tok_s - 1
    if q.ttft_s:
        slack["TTFT"] = q.ttft_s / prefill.ttft_s - 1
    if q.max_budget:
        slack["budget"] = q.max_budget / cost - 1 if cost else 1.0
    binding = min(slack, key=lambda k: slack[k])
    notes = list(c.notes)
    world = c.n_nodes * c.gpus_per_node
    acct = {"vllm": f"vLLM budget = gpu_memory_utilization {mem.budget_bytes / mem.capacity_bytes:.2f} x total memory",
            "sglang": "SGLang: weights + KV within total memory less its activation/graph reserve",
            "llamacpp": "llama.cpp: weights + KV + compute buffer within device memory"}[c.engine]
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
    if status_note:
        notes.append(status_note)
    return skeleton.model_copy(update=dict(
        offload=skeleton.offload.model_copy(
            update={"host_bytes": max(0.0, ev.host_used - (HOST_RESERVED_BYTES if x + z else 0))}),
        costs=Costs(capex_usd=ev.capex_usd, usd_per_hour=ev.usd_per_hour, power_watts=ev.power_watts,
                    objective=q.objective, objective_value=cost),
        memory=Memory(capacity_bytes=mem.capacity_bytes, budget_bytes=mem.budget_bytes, weights_bytes=mem.weights_bytes,
                      kv_bytes=mem.kv_bytes, runtime_bytes=mem.runtime_bytes, headroom_bytes=mem.headroom_bytes,
                      host_used_bytes=ev.host_used, host_capacity_bytes=ev.host_capacity),
        speed=Speed(tok_s_per_seq=speed.tok_s_per_seq, tok_s_bound_per_seq=speed.tok_s_bound_per_seq,
                    tok_s_aggregate=speed.tok_s_aggregate, ttft_s=prefill.ttft_s,
                    ttft_bound_s=prefill.ttft_bound_s, binding=speed.binding, terms_s=speed.terms_s),
        binding_constraint=binding, notes=notes))


def m_is_moe(q: Query) -> bool:
    return resolve_model(q.model).spec.is_moe


def cheapest(q: Query) -> CheapestResult:
    t0 = time.perf_counter()
    m = resolve_model(q.model)
    load_hardware()
    cands = enumerate_candidates(q, m)
    rows = to_rows(cands, q)
    lim = limits(q)
    plans: list[Plan] = []
    exclude: set[int] = set()
    status, best_cost, bound = "INFEASIBLE", None, None
    solve_s = 0.0
    for k in range(q.top + 1):
        model = DeploymentModel(rows, lim, frozenset(exclude))
        h = greedy_hint([r for r in rows if r.index not in exclude], lim)
        if h is not None:
            model.hint(*h)
        sol = model.solve(time_limit_s=q.time_limit_s, workers=q.workers)
        solve_s += sol.wall_s
        if sol.index is None:
            break
        if k == 0:
            status, best_cost = sol.status, sol.cost
            bound = sol.bound
        note = "" if k else (f"solver status {sol.status}" + (
            f", proven gap {(sol.cost - sol.bound) / sol.cost:.2%}"
            if sol.status == "FEASIBLE" and sol.cost and sol.bound is not None else ""))
        plan = build_plan(cands[sol.index], q, dram_layers=sol.dram_layers, extra_dram_gb=sol.extra_dram_gb,
                          nvme_layers=sol.nvme_layers, status_note=note)
        problems = check(plan, q)
        if problems:  # never return a plan the independent check rejects
            plan.notes.append("REJECTED by the independent check: " + "; ".join(problems))
            exclude.add(sol.index)
            if k == 0:
                status = "CHECK_FAILED"
            continue
        plans.append(plan)
        exclude.add(sol.index)
        if len(plans) >= q.top:
            break
    unit = COST_UNIT[q.objective]
    result = CheapestResult(
        query=q, status=status if plans else "INFEASIBLE", objective=q.objective,
        cost=plans[0].costs.objective_value if plans else None,
        bound=bound * unit if bound is not None else None,
        gap=((best_cost - bound) / best_cost) if (best_cost and bound is not None) else (0.0 if plans else None),
        plan=plans[0] if plans else None, alternatives=plans[1:], candidates=len(cands), solve_s=solve_s,
        total_s=time.perf_counter() - t0)
    if not plans:
        reasons, relax = relaxations(q, m, cands)
        result = result.model_copy(update={"infeasible_reasons": reasons, "relaxations": relax,
                                           "total_s": time.perf_counter() - t0})
    return result
