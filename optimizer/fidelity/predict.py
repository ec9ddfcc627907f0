"""Reproduce one measurement row with rigopt's own estimator (the functions `rigopt estimate` calls)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from optimizer.catalog.devices import device_of, node_for
from optimizer.catalog.hardware import get_accelerator, load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.estimate.kv import kv_estimate
from optimizer.estimate.memory import Parallel, weights_per_device
from optimizer.estimate.schemes import get_scheme
from optimizer.estimate.speed import ExpertTiers, Links, decode_speed, prefill_time
from optimizer.solver.links import plan_links
from optimizer.estimate.weights import weight_breakdown
from optimizer.report.estimate import _compute_bits, _weights_for, default_parallel


def predict_memory(row: dict) -> float:
    """Same computation as tests/test_published_measurements.py (bytes or tokens, in the row's unit)."""
    m = resolve_model(row["model"])
    metric = row["metric"]
    if metric in ("weights_per_gpu_bytes", "gguf_file_bytes"):
        w = weight_breakdown(m.spec, get_scheme(row["quant"], m.storage), include_mtp=bool(row.get("include_mtp")))
        if metric == "gguf_file_bytes":
            return w.total
        return weights_per_device(w, Parallel(tp=int(row["tp"]), ep=bool(row.get("ep", False))))
    kv = kv_estimate(m.spec, engine=row["engine"], kv_dtype=row["kv_dtype"], tp=int(row["tp"]))
    if metric == "kv_bytes_per_token":
        return kv.growth_bytes_per_token()
    if metric == "kv_tokens_for_bytes":
        return row["kv_pool_bytes"] / kv.growth_bytes_per_token()
    raise ValueError(f"{row['id']}: unknown metric {metric}")


def family_of(acc) -> str:
    """Key of factors.BW_EFFICIENCY that Device.bw_efficiency uses for this accelerator."""
    if acc.kind == "gpu":
        return acc.vendor
    return "apple" if acc.vendor == "apple" else "unified"


@dataclass(frozen=True)
class SpeedCase:
    """A speed row's prediction and the parts the calibration rescales."""
    predicted: float          # tok/s
    bound: float              # roofline tok/s (the prediction can never exceed it)
    family: str               # BW_EFFICIENCY key
    n_layers: int
    n_moe_layers: int
    terms_s: dict             # expected-time components of one decode step (decode rows)
    bound_step_s: float
    binding: str
    engine: str = "vllm"
    tp: int = 1


def context_of(row: dict) -> int:
    """Mean KV length while the row's tokens are generated (decode) or the prompt length (prefill)."""
    if row["metric"] == "decode_tok_s":
        return max(1, int(row.get("depth") or 0) + int(row.get("gen_tokens") or 1) // 2)
    return int(row["prompt_tokens"])


def _setup(row: dict):
    m = resolve_model(row["model"])
    spec = m.spec
    engine = row["engine"]
    acc = get_accelerator(row["accelerator"])
    gpus = int(row.get("gpus") or 1)
    scheme, w = _weights_for(m, row["quant"])
    p = row.get("parallel")
    par = Parallel(tp=int(p.get("tp", 1)), pp=int(p.get("pp", 1)), dp=int(p.get("dp", 1)),
                   ep=bool(p.get("ep", False))) if p else default_parallel(m, acc, gpus, engine)
    if par.world != gpus:
        raise ValueError(f"{row['id']}: parallel layout {par.label()} does not use {gpus} devices")
    node = node_for(acc.key, gpus)
    per_node = node.accelerators_per_node if node else gpus
    kvh = kv_estimate(spec, engine, None, tp=par.tp)
    links = plan_links(node, -(-gpus // per_node), par) if node is not None else Links()  # as the CLI and solver do
    tiers = None
    off = row.get("offload")
    if off:
        moe = spec.moe_layers
        frac = min(1.0, int(off["cpu_expert_layers"]) / max(len(moe), 1))
        tiers = ExpertTiers(gpu=1.0 - frac, cpu=frac)
        if off.get("host"):
            host = load_hardware().hosts[off["host"]]
            links = replace(links, host_dram_bw=host.dram_bw_bytes_per_s,
                            host_dram_efficiency=host.dram_bw_sustained_fraction,
                            host_flops=host.cpu_expert_flops)
    bits = _compute_bits(scheme, acc, spec.is_moe)
    return m, spec, acc, w, par, kvh, links, tiers, bits, -(-gpus // per_node)


def predict_speed(row: dict) -> SpeedCase:
    m, spec, acc, w, par, kvh, links, tiers, bits, n_nodes = _setup(row)
    dev = device_of(acc)
    n_layers, n_moe = len(spec.main_layers), len(spec.moe_layers)
    if row["metric"] == "decode_tok_s":
        sp = decode_speed(spec, w, kvh, dev, par=par, context=context_of(row), batch=int(row.get("batch") or 1),
                          links=links, tiers=tiers, compute_bits=bits, n_nodes=n_nodes, engine=row["engine"])
        return SpeedCase(sp.tok_s_per_seq, sp.tok_s_bound_per_seq, family_of(acc), n_layers, n_moe,
                         dict(sp.terms_s), sp.bound_step_time_s, sp.binding, row["engine"], par.tp)
    if row["metric"] == "prefill_tok_s":
        P = context_of(row)
        pf = prefill_time(spec, w, dev, par=par, prompt_tokens=P, links=links, tiers=tiers, compute_bits=bits,
                          engine=row["engine"])
        return SpeedCase(pf.tok_s, P / pf.ttft_bound_s, family_of(acc), n_layers, n_moe, {}, pf.ttft_bound_s,
                         pf.binding, row["engine"], par.tp)
    raise ValueError(f"{row['id']}: unknown speed metric {row['metric']}")
