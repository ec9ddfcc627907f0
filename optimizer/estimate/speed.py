"""Decode and prefill speed from bytes moved, FLOPs and communication.

Every figure comes in two forms: the roofline *bound* (peak bandwidths and FLOPs, perfect overlap, no
latency, no communication) and the *expected* figure (efficiency factors from factors.py, per-layer
overheads, communication). Expected time >= bound time by construction, so expected tok/s <= bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from optimizer.arch.spec import LayerSpec, ModelSpec
from optimizer.cache import BoundedCache
from optimizer.engines import physics_engine
from optimizer.estimate import cpu_experts as C
from optimizer.estimate import factors as F
from optimizer.estimate import kernels as K
from optimizer.estimate.kv import KVEstimate
from optimizer.estimate.recurrent import RecurrentEstimate
from optimizer.estimate.weights import WeightBreakdown
from optimizer.layout import Links, Parallel

FP4_FORMATS = {"mxfp4", "nvfp4"}
FP8_FORMATS = {"fp8", "fp8-block128", "fp8-channel"}


VLLM_MXFP4_SRC = ("https://github.com/vllm-project/vllm/blob/afdb4a4ff429377d0fcfac3752e814ffc36ea41d/"
                  "vllm/model_executor/layers/quantization/mxfp4.py")


def llamacpp_extra_kernels_s(spec: ModelSpec, engine: str) -> float:
    """Per-step launch cost of the small graph nodes llama.cpp runs beyond a V3-class layer (DeepSeek-V4's
    hyper-connection Sinkhorn normalisations, LayerSpec.extra_kernels), F.LLAMACPP_EXTRA_KERNEL_S each; 0 for other
    engines (vLLM and SGLang fuse them: CUDA graphs and fused mHC kernels) and for models without such layers."""
    if physics_engine(engine) != "llamacpp":
        return 0.0
    return sum(l.extra_kernels for l in spec.main_layers) * F.LLAMACPP_EXTRA_KERNEL_S.value


def kernel_bits(formats: set[str], native_fp8: bool, native_fp4: bool) -> float:
    """Math width the GEMMs can run at: FP4/FP8 tensor cores only for FP4/FP8 weights on hardware that has them.
    FP4 weights on a GPU without FP4 tensor cores (Hopper, Ampere) run as W4A16 (Marlin / Triton dequantizing
    kernels): 16-bit math, not FP8. GGUF and INT4 (W4A16) kernels dequantize to 16-bit.

    Only NVFP4 (W4A4: FP4 activations too) reaches the FP4 peak. MXFP4 experts have no FP4 x FP4 kernel: vLLM's
    MXFP4 MoE backends are W4A16 (Marlin, Triton, FlashInfer MXFP4 x BF16 on SM90/SM100) or MXFP4 x MXFP8 on SM100
    (`get_mxfp4_backend`, VLLM_MXFP4_SRC), and DeepSeek-V4's MXFP4 experts take FP8 activations; the tensor cores run
    at the wider operand's rate, so MXFP4 on Blackwell is counted at the FP8 rate (the fastest of its paths)."""
    if formats and formats <= {"nvfp4"} and native_fp4:
        return 4.0
    if formats and formats <= (FP4_FORMATS | FP8_FORMATS) and native_fp4 and native_fp8:
        return 8.0  # MXFP4 x FP8 (and mixed FP4/FP8 weights) on Blackwell: the FP8 operand sets the rate
    if formats and formats <= FP8_FORMATS and native_fp8:
        return 8.0
    return 16.0


VLLM_FP4_MARLIN_SRC = ("vllm-project/vllm issue #23278 (H100 log: 'Your GPU does not have native support for FP4 "
                       "computation but FP4 quantization is being used. Weight-only FP4 compression will be used "
                       "leveraging the Marlin kernel', marlin_utils_fp4.py)")


VLLM_ROCM_MXFP4_SRC = ("SemiAnalysisAI/InferenceX PR #3058 (vLLM ROCm DeepSeek-V4.1-Flash: --moe-backend "
                       "aiter_triton_mxfp4_bf16 maps to AITER's Triton W4A16 MoE kernel, decode ran _moe_gemm_a16w4) "
                       "and PR #3246 (MI300X, gfx942: VLLM_ROCM_USE_AITER=1, VLLM_ROCM_USE_AITER_MOE=1, --moe-backend "
                       "aiter; gfx942 has no FP4 MFMA); vllm-project/vllm PR #35250 (AITER FP4 GEMM/BMM gated to "
                       "gfx950)")


def expert_kernel_path(engine: str, formats: set[str], native_fp4: bool, bf16_flops: float,
                       fp8_flops: float | None, vendor: str = "nvidia") -> str | None:
    """The kernel path that runs FP4 expert weights on a GPU without FP4 tensor cores (Hopper, Ampere, Ada) and
    the speed rigopt gives it (the same rule as `kernel_bits`); None where FP4 runs natively or no FP4 is used.
    vLLM: Marlin / the Triton MXFP4 kernels / FlashInfer MXFP4 x BF16 on SM90 (`get_mxfp4_backend`,
    VLLM_MXFP4_SRC), Marlin for NVFP4 (VLLM_FP4_MARLIN_SRC); SGLang: --moe-runner-backend marlin or
    flashinfer_mxfp4. All are weight-only FP4 (W4A16): 4-bit weights read from memory, BF16 math.
    On AMD CDNA3 (gfx942, no FP4 MFMA) vLLM runs MXFP4 experts through AITER's Triton MXFP4 x BF16 MoE kernel
    (VLLM_ROCM_MXFP4_SRC), also W4A16. NVFP4 has no vLLM MoE path on AMD (support.FORMAT_GAPS)."""
    fp4 = sorted(formats & FP4_FORMATS)
    if not fp4 or native_fp4:
        return None
    if vendor == "amd":
        path = {"vllm": "AITER's Triton MXFP4 x BF16 MoE kernel (vLLM --moe-backend aiter, VLLM_ROCM_USE_AITER=1; "
                        "W4A16, the GPU has no FP4 MFMA)"}.get(engine)
    else:
        path = {"vllm": "vLLM's weight-only FP4 MoE kernels (Marlin, Triton MXFP4 or FlashInfer MXFP4 x BF16)",
                "sglang": "SGLang's W4A16 MoE runners (--moe-runner-backend marlin / flashinfer_mxfp4)"}.get(engine)
    if path is None:
        return None
    vs = f", half the FP8 peak of {fp8_flops / 1e12:,.0f}" if fp8_flops else ""
    return (f"kernel path: {'/'.join(f.upper() for f in fp4)} experts on a GPU without FP4 tensor cores run through "
            f"{path}: weights stay 4-bit in memory (decode reads them at their stored size), the math is BF16 "
            f"(prefill at the BF16 peak, {bf16_flops / 1e12:,.0f} TFLOP/s{vs})")


def device_family(vendor: str, kind: str) -> str:
    """The fitted factors' device family: a GPU's vendor; unified-memory SoCs are "apple" or "unified"."""
    return vendor if kind == "gpu" else ("apple" if vendor == "apple" else "unified")


@dataclass(frozen=True)
class Device:
    """What the speed model needs of one accelerator."""
    name: str
    mem_bw_bytes_per_s: float
    bf16_flops: float
    fp8_flops: float | None = None
    fp4_flops: float | None = None
    vendor: str = "nvidia"
    kind: str = "gpu"

    def flops_for_bits(self, bits: float) -> float:
        if bits <= 4.5 and self.fp4_flops:
            return self.fp4_flops
        if bits <= 8.5 and self.fp8_flops:
            return self.fp8_flops
        return self.bf16_flops

    @property
    def family(self) -> str:
        """Device family of the fitted factors (factors.BW_EFFICIENCY and the prefill MFU tables)."""
        return device_family(self.vendor, self.kind)

    @property
    def bw_efficiency(self) -> float:
        return F.BW_EFFICIENCY.get(self.family, F.BW_EFFICIENCY["nvidia"]).value


@dataclass(frozen=True)
class ExpertTiers:
    """Fraction of routed-expert bytes (and of expert activations) served by each tier."""
    gpu: float = 1.0
    cpu: float = 0.0      # in host DRAM, computed by the CPU (llama.cpp --n-cpu-moe, KTransformers)
    stream: float = 0.0   # in host DRAM, copied over PCIe to the GPU for each use
    nvme: float = 0.0     # on NVMe, read per use (mmap'd), computed by the CPU
    activation_share_gpu: float | None = None  # load-aware placement: share of activations served on GPU

    def share(self, tier: str) -> float:
        """Share of expert activations a tier serves (defaults to its byte fraction: uniform routing)."""
        if self.activation_share_gpu is None:
            return float(getattr(self, tier))
        off = self.cpu + self.stream + self.nvme
        if tier == "gpu":
            return self.activation_share_gpu
        return (1 - self.activation_share_gpu) * (getattr(self, tier) / off if off else 0.0)


@dataclass(frozen=True)
class SpeedEstimate:
    tok_s_per_seq: float          # expected decode tokens/s for one sequence
    tok_s_bound_per_seq: float    # roofline bound
    tok_s_aggregate: float        # expected, all sequences together
    batch: int
    context: int
    step_time_s: float
    bound_step_time_s: float
    terms_s: dict[str, float] = field(default_factory=dict)  # expected time components of one step
    binding: str = ""
    cpu_experts: C.CpuExpertTime | None = None  # experts computed by the host CPU: their time, bandwidth, binding

    def as_dict(self) -> dict[str, object]:
        return {"tok_s_per_seq": self.tok_s_per_seq, "tok_s_bound_per_seq": self.tok_s_bound_per_seq,
                "tok_s_aggregate": self.tok_s_aggregate, "batch": self.batch, "context": self.context,
                "step_time_s": self.step_time_s, "bound_step_time_s": self.bound_step_time_s,
                "terms_s": self.terms_s, "binding": self.binding,
                **({"cpu_experts": self.cpu_experts.as_dict()} if self.cpu_experts else {})}


def attended_rows(layer: LayerSpec, tokens: float) -> float:
    """KV rows one new token attends to at context `tokens`: window rows, compressed rows (T/ratio), top-k
    sparse selection (V3.2 / V4 CSA), or the whole context for full attention."""
    rows = 0.0
    for s in layer.kv:
        if s.kind in ("state", "indexer"):
            continue
        n = tokens if s.window is None else min(tokens, s.window)
        if s.ratio > 1:
            n = tokens / s.ratio
        if layer.attended_topk and s.window is None and s.kind in ("dsa_kv", "v4_kv") and s.ratio in (1, 4):
            n = min(n, layer.attended_topk)
        rows += n
    return rows


def distinct_experts(n_experts: int, k: int, tokens: int) -> float:
    """Expected distinct experts a layer touches for `tokens` tokens under uniform routing: E(1-(1-k/E)^B)."""
    if n_experts == 0:
        return 0.0
    return n_experts * (1.0 - (1.0 - k / n_experts) ** tokens)


def busiest_share(items: float, bins: int) -> float:
    """Expected items on the busiest of `bins` ranks when `items` land uniformly (balls-in-bins, capped)."""
    if bins <= 1 or items <= 0:
        return items
    mean = items / bins
    return min(items, mean + math.sqrt(2.0 * mean * math.log(bins)))


def decode_speed(spec: ModelSpec, w: WeightBreakdown, kv: KVEstimate, dev: Device, *, par: Parallel,
                 context: int, batch: int = 1, links: Links | None = None, tiers: ExpertTiers | None = None,
                 compute_bits: float = 16.0, expert_imbalance: float | None = None,
                 load_imbalance: float | None = None, engine: str = "vllm",
                 tokens_per_seq: int = 1, recurrent: RecurrentEstimate | None = None,
                 cpu_layer_fraction: float = 0.0, cpu_path: str = "int8") -> SpeedEstimate:
    """Decode step time for `batch` sequences at KV length `context`. `engine` selects the fixed per-step,
    per-layer, per-MoE-layer and TP-synchronisation costs (factors.ENGINE_*), fitted per engine.

    `tokens_per_seq` > 1 is a speculative-decoding verification step: every sequence feeds that many tokens
    (the last accepted one plus the drafts) through the target in one pass, so weights and KV are read once
    while FLOPs, activations and the experts touched grow with batch x tokens_per_seq.
    Which links the traffic crosses (inside a node or across nodes) is entirely in `links`.

    Hybrid models (`recurrent`): every sequence reads its recurrent state once per step and writes it back once
    per fed token (spec-decode verification keeps the state after each draft position), whatever the context;
    attention KV is read only for the attention layers (the recurrent layers have no KV streams).

    `cpu_layer_fraction` > 0: that share of the layers (weights and their KV) stays in host memory and is computed
    by the CPU after the GPU's layers (llama.cpp -ngl below the layer count: Ollama / LM Studio's automatic
    offload); its bytes are read at the host DRAM bandwidth."""
    return decode_curve(spec, w, kv, dev, par=par, context=context, links=links, tiers=tiers,
                        compute_bits=compute_bits, expert_imbalance=expert_imbalance,
                        load_imbalance=load_imbalance, engine=engine, recurrent=recurrent,
                        cpu_layer_fraction=cpu_layer_fraction, cpu_path=cpu_path)(batch, tokens_per_seq)


def decode_curve(spec: ModelSpec, w: WeightBreakdown, kv: KVEstimate, dev: Device, *, par: Parallel,
                 context: int, links: Links | None = None, tiers: ExpertTiers | None = None,
                 compute_bits: float = 16.0, expert_imbalance: float | None = None,
                 load_imbalance: float | None = None, engine: str = "vllm",
                 recurrent: RecurrentEstimate | None = None,
                 cpu_layer_fraction: float = 0.0, kernel_dtypes: KernelDtypes | None = None,
                 cpu_path: str = "int8") -> Callable[[int, int], SpeedEstimate]:
    """`decode_speed` as a function of (batch, tokens_per_seq) with everything that does not depend on them
    computed once: `decode_curve(...)(b, q)` is `decode_speed(..., batch=b, tokens_per_seq=q)`, the same
    arithmetic in the same order (callers asking many batch sizes of one deployment keep the curve).

    `kernel_dtypes`: the weight formats of the dense linear layers and the routed experts (with their math
    widths). Where the accelerator has measured kernel tables for the engine (hardware/kernels/, NVIDIA
    datacenter GPUs), the linear layers' time is the measured GEMM / grouped-MoE efficiency at the step's tokens
    (`batched_compute_s`) instead of a fixed fraction of peak."""
    links = links or Links()
    tiers = tiers or ExpertTiers()
    tp, pp = par.tp, par.pp
    d = spec.hidden_size
    moe = spec.moe_layers
    n_layers = len(spec.main_layers)

    # ---- batch-independent parts of the bytes and FLOPs ------------------------------------------
    groups = _moe_groups(spec, w)
    dense_active = w.active_bytes_per_token - sum(cnt * eb * k for (E, k, eb), cnt in groups.items())
    gpu_bytes = dense_active / tp  # each TP rank reads its shard of every dense tensor; PP stages run in sequence
    s_gpu, s_cpu, s_stream, s_nvme = (tiers.share(t) for t in ("gpu", "cpu", "stream", "nvme"))
    group_items = list(groups.items())
    kv_per_seq = kv.read_bytes_per_token(context)  # MLA/V4 KV is not split by TP (kv per rank)
    active_params = spec.active_params()
    gpu_param_share = 1.0 - (1.0 - tiers.share("gpu")) * _expert_param_share(spec)
    flops_per_token = 2.0 * active_params * gpu_param_share
    attn = _decode_attention_flops(spec, context) + recurrent_flops(spec, prefill=False)
    state_set = recurrent.set_bytes if recurrent is not None else 0.0
    fc = min(max(cpu_layer_fraction, 0.0), 1.0)
    peak_flops = dev.flops_for_bits(compute_bits)
    mem_bw_eff = dev.mem_bw_bytes_per_s * dev.bw_efficiency
    comp_eff = peak_flops * F.DECODE_COMPUTE_EFFICIENCY.value
    layer_overhead = (F.engine_factor(F.ENGINE_STEP_OVERHEAD_S, engine)
                      + n_layers * F.engine_factor(F.ENGINE_LAYER_OVERHEAD_S, engine)
                      + len(moe) * F.engine_factor(F.ENGINE_MOE_LAYER_OVERHEAD_S, engine)
                      + llamacpp_extra_kernels_s(spec, engine))
    tp_sync = n_layers * F.engine_factor(F.ENGINE_TP_LAYER_SYNC_S, engine) if tp > 1 else 0.0
    k_top = (moe[0].experts_per_token if moe else 0) if par.ep and par.ep_size > 1 else 0
    a2a_kernel = F.ALL2ALL_KERNEL_S.value
    pcie_eff, nvme_eff = F.PCIE_EFFICIENCY.value, F.NVME_EFFICIENCY.value
    seq_cost = F.engine_factor(F.ENGINE_SEQ_STEP_S, engine)
    seq_sat = F.engine_factor(F.ENGINE_SEQ_SATURATION, engine)
    table = TableCompute.of(spec, dev, engine, kernel_dtypes, tp=tp, stream_s=gpu_bytes / mem_bw_eff) \
        if kernel_dtypes else None
    share = _expert_param_share(spec) if moe else 0.0
    other_flops_per_token = 2.0 * active_params * share * gpu_param_share if moe else 0.0  # routed experts
    host = links.host or (C.generic_host(links.host_dram_bw) if links.host_dram_bw else None)
    host_bw = C.host_bandwidth(host, engine).bytes_per_s if host is not None else 0.0
    routed_flops_cpu = 2.0 * active_params * _expert_param_share(spec) * s_cpu  # per token, CPU-computed experts
    cpu_moe_layers = s_cpu * len(moe)
    # GPU work a KTransformers layer's CPU experts run alongside: that layer's shared experts (attention comes first:
    # routing needs its output), read once per step by each TP rank
    shared_per_layer = w.by_class.get("shared_experts", 0.0) / max(len(moe), 1) / tp

    def at(batch: int, tokens_per_seq: int = 1) -> SpeedEstimate:
        batch = max(1, batch)
        q = max(1, tokens_per_seq)
        seqs_per_replica = -(-batch // par.dp)

        # ---- bytes read per step on the busiest GPU ---------------------------------------------
        expert_bytes_gpu = expert_bytes_cpu = expert_bytes_stream = expert_bytes_nvme = 0.0
        for (E, k, eb), cnt in group_items:  # MoE layers grouped by (experts, top-k, bytes per expert)
            u = distinct_experts(E, k, seqs_per_replica * q)
            if par.ep:
                # experts spread over EP ranks; the busiest rank sets the pace (imbalance from placement if
                # known). With DP, every replica's tokens reach every EP rank: distinct experts over all tokens.
                ranks = par.ep_size
                u_ep = distinct_experts(E, k, batch * q) if par.dp > 1 else u
                if expert_imbalance:  # step imbalance of a known placement (busiest rank's distinct / mean)
                    per_rank = min(u_ep, u_ep * expert_imbalance / ranks)
                else:
                    per_rank = busiest_share(u_ep, ranks)
                    if load_imbalance:  # skewed expert loads (max/mean load): never better than chance placement
                        per_rank = max(per_rank, min(u_ep, u_ep * load_imbalance / ranks))
                expert_bytes_gpu += cnt * per_rank * s_gpu * eb
            else:
                expert_bytes_gpu += cnt * u * s_gpu * eb / tp
            expert_bytes_cpu += cnt * u * s_cpu * eb
            expert_bytes_stream += cnt * u * s_stream * eb
            expert_bytes_nvme += cnt * u * s_nvme * eb
        kv_read = seqs_per_replica * kv_per_seq
        state_rw = seqs_per_replica * state_set * (1 + q)  # hybrids: read the state once, write it per token
        layer_bytes_cpu = fc * (gpu_bytes + expert_bytes_gpu + kv_read + state_rw)  # whole layers in host memory
        hbm_bytes = (1.0 - fc) * (gpu_bytes + expert_bytes_gpu + kv_read + state_rw)

        # ---- FLOPs per step on the busiest GPU ---------------------------------------------------
        flops = flops_per_token * seqs_per_replica * q / tp
        flops += attn * seqs_per_replica * q / tp
        flops *= 1.0 - fc

        # ---- host tiers --------------------------------------------------------------------------------
        cpu = None
        if expert_bytes_cpu and host is not None:
            cpu = C.expert_time(host, engine, expert_bytes_cpu, routed_flops_cpu * seqs_per_replica * q, cpu_path)
        t_cpu_bound = (expert_bytes_cpu / links.host_dram_bw) if expert_bytes_cpu and links.host_dram_bw else 0.0
        t_stream_bound = ((expert_bytes_stream / links.host_link_bw) if links.host_link_bw else math.inf) \
            if expert_bytes_stream else 0.0
        t_nvme_bound = (expert_bytes_nvme / links.nvme_bw) if expert_bytes_nvme and links.nvme_bw else 0.0
        if (expert_bytes_cpu and not links.host_dram_bw) or (expert_bytes_nvme and not links.nvme_bw):
            t_cpu_bound = t_nvme_bound = math.inf
        t_layers_bound = 0.0
        if layer_bytes_cpu:
            t_layers_bound = layer_bytes_cpu / links.host_dram_bw if links.host_dram_bw else math.inf

        # ---- bound -------------------------------------------------------------------------------------
        t_hbm_bound = hbm_bytes / dev.mem_bw_bytes_per_s
        t_comp_bound = flops / peak_flops
        if math.isfinite(t_cpu_bound):  # KTransformers: CPU experts overlap the layer's GPU work
            t_cpu_bound = C.exposed_time(engine, t_cpu_bound, cpu_moe_layers,
                                         shared_per_layer / dev.mem_bw_bytes_per_s)
        bound = max(t_hbm_bound, t_comp_bound) + t_cpu_bound + t_stream_bound + t_nvme_bound + t_layers_bound

        # ---- expected ----------------------------------------------------------------------------------
        terms: dict[str, float] = {}
        terms["gpu_memory"] = hbm_bytes / mem_bw_eff
        if table is not None:  # dense GEMMs from the measured kernels; experts and attention scores as before
            terms["gpu_compute"] = (1.0 - fc) * (table.dense_s(seqs_per_replica * q) + (other_flops_per_token + attn)
                                                 * seqs_per_replica * q / tp / comp_eff)
        else:
            terms["gpu_compute"] = flops / comp_eff
        terms["layer_overhead"] = layer_overhead
        if seq_cost:
            # per sequence and per token it feeds in the step (a verification step checks every draft token)
            terms["per_seq_overhead"] = per_seq_step_s(seqs_per_replica * q, seq_cost, seq_sat)
        if expert_bytes_cpu:
            if cpu is not None and math.isfinite(t_cpu_bound):
                cpu = replace(cpu, exposed_s=C.exposed_time(engine, cpu.time_s, cpu_moe_layers,
                                                            shared_per_layer / mem_bw_eff))
                terms["cpu_experts"] = cpu.exposed_s
            else:
                terms["cpu_experts"] = math.inf
        if layer_bytes_cpu:
            terms["cpu_layers"] = (layer_bytes_cpu / host_bw if math.isfinite(t_layers_bound) and host_bw
                                   else math.inf)
        if expert_bytes_stream:
            terms["pcie_stream"] = t_stream_bound / pcie_eff
        if expert_bytes_nvme:
            terms["nvme"] = t_nvme_bound / nvme_eff if math.isfinite(t_nvme_bound) else math.inf
        act_bytes = seqs_per_replica * q * d * 2.0
        if tp > 1:
            per_ar = 2.0 * (tp - 1) / tp * act_bytes / links.tp_bw + links.tp_latency_s
            terms["tp_allreduce"] = 2 * n_layers * per_ar
            terms["tp_sync"] = tp_sync
        if par.ep and par.ep_size > 1:
            # dispatch (FP8) + combine (BF16) of each token's k expert inputs; off-rank share (N-1)/N
            a2a_bytes = (seqs_per_replica * q / max(tp, 1)) * k_top * d * 3.0 * (par.ep_size - 1) / par.ep_size
            terms["ep_all2all"] = len(moe) * (a2a_bytes / links.ep_bw + 2 * (links.ep_latency_s + a2a_kernel))
        if pp > 1:
            terms["pp_transfer"] = (pp - 1) * (act_bytes / links.pp_bw + links.pp_latency_s)
        gpu_part = max(terms["gpu_memory"], terms["gpu_compute"])
        expected = gpu_part + sum(v for k_, v in terms.items() if k_ not in ("gpu_memory", "gpu_compute"))
        expected = max(expected, bound)
        names = {k_: v for k_, v in terms.items() if k_ not in ("gpu_memory", "gpu_compute")}
        names["gpu_memory" if terms["gpu_memory"] >= terms["gpu_compute"] else "gpu_compute"] = gpu_part
        binding = max(names, key=lambda k_: names[k_])
        tok = 1.0 / expected if math.isfinite(expected) and expected > 0 else 0.0
        tok_b = 1.0 / bound if math.isfinite(bound) and bound > 0 else 0.0
        return SpeedEstimate(tok_s_per_seq=tok, tok_s_bound_per_seq=tok_b, tok_s_aggregate=tok * batch,
                             batch=batch, context=context, step_time_s=expected, bound_step_time_s=bound,
                             terms_s=terms, binding=binding, cpu_experts=cpu)

    return at


def per_seq_step_s(n: float, cost_s: float, saturation: float) -> float:
    """The engine's per-sequence step cost at `n` sequences (x tokens each) in one step: `cost_s` per sequence for
    few sequences, saturating at `cost_s x saturation` as batched kernels amortise it,
    cost_s x N_sat x (1 - exp(-n / N_sat)) (N_sat = `saturation`; inf or 0: linear, the old form)."""
    if not cost_s or n <= 0:
        return 0.0
    if not saturation or not math.isfinite(saturation):
        return n * cost_s
    return cost_s * saturation * -math.expm1(-n / saturation)


@dataclass(frozen=True)
class KernelDtypes:
    """Kernel-table dtypes (optimizer/estimate/kernels.py names) of the dense linear layers and the routed experts,
    and the math width each runs at (kernel_bits)."""
    dense: str | None
    dense_bits: float
    experts: str | None = None
    expert_bits: float = 16.0


@dataclass(frozen=True)
class TableCompute:
    """Dense linear-layer time of one decode step from measured kernels (hardware/kernels/ tables,
    AIConfigurator-derived): the GEMMs at the measured FLOP efficiency for M = tokens per step. The measured
    latency includes streaming the weights, so the curve is anchored to rigopt's own (fitted) weight-streaming
    time at M = 1: `dense_s(M) = measured(M) x stream_s / measured(1)`. Small batches keep the fitted memory
    model; large ones follow the measured GEMMs into the compute-bound regime."""
    system: str
    backend: str
    dense_dtype: str
    dense_flops_per_token: float     # per TP rank
    dense_peak: float
    stream_s: float                  # rigopt's time to stream the rank's dense weights once

    @staticmethod
    def of(spec: ModelSpec, dev: Device, engine: str, dt: KernelDtypes, *, tp: int,
           stream_s: float) -> TableCompute | None:
        backend = physics_engine(engine)
        if backend not in ("vllm", "sglang") or dt.dense is None:
            return None
        if K.gemm_efficiency(dev.name, dt.dense, 1.0, backend=backend) is None:
            return None
        share = _expert_param_share(spec) if spec.moe_layers else 0.0
        return TableCompute(system=dev.name, backend=backend, dense_dtype=dt.dense,
                            dense_flops_per_token=2.0 * spec.active_params() * (1.0 - share) / tp,
                            dense_peak=dev.flops_for_bits(dt.dense_bits), stream_s=stream_s)

    def measured_s(self, tokens: float) -> float:
        g = K.gemm_efficiency(self.system, self.dense_dtype, tokens, backend=self.backend)
        return self.dense_flops_per_token * tokens / (self.dense_peak * (g or 1.0))

    def dense_s(self, tokens: float) -> float:
        """Seconds of the rank's dense linear layers at `tokens` per step."""
        return self.measured_s(tokens) * self.stream_s / self.measured_s(1.0)


def spec_key(spec: ModelSpec) -> str:
    """What the memoized per-architecture figures depend on (ModelSpec.content_key)."""
    return spec.content_key


_EXPERT_SHARE: BoundedCache[str, float] = BoundedCache("speed.expert_share", 256)
_MOE_GROUPS: BoundedCache[tuple[object, ...], dict[tuple[int, int, float], int]] = BoundedCache("speed.moe_groups",
                                                                                                  1024)
_ATTN_DECODE: BoundedCache[tuple[object, ...], float] = BoundedCache("speed.attn_decode", 8192)
_ATTN_PREFILL: BoundedCache[tuple[object, ...], float] = BoundedCache("speed.attn_prefill", 8192)


def _expert_param_share(spec: ModelSpec) -> float:
    """Share of active parameters that are routed experts (for moving compute off the GPU)."""
    return _EXPERT_SHARE.get_or_compute(spec_key(spec), lambda: _expert_share(spec))


def _expert_share(spec: ModelSpec) -> float:
    active = spec.active_params()
    if not active:
        return 0.0
    routed = sum(l.experts_per_token * l.expert_params for l in spec.main_layers if l.is_moe)
    return routed / active


def _moe_groups(spec: ModelSpec, w: WeightBreakdown) -> dict[tuple[int, int, float], int]:
    """Main MoE layers grouped by (experts, top-k, bytes per expert) -> count (memoized by content)."""
    def compute() -> dict[tuple[int, int, float], int]:
        groups: dict[tuple[int, int, float], int] = {}
        for i, l in enumerate(spec.main_layers):
            if l.is_moe:
                g = (l.n_routed_experts, l.experts_per_token, w.per_layer_experts[i] / l.n_routed_experts)
                groups[g] = groups.get(g, 0) + 1
        return groups
    return _MOE_GROUPS.get_or_compute((spec_key(spec), w.per_layer_experts), compute)


_RECURRENT_FLOPS: BoundedCache[tuple[object, ...], float] = BoundedCache("speed.recurrent_flops", 256)


def recurrent_flops(spec: ModelSpec, prefill: bool) -> float:
    """FLOPs per token of all recurrent mixers beyond their projections (state update + readout + short conv; in
    prefill the chunked scan's intra-chunk products too): RecurrentState.decode_flops / prefill_flops."""
    def compute() -> float:
        return float(sum((l.recurrent.prefill_flops() if prefill else l.recurrent.decode_flops())
                         for l in spec.recurrent_layers if l.recurrent is not None))
    return _RECURRENT_FLOPS.get_or_compute((spec_key(spec), prefill), compute) if spec.is_hybrid else 0.0


def _decode_attention_flops(spec: ModelSpec, context: int) -> float:
    return _ATTN_DECODE.get_or_compute((spec_key(spec), context), lambda: float(sum(
        l.attn_flops_per_ctx * attended_rows(l, context)
        + l.indexer_flops_per_ctx * context / max(l.indexer_ratio, 1) for l in spec.main_layers)))


def _prefill_attention_flops(spec: ModelSpec, P: int) -> float:
    return _ATTN_PREFILL.get_or_compute((spec_key(spec), P), lambda: float(sum(
        l.attn_flops_per_ctx * _prompt_attention_rows(l, P)
        + l.indexer_flops_per_ctx * (P * P / 2.0) / max(l.indexer_ratio, 1) for l in spec.main_layers)))


def _prompt_attention_rows(layer: LayerSpec, P: int, steps: int = 16) -> float:
    """Sum over positions 1..P of the rows attended (trapezoid rule over `steps` segments; the function is
    piecewise linear with at most two kinks, so this is accurate to well under 1%)."""
    xs = [P * i / steps for i in range(steps + 1)]
    ys = [attended_rows(layer, x) for x in xs]
    return sum((ys[i] + ys[i + 1]) / 2 * (xs[i + 1] - xs[i]) for i in range(steps))


def prefill_mfu(engine: str, moe: bool, family: str | None = None) -> float:
    """Achieved fraction of peak FLOPs in prefill for an engine: fitted per device family and model kind
    ("nvidia/moe") where the measurements allow, else per model kind ("moe" / "dense"), else PREFILL_MFU."""
    table = F.PREFILL_MFU_BY_ENGINE.get(physics_engine(engine), {})
    kind = "moe" if moe else "dense"
    f = (table.get(f"{family}/{kind}") if family else None) or table.get(kind)
    return (f or F.PREFILL_MFU).value


@dataclass(frozen=True)
class PrefillEstimate:
    prompt_tokens: int
    ttft_s: float                 # one prompt alone: it passes the pipeline stages one after another
    ttft_bound_s: float
    tok_s: float                  # prompt tokens / ttft_s
    binding: str
    work_s: float = 0.0           # deployment time per prompt when prompts stream through (PP stages overlap)
    chunks: int = 1               # prefill chunks (engine token budget per step) the prompt is split into
    expert_path: str = ""         # host-resident experts: "stream" (copied to the GPU per chunk) or "cpu"
    expert_stream_s: float = 0.0  # the two ways of running them, both modelled (the engine's rule picks one)
    expert_cpu_s: float = 0.0


def prefill_time(spec: ModelSpec, w: WeightBreakdown, dev: Device, *, par: Parallel, prompt_tokens: int,
                 links: Links | None = None, tiers: ExpertTiers | None = None,
                 compute_bits: float = 16.0, engine: str = "vllm", chunk_tokens: int | None = None,
                 cpu_layer_fraction: float = 0.0, dense_bits: float | None = None,
                 cpu_path: str = "int8", kt_prefill_threshold: int | None = None) -> PrefillEstimate:
    """Time to first token for one prompt: compute bound (dense + attention FLOPs) vs weights read once per
    prefill chunk (`chunk_tokens`: vLLM max_num_batched_tokens, SGLang chunked_prefill_size, llama.cpp
    ubatch; None = the whole prompt in one pass).

    Work splits like the weights: dense tensors and attention over the TP group, routed experts over the EP
    group (or TP without EP). A pipeline split does not shorten one prompt: the stages run one after another,
    so PP divides neither the FLOPs nor the bytes of a single prompt (it does divide `work_s`, the busy time
    per prompt when many prompts stream through the stages).

    Each part runs at its own precision's peak: routed experts at `compute_bits` (their kernels' width), the
    dense linear layers (attention projections, dense and shared-expert FFNs) at `dense_bits` (None: the same as
    the experts) and the attention scores (QK^T, PV; FlashAttention / FlashMLA compute in BF16, FP8 KV is
    dequantized) at the BF16 peak."""
    links = links or Links()
    tiers = tiers or ExpertTiers()
    P = prompt_tokens
    chunks = max(1, -(-P // chunk_tokens)) if chunk_tokens else 1
    expert_split = par.ep_size if par.ep else par.tp
    share = _expert_param_share(spec)
    active = spec.active_params()
    linear_flops = 2.0 * active * (1.0 - share) * P
    score_flops = _prefill_attention_flops(spec, P) \
        + recurrent_flops(spec, prefill=True) * P  # chunked linear-attention / SSD scan of hybrid models
    expert_flops = 2.0 * active * share * P
    peak = dev.flops_for_bits(compute_bits)
    peak_dense = dev.flops_for_bits(compute_bits if dense_bits is None else dense_bits)
    t_comp_bound = (linear_flops / peak_dense + score_flops / dev.bf16_flops) / par.tp \
        + expert_flops / (peak * expert_split)
    expert_off = w.routed_expert_bytes * (1.0 - tiers.gpu)
    on_gpu_experts = w.routed_expert_bytes - expert_off
    per_pass_bytes = w.dense_bytes / par.tp + on_gpu_experts / expert_split  # every stage's share, in sequence
    moved = 0.0
    if cpu_layer_fraction > 0:
        # layers kept in host memory: llama.cpp copies their weights to the GPU for each large batch
        moved = min(cpu_layer_fraction, 1.0) * per_pass_bytes
        per_pass_bytes -= moved
    t_weights_bound = chunks * per_pass_bytes / dev.mem_bw_bytes_per_s
    # host-resident experts, per micro-batch of `chunk` tokens: only the experts its tokens route to are needed
    chunk = min(chunk_tokens or P, P)
    moe = spec.moe_layers
    touched = distinct_experts(moe[0].n_routed_experts, moe[0].experts_per_token, chunk) / moe[0].n_routed_experts \
        if moe and moe[0].n_routed_experts else 1.0
    streams = C.prefill_streams(engine, chunk, moe[0].n_routed_experts if moe else 0,
                                moe[0].experts_per_token if moe else 0, kt_threshold=kt_prefill_threshold)
    # (a) streamed: copied to the GPU once per chunk, over one link or every TP rank's (cpu_experts.stream_links)
    link_bw = links.host_link_bw * C.stream_links(engine, par.tp)
    stream_bytes = chunks * (expert_off * touched + moved)
    t_stream_bound = ((stream_bytes / link_bw) if link_bw else math.inf) if stream_bytes else 0.0
    # (b) computed by the CPU: all P tokens' expert FLOPs, the touched experts read from DRAM once per chunk
    host = links.host or (C.generic_host(links.host_dram_bw) if links.host_dram_bw else None)
    cpu_t = None
    if expert_off and host is not None:
        cpu_t = C.expert_time(host, engine, chunks * expert_off * touched, expert_flops * (1.0 - tiers.gpu), cpu_path)
    t_cpu = cpu_t.time_s if cpu_t is not None else (math.inf if expert_off else 0.0)
    if not streams and expert_off:
        # CPU path: moved whole layers (none for the CPU-computing engines) still stream
        t_stream_bound = ((chunks * moved / link_bw) if link_bw else math.inf) if moved else 0.0
    t_off_bound = t_stream_bound
    bound = max(t_comp_bound, t_weights_bound) + t_off_bound
    t_comp = t_comp_bound / prefill_mfu(engine, spec.is_moe, dev.family)
    t_w = t_weights_bound / dev.bw_efficiency
    t_off = t_off_bound / F.PCIE_EFFICIENCY.value
    stream_all = ((stream_bytes / link_bw) if link_bw else math.inf) / F.PCIE_EFFICIENCY.value if stream_bytes else 0.0
    comm = 0.0
    if par.tp > 1:
        comm = 2 * len(spec.main_layers) * (2.0 * (par.tp - 1) / par.tp * P * spec.hidden_size * 2.0 / links.tp_bw)
    if par.pp > 1:
        comm += (par.pp - 1) * (P * spec.hidden_size * 2.0 / links.pp_bw + chunks * links.pp_latency_s)
    gpu = max(t_comp, t_w) + t_off + comm
    parts = {"compute": t_comp, "weights": t_w, "pcie_offload": t_off, "tp_allreduce": comm}
    path = ""
    if expert_off:
        path = "stream" if streams else "cpu"
    if path == "cpu":
        # KTransformers overlaps the CPU experts with the GPU's work; llama.cpp below its batch threshold runs them
        # after it (cpu_experts module docstring)
        gpu = max(gpu, t_cpu) if C.overlaps_gpu(engine) else gpu + t_cpu
        parts["cpu_experts"] = t_cpu
    expected = max(gpu, bound)
    return PrefillEstimate(prompt_tokens=P, ttft_s=expected, ttft_bound_s=bound, tok_s=P / expected,
                           binding=max(parts, key=lambda k: parts[k]), work_s=expected / par.pp, chunks=chunks,
                           expert_path=path, expert_stream_s=stream_all if expert_off else 0.0,
                           expert_cpu_s=t_cpu if expert_off else 0.0)
