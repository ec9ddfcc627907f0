"""Independent float re-check of a plan: rebuilt from the catalogue and the physics, never from the solver's table."""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.catalog.devices import device_of
from optimizer.catalog.hardware import (cloud_usd_per_gpu_hour, get_node, load_hardware, node_capex_usd,
                                        node_power_watts)
from optimizer.catalog.models import resolve_model
from optimizer.estimate.kv import kv_estimate
from optimizer.estimate.memory import Parallel, device_memory
from optimizer.estimate.schemes import get_scheme, quality_bits
from optimizer.estimate.speed import ExpertTiers, decode_speed, kernel_bits, prefill_time
from optimizer.estimate.weights import weights_of
from optimizer.solver.links import plan_links
from optimizer.solver.plan import Plan
from optimizer.solver.query import Query
from optimizer.solver.support import unsupported

RESERVED_HOST_BYTES = 16 * 2**30  # keep in step with the planner's host reserve (OS, engine, page cache)


@dataclass(frozen=True)
class Evaluation:
    mem: object
    speed: object
    prefill: object
    capex_usd: float | None
    usd_per_hour: float | None
    power_watts: float
    host_used: float
    host_capacity: float
    nvme_used: float
    nvme_capacity: float
    expert_bits: float
    attn_bits: float


def evaluate(plan: Plan, q: Query) -> Evaluation:
    m = resolve_model(q.model)
    spec = m.spec
    node = get_node(plan.hardware.node)
    hw = load_hardware()
    acc = hw.accelerators[node.accelerator]
    scheme = get_scheme(plan.quant, m.storage)
    w = weights_of(spec, scheme, m.weights_file, plan.quant, include_mtp=False)
    par = Parallel(tp=plan.parallel.tp, pp=plan.parallel.pp, dp=plan.parallel.dp, ep=plan.parallel.ep)
    kv = kv_estimate(spec, plan.engine, plan.kv_dtype, tp=par.tp)
    n_moe = sum(1 for l in spec.main_layers if l.is_moe)
    off = plan.offload.expert_layers_offloaded / n_moe if n_moe else 0.0
    on_nvme = len(plan.offload.nvme_layers) / n_moe if n_moe else 0.0
    mem = device_memory(spec, w, kv, engine=plan.engine, capacity_bytes=acc.memory_usable_bytes,
                        context=plan.context, concurrency=plan.concurrency, par=par,
                        gpu_expert_fraction=1 - off - on_nvme,
                        unified=acc.kind == "unified")
    tiers = ExpertTiers()
    share = imbalance = None
    if q.loads and spec.is_moe:
        from optimizer.place.api import expected_imbalance, kt_experts_per_layer, load_aware_gpu_share
        if par.ep and par.ep_size > 1:
            imbalance = expected_imbalance(spec, par.ep_size, 0, q.loads)
        if plan.offload.mode == "cpu" and plan.engine == "sglang" and plan.offload.expert_layers_offloaded:
            share = load_aware_gpu_share(spec, kt_experts_per_layer(spec, n_moe - plan.offload.expert_layers_offloaded),
                                         q.loads)
    if plan.offload.mode == "cpu":
        tiers = ExpertTiers(gpu=1 - off - on_nvme, cpu=off, nvme=on_nvme, activation_share_gpu=share)
    elif plan.offload.mode == "stream":
        tiers = ExpertTiers(gpu=1 - off, stream=off)
    native = get_scheme("native", m.storage)
    cls = "routed_experts" if spec.is_moe else "dense_ffn"
    exp_bits, attn_bits = quality_bits(spec, scheme, native)
    bits = kernel_bits({f for _, f in scheme.mix(cls)}, acc.native_fp8, acc.native_fp4)
    links = plan_links(node, plan.hardware.n_nodes, par)
    sp = decode_speed(spec, w, kv, device_of(acc), par=par, context=plan.context, batch=plan.concurrency,
                      links=links, tiers=tiers, compute_bits=bits, n_nodes=plan.hardware.n_nodes,
                      load_imbalance=imbalance, engine=plan.engine)
    pf = prefill_time(spec, w, device_of(acc), par=par, prompt_tokens=q.prompt_tokens or q.context, links=links,
                      tiers=tiers, compute_bits=bits, engine=plan.engine)
    n = plan.hardware.n_nodes
    host_used = (w.routed_expert_bytes * off + RESERVED_HOST_BYTES) if (off or on_nvme) else 0.0
    nvme_used = w.routed_expert_bytes * on_nvme
    nvme_capacity = 0.0
    if node.nvme:
        nvme_capacity = hw.storage[node.nvme].capacity_bytes * max(node.nvme_count, 1)
    extra = plan.hardware.extra_dram_bytes
    dram_cost = hw.hosts[node.host].dram_usd_per_gb * extra / 1e9 * n
    if plan.hardware.owned:
        capex, hourly = dram_cost, 0.0
    else:
        base = node_capex_usd(node.key)
        capex = base * n + dram_cost if base is not None else None
        price = cloud_usd_per_gpu_hour(acc.key)
        hourly = price.usd_per_hour * n * plan.hardware.gpus_per_node if price and price.usd_per_hour else None
    return Evaluation(mem=mem, speed=sp, prefill=pf, capex_usd=capex, usd_per_hour=hourly,
                      power_watts=node_power_watts(node.key) * n, host_used=host_used,
                      host_capacity=float(plan.hardware.host_dram_bytes), nvme_used=nvme_used,
                      nvme_capacity=nvme_capacity, expert_bits=exp_bits,
                      attn_bits=attn_bits)


def check(plan: Plan, q: Query, tol: float = 1e-6) -> list[str]:
    """Every constraint the plan violates, in words (empty list = the plan is valid)."""
    ev = evaluate(plan, q)
    bad = []
    node = get_node(plan.hardware.node)
    if plan.parallel.tp * plan.parallel.pp * plan.parallel.dp != plan.hardware.n_nodes * plan.hardware.gpus_per_node:
        bad.append("parallel layout does not use exactly the plan's GPUs")
    why = unsupported(plan.engine, resolve_model(q.model).spec.family, load_hardware().accelerators[node.accelerator].arch,
                      kt=plan.engine == "sglang" and plan.offload.mode == "cpu")
    if why:
        bad.append(why)
    if plan.parallel.tp > node.accelerators_per_node:
        bad.append("tensor parallelism crosses a node boundary")
    if plan.context != q.context or plan.concurrency < q.concurrency:
        bad.append("plan does not serve the asked context/concurrency")
    if not ev.mem.fits:
        bad.append(f"device memory: needs {ev.mem.used_bytes / 2**30:.2f} GiB of a {ev.mem.budget_bytes / 2**30:.2f} GiB budget")
    if ev.nvme_used > ev.nvme_capacity * (1 + tol):
        bad.append(f"NVMe: needs {ev.nvme_used / 1e9:.1f} GB of {ev.nvme_capacity / 1e9:.1f} GB")
    if plan.offload.nvme_layers and plan.engine != "llamacpp":
        bad.append("only llama.cpp (mmap) reads expert layers from NVMe")
    if ev.host_used > ev.host_capacity * (1 + tol):
        bad.append(f"host DRAM: needs {ev.host_used / 1e9:.1f} GB of {ev.host_capacity / 1e9:.1f} GB")
    if q.tok_s and ev.speed.tok_s_per_seq < q.tok_s * (1 - tol):
        bad.append(f"decode speed {ev.speed.tok_s_per_seq:.2f} tok/s < target {q.tok_s}")
    if q.ttft_s and ev.prefill.ttft_s > q.ttft_s * (1 + tol):
        bad.append(f"TTFT {ev.prefill.ttft_s:.2f} s > target {q.ttft_s} s")
    if ev.expert_bits < q.min_expert_bits or ev.attn_bits < q.min_attn_bits:
        bad.append("quantization below the quality floor")
    cost = {"capex": ev.capex_usd, "hourly": ev.usd_per_hour, "power": ev.power_watts}[q.objective]
    if cost is None:
        bad.append(f"no {q.objective} price for this hardware")
    elif q.max_budget is not None and cost > q.max_budget * (1 + tol):
        bad.append(f"cost {cost:,.2f} exceeds budget {q.max_budget:,.2f}")
    return bad
