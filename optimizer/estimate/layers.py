"""Per-layer quantities of one model at one quantization, engine, context and concurrency: bytes of weights and KV
each main layer holds, bytes it reads and FLOPs it needs per decode step, and what belongs to no layer (embedding,
head, final norms). A mixed-hardware plan places layers on devices; its per-device figures are sums of these.

Pure, and built from the same pieces `evaluate()` uses (`resident_weights`, `kv_estimate`, `distinct_experts`,
`attended_rows`, the engine runtime of `device_memory`): for a homogeneous single-device deployment the sums over
all layers equal `evaluate()`'s memory and decode time (tests/test_hetero_layers.py checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optimizer.catalog.hardware_schema import Accelerator
from optimizer.catalog.models import ResolvedModel
from optimizer.estimate import factors as F
from optimizer.estimate.deployment import device_of, resident_weights
from optimizer.estimate.kv import KVLayout, default_kv_dtype, kv_estimate
from optimizer.estimate.memory import default_max_num_batched_tokens, hybrid_kv_per_seq, vllm_sampler_peak_bytes
from optimizer.estimate.recurrent import recurrent_estimate
from optimizer.estimate.speed import (
    Device,
    attended_rows,
    distinct_experts,
    kernel_bits,
    llamacpp_extra_kernels_s,
    per_seq_step_s,
)
from optimizer.estimate.weights import class_bytes


@dataclass(frozen=True)
class LayerCost:
    """One main layer. Bytes are for the whole layer (llama.cpp layer split: a layer lives on one device)."""

    index: int
    is_moe: bool
    dense_bytes: float  # everything but the routed experts (attention, norms, shared experts, router)
    expert_bytes: float  # all routed experts of the layer
    kv_bytes: float  # KV of `concurrency` sequences at `context`
    dense_read: float  # bytes of non-expert weights read per decode step
    expert_read: float  # routed-expert bytes read per step (distinct experts the batch touches)
    kv_read: float  # KV bytes read per step (all sequences)
    dense_flops: float  # per step: dense matmuls + attention
    expert_flops: float  # per step: routed experts (where they are computed)
    inflight_per_token: float = 0.0  # vLLM DeepSeek-V4: SWA/compressor state reserved per in-flight prefill token


@dataclass(frozen=True)
class ModelLayers:
    model: str
    quant: str
    engine: str
    kv_dtype: str
    context: int
    concurrency: int
    layers: tuple[LayerCost, ...]
    global_bytes: float  # head, final norms (+ the embedding table in llama.cpp): on the device of the last layer
    global_read: float  # head + norms + one embedding row per step
    global_flops: float
    expert_formats: frozenset[str]
    fixed_overhead_s: float  # engine per-step, per-layer and per-MoE-layer costs (independent of placement)
    first_bytes: float = 0.0  # vLLM: the embedding table, on the first pipeline stage (is_first_rank)

    @property
    def n(self) -> int:
        return len(self.layers)

    @property
    def moe_indices(self) -> tuple[int, ...]:
        return tuple(l.index for l in self.layers if l.is_moe)


def model_layers(
    m: ResolvedModel, quant: str, engine: str, context: int, concurrency: int = 1, kv_dtype: str | None = None
) -> ModelLayers:
    """Per-layer costs of `m` served by `engine` (KV rows and weights as that engine holds them; TP 1)."""
    spec = m.spec
    scheme, w = resident_weights(m, quant, engine, include_mtp=False)
    kvd = (kv_dtype or default_kv_dtype(spec, engine)).lower()
    kv = kv_estimate(spec, engine, kvd, tp=1, include_mtp=False)
    B = max(1, concurrency)
    by_layer: dict[int, list[Any]] = {}
    for idx, lay in kv.layouts:
        by_layer.setdefault(idx, []).append(lay)
    out = []
    dense_sum = dense_read_sum = dense_params_sum = 0.0
    # hybrid models: the recurrent state of each recurrent layer (what evaluate() charges, spread evenly over the
    # layers), read and written once per step; attention KV with the engine's block rounding (memory.hybrid_kv_per_seq)
    attn_lay = next((x for _, x in kv.layouts if x.stream.kind in ("kv", "mla")), None)
    rec = recurrent_estimate(spec, engine, attn_token_bytes=attn_lay.row_bytes if attn_lay else 0.0,
                             is_mla=attn_lay is not None and attn_lay.stream.kind == "mla") if spec.is_hybrid else None
    kv_scale = hybrid_kv_per_seq(kv, rec, context) / kv.bytes_at(context) if rec and kv.bytes_at(context) else 1.0
    st_layer = rec.per_seq_bytes / rec.layers if rec else 0.0
    st_rw = 2.0 * rec.set_bytes / rec.layers if rec else 0.0
    for i, l in enumerate(spec.main_layers):
        lb = {c: class_bytes(n, scheme, c, l.is_mtp) for c, n in l.params.items()}
        dense = sum(b for c, b in lb.items() if c != "routed_experts")
        dense_read = sum(b for c, b in lb.items() if c not in ("routed_experts", "lookup"))
        dense_params = sum(n for c, n in l.params.items() if c not in ("routed_experts", "lookup"))
        exp_bytes = w.per_layer_experts[i]
        u = distinct_experts(l.n_routed_experts, l.experts_per_token, B) if l.is_moe else 0.0
        eb = exp_bytes / l.n_routed_experts if l.is_moe else 0.0
        lays = by_layer.get(l.index, [])
        kv_b = B * sum(x.bytes_at(context) for x in lays) * kv_scale
        kv_r = B * sum(_read_rows(x, context, kv.index_topk) * x.row_bytes for x in lays if x.stream.kind != "state")
        if l.recurrent is not None:
            kv_b += B * st_layer
            kv_r += B * st_rw
        attn = l.attn_flops_per_ctx * attended_rows(l, context) + l.indexer_flops_per_ctx * context / max(
            l.indexer_ratio, 1
        ) + (l.recurrent.decode_flops() if l.recurrent is not None else 0)
        inflight = 0.0
        if engine == "vllm" and spec.family == "deepseek_v4":  # memory.v4_inflight_reserve, layer by layer
            inflight = (
                584
                + (F.VLLM_V4_INFLIGHT_BYTES_PER_TOKEN_PER_C4.value if l.attn_kind == "v4-csa" else 0.0)
                + (F.VLLM_V4_INFLIGHT_BYTES_PER_TOKEN_PER_C128.value if l.attn_kind == "v4-hca" else 0.0)
            )
        out.append(
            LayerCost(
                index=i,
                is_moe=l.is_moe,
                dense_bytes=dense,
                expert_bytes=exp_bytes,
                kv_bytes=kv_b,
                dense_read=dense_read,
                expert_read=u * eb,
                kv_read=kv_r,
                dense_flops=2.0 * B * dense_params + B * attn,
                expert_flops=2.0 * B * l.experts_per_token * l.expert_params if l.is_moe else 0.0,
                inflight_per_token=inflight,
            )
        )
        dense_sum += dense
        dense_read_sum += dense_read
        dense_params_sum += dense_params + (l.experts_per_token * l.expert_params if l.is_moe else 0)
    # what no layer owns: the remainder of evaluate()'s own totals, so the sums are exact
    routed_active = sum(
        w.per_layer_experts[i] * l.experts_per_token / l.n_routed_experts
        for i, l in enumerate(spec.main_layers)
        if l.is_moe
    )
    global_read = w.active_bytes_per_token - routed_active - dense_read_sum
    global_params = spec.active_params() - dense_params_sum
    formats = frozenset(f for _, f in scheme.mix("routed_experts" if spec.is_moe else "dense_ffn"))
    n_moe = len(spec.moe_layers)
    overhead = (
        F.engine_factor(F.ENGINE_STEP_OVERHEAD_S, engine)
        + len(spec.main_layers) * F.engine_factor(F.ENGINE_LAYER_OVERHEAD_S, engine)
        + n_moe * F.engine_factor(F.ENGINE_MOE_LAYER_OVERHEAD_S, engine)
        + llamacpp_extra_kernels_s(spec, engine)  # decode_speed's V4 Sinkhorn-node cost (llama.cpp)
        + per_seq_step_s(B, F.engine_factor(F.ENGINE_SEQ_STEP_S, engine),  # decode_speed's per-sequence term
                         F.engine_factor(F.ENGINE_SEQ_SATURATION, engine))
    )
    # llama.cpp keeps the input embedding on the CPU (src/llama-model.cpp: "always keep it on the CPU"); rigopt,
    # like evaluate(), counts it on the GPU of the last layer (conservative). vLLM builds it on the first PP rank.
    first = class_bytes(spec.global_params.get("embed", 0), scheme, "embed") if engine == "vllm" else 0.0
    return ModelLayers(
        model=m.key,
        quant=quant,
        engine=engine,
        kv_dtype=kv.kv_dtype,
        context=context,
        concurrency=B,
        layers=tuple(out),
        first_bytes=first,
        global_bytes=w.dense_bytes - dense_sum - first,
        global_read=global_read,
        global_flops=2.0 * B * global_params,
        expert_formats=formats,
        fixed_overhead_s=overhead,
    )


def _read_rows(lay: KVLayout, tokens: int, index_topk: int | None) -> int:
    """Rows of one KV stream read per decoded token (as KVEstimate.read_bytes_per_token)."""
    s = lay.stream
    rows = int(lay.rows(tokens))
    if s.kind in ("v4_kv", "dsa_kv") and s.window is None and index_topk and s.ratio in (1, 4):
        rows = min(rows, index_topk)
    return rows


# ------------------------------------------------------------------------------------------------ devices
@dataclass(frozen=True)
class DeviceRates:
    """What one accelerator does with a layer's bytes and FLOPs (expected, with the speed model's efficiencies)."""

    key: str
    bytes_per_s: float  # HBM bandwidth x efficiency
    flops: float  # peak at the experts' kernel width x decode compute efficiency
    budget_bytes: float  # what the engine may use on it
    runtime_bytes: float  # engine runtime (compute buffers, CUDA context / graphs, activations)
    inflight_tokens: int = 0  # vLLM: prefill tokens whose V4 state is reserved (2 x max_num_batched_tokens)
    fits_outside: bool = True  # vLLM: the CUDA context fits outside gpu_memory_utilization


def device_rates(acc: Accelerator, ml: ModelLayers, vocab_size: int, hidden_size: int) -> DeviceRates:
    """Each engine's own accounting (memory.device_memory), per device:
    llama.cpp: budget = usable - the --fit margin; runtime = compute buffer + CUDA context on every device that
    holds layers (conservative: llama.cpp's vocab-sized output buffer is only on the last).
    vLLM: budget = gpu_memory_utilization x the CUDA total (one fraction for every GPU, as vLLM applies it);
    runtime = the larger of the profile-run activations (its own max_num_batched_tokens default for the device's
    memory) and the sampler's dummy run (max_num_seqs = concurrency, capped at max_num_batched_tokens) + non-torch
    + CUDA graphs, on every stage (conservative: the sampler runs on the last stage)."""
    dev: Device = device_of(acc)
    bits = kernel_bits(set(ml.expert_formats), acc.native_fp8, acc.native_fp4)
    rate: dict[str, Any] = dict(
        key=acc.key,
        bytes_per_s=dev.mem_bw_bytes_per_s * dev.bw_efficiency,
        flops=dev.flops_for_bits(bits) * F.DECODE_COMPUTE_EFFICIENCY.value,
    )
    cap = float(acc.memory_usable_bytes)
    if ml.engine == "llamacpp":
        ub = F.LLAMACPP_UBATCH.value
        unified = acc.kind == "unified"
        runtime = ub * (4 * vocab_size + 64 * hidden_size) + (0 if unified else F.CUDA_CONTEXT_BYTES.value)
        return DeviceRates(**rate, budget_bytes=cap - F.LLAMACPP_FIT_MARGIN_BYTES.value, runtime_bytes=runtime)
    if ml.engine == "vllm":
        mnbt = default_max_num_batched_tokens("vllm", cap)  # on NVML's total (memory.device_memory)
        cap = acc.cuda_total_bytes  # the budget's total: cudaMemGetInfo's (memory.device_memory)
        gmu = F.VLLM_GPU_MEMORY_UTILIZATION.value
        act = mnbt * hidden_size * F.ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN.value
        sampler = vllm_sampler_peak_bytes(vocab_size, ml.concurrency, mnbt)
        runtime = max(act, sampler) + F.VLLM_NON_TORCH_BYTES.value + F.VLLM_CUDAGRAPH_BYTES.value
        return DeviceRates(
            **rate,
            budget_bytes=cap * gmu,
            runtime_bytes=runtime,
            inflight_tokens=2 * mnbt,
            fits_outside=F.CUDA_CONTEXT_BYTES.value <= cap * (1 - gmu) + 1,
        )
    raise ValueError(f"per-layer device rates are defined for llama.cpp and vLLM, not {ml.engine}")


@dataclass(frozen=True)
class StageFigures:
    """One device's share of a plan: its layers [start, end), `gpu_experts` of their MoE layers with experts on it."""

    weights_bytes: float
    kv_bytes: float
    runtime_bytes: float
    read_bytes: float
    flops: float
    time_s: float  # max(memory, compute) of its layers per decode step


def stage_figures(
    ml: ModelLayers,
    rates: DeviceRates,
    start: int,
    end: int,
    expert_layers_on_gpu: set[int],
    holds_globals: bool,
    holds_first: bool | None = None,
) -> StageFigures:
    """`holds_globals`: the stage holds the last layer (head); `holds_first`: it holds layer 0 (None: start == 0)."""
    ls = ml.layers[start:end]
    first = ml.first_bytes if (start == 0 if holds_first is None else holds_first) else 0.0
    wb = first + sum(l.dense_bytes + (l.expert_bytes if l.index in expert_layers_on_gpu else 0.0) for l in ls)
    kvb = sum(l.kv_bytes + rates.inflight_tokens * l.inflight_per_token for l in ls)
    rd = sum(l.dense_read + l.kv_read + (l.expert_read if l.index in expert_layers_on_gpu else 0.0) for l in ls)
    fl = sum(l.dense_flops + (l.expert_flops if l.index in expert_layers_on_gpu else 0.0) for l in ls)
    if holds_globals:
        wb, rd, fl = wb + ml.global_bytes, rd + ml.global_read, fl + ml.global_flops
    t = max(rd / rates.bytes_per_s, fl / rates.flops) if ls or holds_globals else 0.0
    return StageFigures(
        weights_bytes=wb,
        kv_bytes=kvb,
        runtime_bytes=rates.runtime_bytes if ls else 0.0,
        read_bytes=rd,
        flops=fl,
        time_s=t,
    )


def host_expert_time_s(ml: ModelLayers, layer: int, achievable_bw: float) -> float:
    """Decode-step time of one layer's routed experts computed by the CPU from host DRAM, at the bandwidth the
    engine achieves on the host (cpu_experts.host_bandwidth)."""
    return ml.layers[layer].expert_read / achievable_bw


def nvme_expert_time_s(ml: ModelLayers, layer: int, nvme_bw: float) -> float:
    """Decode-step time of one layer's routed experts read from NVMe (mmap) and computed by the CPU."""
    return ml.layers[layer].expert_read / (nvme_bw * F.NVME_EFFICIENCY.value)
