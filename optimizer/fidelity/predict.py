"""Reproduce one measurement row with rigopt's own estimator (the functions `rigopt estimate` calls)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from optimizer.catalog.devices import node_for
from optimizer.catalog.hardware import get_accelerator
from optimizer.catalog.host_spec import HostSpec, host_spec_from_measurement
from optimizer.catalog.models import resolve_model
from optimizer.estimate.cpu_experts import KT_GPU_PREFILL_TOKEN_THRESHOLD
from optimizer.estimate.deployment import (
    Deployment,
    EngineSettings,
    Hardware,
    Offload,
    evaluate,
    links_for,
    resident_weights,
)
from optimizer.estimate.kv import kv_estimate
from optimizer.estimate.memory import weights_per_device
from optimizer.estimate.speed import device_family
from optimizer.layout import Parallel
from optimizer.report.estimate import default_parallel


def predict_memory(row: dict) -> float:
    """Same computation as tests/test_published_measurements.py (bytes or tokens, in the row's unit)."""
    m = resolve_model(row["model"])
    metric = row["metric"]
    if metric in ("weights_per_gpu_bytes", "gguf_file_bytes"):
        # the weights an engine holds (its padding included), as evaluate() computes them
        _, w = resident_weights(m, row["quant"], row.get("engine") or "llamacpp",
                                include_mtp=bool(row.get("include_mtp")))
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
    return device_family(acc.vendor, acc.kind)


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


def deployment_of(row: dict) -> Deployment:
    """The deployment a speed row measured (what `rigopt estimate` would be asked)."""
    m = resolve_model(row["model"])
    spec = m.spec
    engine = row["engine"]
    acc = get_accelerator(row["accelerator"])
    gpus = int(row.get("gpus") or 1)
    p = row.get("parallel")
    par = Parallel(tp=int(p.get("tp", 1)), pp=int(p.get("pp", 1)), dp=int(p.get("dp", 1)),
                   ep=bool(p.get("ep", False))) if p else default_parallel(m, acc, gpus, engine)
    if par.world != gpus:
        raise ValueError(f"{row['id']}: parallel layout {par.label()} does not use {gpus} devices")
    node = node_for(acc.key, gpus)
    per_node = min(node.accelerators_per_node, gpus) if node else gpus
    hw = Hardware(acc, node, -(-gpus // per_node), per_node)
    links = links_for(hw, par)  # as the CLI and solver do
    off = Offload()
    o = row.get("offload")
    if o:
        n_moe = max(len(spec.moe_layers), 1)
        off = Offload(mode="cpu", dram_layers=min(float(n_moe), float(o["cpu_expert_layers"])))
        spec_h = row.get("host_spec")
        if spec_h is not None or o.get("host"):
            hs = host_spec_from_measurement(spec_h) if spec_h is not None else HostSpec(cpu=o["host"])
            ch = hs.resolve()
            links = replace(links, host_dram_bw=ch.theoretical_bw_bytes_per_s, host=ch)
    ctx = context_of(row)
    batch = int(row.get("batch") or 1)
    return Deployment(model=m, quant=row["quant"], engine=engine, hardware=replace(hw, links=links), parallel=par,
                      context=ctx, concurrency=batch, offload=off, prompt_tokens=ctx,
                      settings=EngineSettings(max_num_batched_tokens=_ubatch(row) if engine == "llamacpp" else None,
                                              # KTransformers' own builds (every published KT run): layerwise prefill
                                              kt_gpu_prefill_token_threshold=KT_GPU_PREFILL_TOKEN_THRESHOLD
                                              if off is not None and engine == "sglang" else None))


def _ubatch(row: dict) -> int | None:
    """llama.cpp's -ub / --ubatch-size from the row's stated flags (None: the default 512)."""
    m = re.search(r"(?:^|\s)(?:-ub|--ubatch-size)[ =](\d+)", str(row.get("flags") or ""))
    return int(m.group(1)) if m else None


def predict_speed(row: dict) -> SpeedCase:
    d = deployment_of(row)
    ev = evaluate(d)
    spec, acc = d.model.spec, d.hardware.accelerator
    n_layers, n_moe = len(spec.main_layers), len(spec.moe_layers)
    if row["metric"] == "decode_tok_s":
        sp = ev.decode
        return SpeedCase(sp.tok_s_per_seq, sp.tok_s_bound_per_seq, family_of(acc), n_layers, n_moe,
                         dict(sp.terms_s), sp.bound_step_time_s, sp.binding, row["engine"], d.parallel.tp)
    if row["metric"] == "prefill_tok_s":
        pf = ev.prefill
        P = pf.prompt_tokens
        return SpeedCase(pf.tok_s, P / pf.ttft_bound_s, family_of(acc), n_layers, n_moe, {}, pf.ttft_bound_s,
                         pf.binding, row["engine"], d.parallel.tp)
    raise ValueError(f"{row['id']}: unknown speed metric {row['metric']}")
