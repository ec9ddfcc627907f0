"""Independent float re-check of a plan: rebuilt from the catalogue and the physics (`estimate.evaluate`), never
from the solver's table."""

from __future__ import annotations

from dataclasses import dataclass, replace

from optimizer.catalog.hardware import get_node, load_hardware
from optimizer.catalog.host_spec import parse_host
from optimizer.catalog.models import resolve_model
from optimizer.catalog.offers import PriceOffer, unit_offer, unit_power_watts
from optimizer.estimate.deployment import Deployment, EngineSettings, Evaluation, Hardware, Offload, SpecDecode
from optimizer.estimate.deployment import evaluate as evaluate_deployment
from optimizer.estimate.memory import DeviceMemory
from optimizer.estimate.schemes import get_scheme
from optimizer.estimate.speed import PrefillEstimate, SpeedEstimate
from optimizer.estimate.uncertainty import planning_ratios
from optimizer.layout import Parallel
from optimizer.moe.imbalance import expected_imbalance, kt_experts_per_layer, load_aware_gpu_share
from optimizer.solver.plan import Plan
from optimizer.solver.query import Query
from optimizer.solver.support import plan_unsupported
from optimizer.topology_links import plan_links


@dataclass(frozen=True)
class PlanEvaluation:
    """The physics of a plan (one `evaluate()`) plus its costs from the catalogue."""
    physics: Evaluation
    capex_usd: float | None
    usd_per_hour: float | None
    power_watts: float
    host_capacity: float
    nvme_capacity: float
    speed_ratio: float = 1.0      # q.confidence: the decode speed the targets are held to is speed x this (<= 1)
    ttft_ratio: float = 1.0       # ... and the TTFT, TTFT x this (>= 1)
    offer: PriceOffer | None = None  # the catalogue offer the objective is priced from (None: owned, or no price)

    @property
    def planned_tok_s(self) -> float:
        """Decode tok/s per sequence at the low end of the confidence interval (the expected figure without one)."""
        return self.speed_ratio / self.physics.tpot_s

    @property
    def planned_ttft_s(self) -> float:
        return self.physics.ttft_s * self.ttft_ratio

    @property
    def mem(self) -> DeviceMemory:
        return self.physics.memory

    @property
    def speed(self) -> SpeedEstimate:
        return self.physics.decode

    @property
    def prefill(self) -> PrefillEstimate:
        return self.physics.prefill

    @property
    def host_used(self) -> float:
        return self.physics.host_used_bytes

    @property
    def nvme_used(self) -> float:
        return self.physics.nvme_used_bytes

    @property
    def expert_bits(self) -> float:
        return self.physics.expert_bits

    @property
    def attn_bits(self) -> float:
        return self.physics.attn_bits


def plan_deployment(plan: Plan, q: Query) -> Deployment:
    """The deployment a plan describes (what every consumer of a plan file evaluates)."""
    m = resolve_model(q.model)
    node = get_node(plan.hardware.node)
    acc = load_hardware().accelerators[node.accelerator]
    par = Parallel(tp=plan.parallel.tp, pp=plan.parallel.pp, dp=plan.parallel.dp, ep=plan.parallel.ep)
    n_moe = len(m.spec.moe_layers)
    share = imbalance = None
    if q.loads and m.spec.is_moe:
        if par.ep and par.ep_size > 1:
            imbalance = expected_imbalance(m.spec, par.ep_size, 0, q.loads)
        if plan.offload.mode == "cpu" and plan.engine == "sglang" and plan.offload.expert_layers_offloaded:
            share = load_aware_gpu_share(m.spec, kt_experts_per_layer(m.spec, n_moe - plan.offload.expert_layers_offloaded),
                                         q.loads)
    off = Offload(mode=plan.offload.mode, dram_layers=plan.offload.expert_layers_offloaded,
                  nvme_layers=len(plan.offload.nvme_layers), activation_share_gpu=share)
    st = plan.settings
    settings = EngineSettings(max_num_seqs=st.max_num_seqs or None,
                              max_num_batched_tokens=st.max_num_batched_tokens or None,
                              gpu_memory_utilization=st.gpu_memory_utilization,
                              mem_fraction_static=st.mem_fraction_static,
                              block_size=st.block_size or None) if st is not None else EngineSettings()
    sp = plan.spec_decode
    spec = None if sp is None else SpecDecode(method=sp.method, num_tokens=sp.num_tokens, accept_len=sp.accept_len,
                                              draft_model=sp.draft_model, source=sp.source,
                                              draft_params=sp.draft_params)
    hardware = Hardware(acc, node, plan.hardware.n_nodes, plan.hardware.gpus_per_node)
    if plan.hardware.owned and q.owned is not None and q.owned.host:  # the owned box's own host (as candidates)
        cpu_host = parse_host(q.owned.host).resolve()
        hardware = replace(hardware, links=replace(plan_links(node, plan.hardware.n_nodes, par), host=cpu_host,
                                                   host_dram_bw=cpu_host.theoretical_bw_bytes_per_s))
    return Deployment(model=m, quant=plan.quant, engine=plan.engine, settings=settings, spec_decode=spec,
                      hardware=hardware,
                      parallel=par, context=plan.context, concurrency=plan.concurrency, kv_dtype=plan.kv_dtype,
                      offload=off, workload=q.workload,
                      prompt_tokens=q.prompt_tokens or (None if q.workload else q.context), load_imbalance=imbalance,
                      calibration=q.calibration)


def evaluate(plan: Plan, q: Query) -> PlanEvaluation:
    ev = evaluate_deployment(plan_deployment(plan, q))
    hw = load_hardware()
    node = get_node(plan.hardware.node)
    acc = hw.accelerators[node.accelerator]
    n = plan.hardware.n_nodes
    nvme_capacity = 0.0
    if node.nvme:
        nvme_capacity = hw.storage[node.nvme].capacity_bytes * max(node.nvme_count, 1)
    extra = plan.hardware.extra_dram_bytes
    dram_cost = hw.hosts[node.host].dram_usd_per_gb * extra / 1e9 * n
    capex: float | None
    hourly: float | None
    g = plan.hardware.gpus_per_node
    offer = None
    if plan.hardware.owned:
        capex, hourly = dram_cost, 0.0
    else:  # the unit's offers in the catalogue (optimizer/catalog/offers.py), whole or partly filled
        buy, rent = unit_offer(node.key, g, "capex"), unit_offer(node.key, g, "hourly")
        capex = buy.capex_usd * n + dram_cost if buy is not None and buy.capex_usd is not None else None
        hourly = rent.usd_per_hour * n if rent is not None and rent.usd_per_hour else None
        offer = rent if q.objective == "hourly" else buy
    # the plan's own regime: offloaded experts -> the offload interval (the planner holds a candidate that may
    # offload to it at every level, so a plan it returns with no offload passes here with margin to spare)
    sr, tr = planning_ratios(plan.engine, acc, q.planning_batch, q.confidence, q.workload is not None,
                             offload=plan.offload.mode != "none", spec=resolve_model(plan.model).spec)
    return PlanEvaluation(physics=ev, capex_usd=capex, usd_per_hour=hourly, power_watts=unit_power_watts(node.key, g) * n,
                          host_capacity=float(plan.hardware.host_dram_bytes), nvme_capacity=nvme_capacity,
                          speed_ratio=sr, ttft_ratio=tr, offer=offer)


def check(plan: Plan, q: Query, tol: float = 1e-6) -> list[str]:
    """Every constraint the plan violates, in words (empty list = the plan is valid)."""
    ev = evaluate(plan, q)
    bad = []
    node = get_node(plan.hardware.node)
    if plan.parallel.tp * plan.parallel.pp * plan.parallel.dp != plan.hardware.n_nodes * plan.hardware.gpus_per_node:
        bad.append("parallel layout does not use exactly the plan's GPUs")
    m = resolve_model(q.model)
    why = plan_unsupported(plan.engine, m.spec, load_hardware().accelerators[node.accelerator].arch,
                           get_scheme(plan.quant, m.storage), plan.offload.mode,
                           plan.offload.expert_layers_offloaded, load_hardware().hosts[node.host].isa)
    if why:
        bad.append(why)
    if plan.parallel.tp > node.accelerators_per_node:
        bad.append("tensor parallelism crosses a node boundary")
    if plan.context != q.context or plan.concurrency < q.kv_sequences:
        bad.append("plan does not serve the asked context/concurrency")
    if not ev.physics.sustainable:
        bad.append("the workload is not sustainable: " + "; ".join(ev.physics.serving.notes if ev.physics.serving else ()))
    if not ev.mem.fits:
        bad.append(f"device memory: needs {ev.mem.used_bytes / 2**30:.2f} GiB of a {ev.mem.budget_bytes / 2**30:.2f} GiB budget")
    if ev.nvme_used > ev.nvme_capacity * (1 + tol):
        bad.append(f"NVMe: needs {ev.nvme_used / 1e9:.1f} GB of {ev.nvme_capacity / 1e9:.1f} GB")
    if plan.offload.nvme_layers and plan.engine != "llamacpp":
        bad.append("only llama.cpp (mmap) reads expert layers from NVMe")
    if ev.host_used > ev.host_capacity * (1 + tol):
        bad.append(f"host DRAM: needs {ev.host_used / 1e9:.1f} GB of {ev.host_capacity / 1e9:.1f} GB")
    at = f" at the low end of the {q.confidence:.0%} interval" if q.confidence else ""
    if q.tok_s and ev.planned_tok_s < q.tok_s * (1 - tol):
        bad.append(f"decode speed {ev.planned_tok_s:.2f} tok/s{at} < target {q.tok_s}")
    if q.ttft_s and ev.planned_ttft_s > q.ttft_s * (1 + tol):
        bad.append(f"TTFT {ev.planned_ttft_s:.2f} s{at} > target {q.ttft_s} s")
    if ev.expert_bits < q.min_expert_bits or ev.attn_bits < q.min_attn_bits:
        bad.append("quantization below the quality floor")
    cost = {"capex": ev.capex_usd, "hourly": ev.usd_per_hour, "power": ev.power_watts}[q.objective]
    if cost is None:
        bad.append(f"no {q.objective} price for this hardware")
    elif q.max_budget is not None and cost > q.max_budget * (1 + tol):
        bad.append(f"cost {cost:,.2f} exceeds budget {q.max_budget:,.2f}")
    return bad
