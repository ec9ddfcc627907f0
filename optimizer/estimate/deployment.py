"""One deployment, one evaluation.

`Deployment` is everything that decides a deployment's memory and speed: the model and its quantization, the
KV dtype, the engine and its settings, the hardware and the links between devices, the parallel layout, where
MoE experts live (GPU / host DRAM / NVMe), speculative decoding and the workload. `evaluate(deployment)` is the
only function that turns one into figures; `rigopt estimate`, `rigopt cheapest` (every candidate of its table),
the independent checker, `rigopt place` and `rigopt validate` all call it, so they cannot disagree.

Pure: no solver, no I/O beyond the catalogue rows the deployment names (already loaded).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

from optimizer.arch.spec import ModelSpec
from optimizer.cache import BoundedCache
from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.hardware_schema import Accelerator, NodeType
from optimizer.catalog.model_schema import SpecDecodeDefault
from optimizer.catalog.models import ResolvedModel
from optimizer.engines import is_llamacpp, runs_on_vendor
from optimizer.errors import InputError
from optimizer.estimate import factors as F
from optimizer.estimate.calibration import AppliedCalibration, Calibration, scale_decode, scale_prefill
from optimizer.estimate.cpu_experts import kernel_path
from optimizer.estimate.kv import KVEstimate, check_engine, default_kv_dtype, kv_estimate
from optimizer.estimate.memory import (
    DeviceMemory,
    default_max_num_batched_tokens,
    device_memory,
    hybrid_kv_per_seq,
    max_concurrency,
    max_context,
    sglang_default_mem_fraction_static,
)
from optimizer.estimate.recurrent import RecurrentEstimate, recurrent_estimate, state_dtype
from optimizer.estimate.runtimes import ollama_single_slot_arch
from optimizer.estimate.schemes import SCHEMES, Scheme, get_scheme, mean_active_bits, quality_bits
from optimizer.estimate.serving import ServingEstimate, Workload, serve
from optimizer.estimate.speed import (
    FP8_FORMATS,
    Device,
    ExpertTiers,
    KernelDtypes,
    PrefillEstimate,
    SpeedEstimate,
    decode_curve,
    expert_kernel_path,
    kernel_bits,
    prefill_time,
)
from optimizer.estimate.weights import WeightBreakdown, weights_of
from optimizer.layout import Links, Parallel
from optimizer.topology_links import plan_links
from optimizer.units import MAX_CONTEXT_TOKENS, GiB

SPEC_METHODS = ("mtp", "eagle3")
DENSE_LINEAR_CLASSES = ("attention", "dense_ffn", "shared_experts")  # the non-expert GEMMs (prefill_time dense_bits)


# ------------------------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class EngineSettings:
    """Engine flags that change memory or speed; None = the engine's default (see `resolve_settings`).

    max_num_seqs: vLLM --max-num-seqs, SGLang --max-running-requests, llama.cpp -np (slots).
    max_num_batched_tokens: vLLM --max-num-batched-tokens, SGLang --chunked-prefill-size, llama.cpp -ub.
    gpu_memory_utilization: vLLM only. mem_fraction_static: SGLang only. block_size: vLLM --block-size /
    SGLang --page-size (tokens per KV block). mamba_ssm_cache_dtype: the recurrent (SSM / delta-rule) state dtype
    of hybrid models, vLLM --mamba-ssm-cache-dtype / SGLang --mamba-ssm-dtype (None = the engine's rule per model;
    llama.cpp always F32). prefix_caching: vLLM's prefix caching (on by default; for hybrids it selects the
    'align' state mode that pins a second state set per request). kt_gpu_prefill_token_threshold: the
    `--kt-gpu-prefill-token-threshold` of KTransformers' own SGLang builds (kvcache-ai), above which a prefill
    chunk's host-resident experts are copied to the GPUs; None = SGLang 0.5.23, the pinned release rigopt exports,
    which has no such flag: its KTEPWrapperMethod.apply submits every forward's CPU experts to kt-kernel, prefill
    included (sgl-project/sglang v0.5.23 python/sglang/srt/layers/moe/kt_ep_wrapper.py)."""
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    mem_fraction_static: float | None = None
    block_size: int | None = None
    mamba_ssm_cache_dtype: str | None = None
    prefix_caching: bool = True
    kt_gpu_prefill_token_threshold: int | None = None

    def __post_init__(self) -> None:
        if self.mamba_ssm_cache_dtype is not None:
            object.__setattr__(self, "mamba_ssm_cache_dtype", state_dtype(self.mamba_ssm_cache_dtype))
        for name in ("gpu_memory_utilization", "mem_fraction_static"):
            v = getattr(self, name)
            if v is not None and not (0.05 <= v <= 1.0):
                raise InputError(f"{name.replace('_', '-')} must be between 0.05 and 1, got {v}")
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            v = getattr(self, name)
            if v is not None and not (1 <= v <= MAX_CONTEXT_TOKENS):
                raise InputError(f"{name.replace('_', '-')} must be between 1 and {MAX_CONTEXT_TOKENS}, got {v}")


@dataclass(frozen=True)
class ResolvedSettings:
    """The settings an engine will run with: every default filled in (what `export` writes)."""
    engine: str
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float | None    # vLLM
    mem_fraction_static: float | None        # SGLang
    block_size: int
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class SpecDecode:
    """Speculative decoding: `method` mtp (the model's own MTP/NextN layers) or eagle3 (a separate draft head),
    `num_tokens` drafted per step, `accept_len` = mean tokens emitted per verification step (bonus included)."""
    method: str
    num_tokens: int
    accept_len: float
    draft_params: float = 0.0          # EAGLE-3 head parameters (BF16); 0 for MTP (its layers are in the config)
    draft_model: str | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.method not in SPEC_METHODS:
            raise InputError(f"unknown speculative method '{self.method}' (use {' or '.join(SPEC_METHODS)})")
        if not 1 <= self.num_tokens <= 16:
            raise InputError(f"speculative tokens must be between 1 and 16, got {self.num_tokens}")
        if not 1.0 <= self.accept_len <= self.num_tokens + 1:
            raise InputError(f"acceptance length must be between 1 and {self.num_tokens + 1} "
                             f"(drafts + 1), got {self.accept_len}")


@dataclass(frozen=True)
class Hardware:
    """The devices of a deployment: `n_nodes` x `gpus_per_node` accelerators, their node type (None: a bare
    device without a catalogue node) and the links (None = ask the node's topology graph)."""
    accelerator: Accelerator
    node: NodeType | None
    n_nodes: int = 1
    gpus_per_node: int = 1
    links: Links | None = None

    @property
    def world(self) -> int:
        return self.n_nodes * self.gpus_per_node


@dataclass(frozen=True)
class Offload:
    """Routed-expert layers kept off the GPUs: `dram_layers` in host DRAM (computed by the CPU: mode cpu, or
    copied over PCIe per use: mode stream) and `nvme_layers` read from NVMe (llama.cpp mmap). Fractional counts
    are allowed for the solver's linear interpolation."""
    mode: str = "none"                       # none | cpu | stream
    dram_layers: float = 0.0
    nvme_layers: float = 0.0
    activation_share_gpu: float | None = None  # load-aware placement: share of expert activations on the GPU

    def __post_init__(self) -> None:
        if self.mode not in ("none", "cpu", "stream"):
            raise InputError(f"offload mode must be none, cpu or stream, got {self.mode!r}")
        if self.dram_layers < 0 or self.nvme_layers < 0:
            raise InputError("offloaded layer counts must not be negative")
        if (self.dram_layers or self.nvme_layers) and self.mode == "none":
            raise InputError("offloaded expert layers need an offload mode (cpu or stream)")


@dataclass(frozen=True)
class Deployment:
    model: ResolvedModel
    quant: str
    engine: str
    hardware: Hardware
    parallel: Parallel
    context: int                         # max_model_len: longest sequence the engine admits
    concurrency: int = 1                 # sequences whose KV must fit at `context` (and decode together)
    kv_dtype: str | None = None          # None = the engine's default for the model
    settings: EngineSettings = EngineSettings()
    offload: Offload = Offload()
    spec_decode: SpecDecode | None = None
    workload: Workload | None = None
    prompt_tokens: int | None = None     # TTFT prompt (None = the workload's isl, else `context`)
    decode_context: int | None = None    # KV length decode speed is quoted at (None = workload mean, else `context`)
    load_imbalance: float | None = None   # EP: max/mean expert load (skewed routing)
    expert_imbalance: float | None = None  # EP: step imbalance of a known placement
    calibration: Calibration | None = None  # the user's profile (rigopt calibrate); evaluate() picks the entry
    gpu_layers: int | None = None        # llama.cpp family on one GPU: repeating layers on the GPU (-ngl); None = all

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", check_engine(self.engine))
        if self.engine == "ollama" and self.concurrency > 1 and ollama_single_slot_arch(self.model.spec):
            raise InputError(f"Ollama serves {ollama_single_slot_arch(self.model.spec)} models one request at a "
                             "time (server/sched.go forces num_parallel 1 for this architecture): use concurrency 1 "
                             "or another engine")
        if self.engine == "mlx" and (self.kv_dtype or "").lower().startswith("mlx_") and self.concurrency > 1:
            # mlx-lm 0.32.0 mlx_lm/server.py ResponseGenerator._is_batchable: `self.cli_args.kv_bits is None`, and
            # --kv-bits's help: "Disables batching, so requests are served one at a time"
            raise InputError("mlx_lm.server serves one request at a time with a quantized KV cache (--kv-bits "
                             "disables batching): use concurrency 1 or the default KV dtype")
        if not runs_on_vendor(self.engine, self.hardware.accelerator.vendor):
            raise InputError(f"{self.engine} runs only on Apple silicon, not on {self.hardware.accelerator.key} "
                             f"({self.hardware.accelerator.vendor})")
        if not 1 <= self.context <= MAX_CONTEXT_TOKENS:
            raise InputError(f"context must be between 1 and {MAX_CONTEXT_TOKENS}, got {self.context}")
        if self.concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.gpu_layers is not None:
            n = len(self.model.spec.main_layers)
            if not is_llamacpp(self.engine):
                raise InputError(f"a GPU layer count (-ngl) is a llama.cpp setting, not {self.engine}'s")
            if self.hardware.world != 1 or self.hardware.accelerator.kind != "gpu":
                raise InputError("layers on the CPU are modelled for one discrete GPU only")
            if not 0 <= self.gpu_layers <= n:
                raise InputError(f"GPU layers must be between 0 and the model's {n}, got {self.gpu_layers}")
        if self.parallel.world != self.hardware.world:
            raise InputError(f"parallel layout {self.parallel.label()} uses {self.parallel.world} devices, "
                             f"but the hardware has {self.hardware.world}")


# ------------------------------------------------------------------------------------------------ outputs
@dataclass(frozen=True)
class Evaluation:
    """Every figure of one deployment. Bytes are per device of the busiest rank unless said otherwise."""
    deployment: Deployment
    settings: ResolvedSettings
    scheme: Scheme
    weights: WeightBreakdown            # the resident weights (engine padding and draft included)
    kv: KVEstimate
    memory: DeviceMemory
    decode: SpeedEstimate               # at `concurrency` sequences and the decode context
    prefill: PrefillEstimate            # one prompt of `prompt_tokens`
    serving: ServingEstimate | None     # only with a workload
    host_used_bytes: float              # per node: offloaded experts + reserve
    nvme_used_bytes: float              # per node
    expert_bits: float
    attn_bits: float
    links: Links
    notes: tuple[str, ...] = field(default_factory=tuple)
    calibration: AppliedCalibration | None = None  # the user's factors applied to decode/prefill (None: none)
    recurrent: RecurrentEstimate | None = None  # hybrid models: the per-sequence recurrent state (apart from KV)

    @property
    def fits(self) -> bool:
        return self.memory.fits

    @property
    def tpot_s(self) -> float:
        """Time per output token the targets are checked against: the served workload's TPOT when there is one
        (continuous batching, prefill interleaved), else one decode step of `concurrency` sequences."""
        return self.serving.tpot_s if self.serving is not None else self.decode.step_time_s

    @property
    def ttft_s(self) -> float:
        """Time to first token: the workload's (queueing included) when there is one, else one prompt alone."""
        return self.serving.ttft_s if self.serving is not None else self.prefill.ttft_s

    @property
    def sustainable(self) -> bool:
        """The workload's rate or concurrency is served without the queue growing (always True without one)."""
        return self.serving is None or self.serving.stable

    @cached_property
    def max_concurrency(self) -> int:
        """Most sequences of `context` tokens the KV pools hold (all DP replicas)."""
        return max_concurrency(self.memory, self.deployment.parallel.dp)

    @cached_property
    def max_context_tokens(self) -> int:
        """Longest context `concurrency` sequences can reach (capped at the model's own limit)."""
        d, mem = self.deployment, self.memory
        glf = gpu_layer_fraction(d)   # the GPU holds only its layers' share of the KV
        if glf <= 0:
            return d.model.spec.max_context or MAX_CONTEXT_TOKENS
        mc = max_context(self.kv, mem.kv_available_bytes / glf, -(-d.concurrency // d.parallel.dp),
                         pp=d.parallel.pp, reserve_per_seq=mem.reserve_per_seq_bytes / glf, recurrent=self.recurrent)
        return min(mc, d.model.spec.max_context or mc)


# ------------------------------------------------------------------------------------------------ helpers
def device_of(acc: Accelerator) -> Device:
    """What the speed model needs of one accelerator."""
    return Device(name=acc.key, mem_bw_bytes_per_s=acc.memory_bw_bytes_per_s, bf16_flops=acc.bf16_flops,
                  fp8_flops=acc.fp8_flops if acc.native_fp8 else None,
                  fp4_flops=acc.fp4_flops if acc.native_fp4 else None, vendor=acc.vendor, kind=acc.kind)


def default_max_num_seqs(engine: str, acc: Accelerator, spec: ModelSpec) -> int:
    """Engine default for concurrent sequences. vLLM 0.33 `get_batch_defaults`: 1024 on GPUs of >= 70 GiB except
    A100 (sm80), else 256 (vllm/engine/arg_utils.py); SGLang: 256 for DeepSeek-V4 (deepseek_v4_hook.py), else its
    request pool's 4096 cap (the KV pool usually binds first); llama.cpp: one slot per planned sequence;
    Ollama: OLLAMA_NUM_PARALLEL default 1 (envconfig/config.go); LM Studio: "By default, Max Concurrent
    Predictions is set to 4" (lmstudio.ai/docs/app/advanced/parallel-requests; `lms load --parallel`); a plan sizes
    both for its planned sequences and exports that count; mlx_lm.server: --decode-concurrency default 32
    (server.py), but the KV is allocated per request, so a plan sizes it for the planned sequences."""
    if engine == "vllm":
        return 1024 if acc.memory_bytes >= 70 * GiB and acc.arch != "sm80" else 256
    if engine == "sglang":
        return 256 if spec.family == "deepseek_v4" else 4096
    return 1


SGLANG_TP_WORKER_SRC = ("https://github.com/sgl-project/sglang/blob/4f34e24af764d45c2dde4a17cadcdaa7d08a7248/"
                        "python/sglang/srt/managers/tp_worker.py")


def sglang_attention_dp(engine: str, spec: ModelSpec, par: Parallel) -> bool:
    """SGLang serves a MoE model with DP > 1 as one engine with attention DP (`--attn-dp-size`, what rigopt's
    export writes): the DP ranks share one `--max-running-requests`."""
    return engine == "sglang" and spec.is_moe and par.dp > 1


def running_flag(engine: str, spec: ModelSpec, par: Parallel, per_replica: int) -> int:
    """The engine's sequence-cap flag value that lets each DP replica run `per_replica` sequences: SGLang with
    attention DP divides `--max-running-requests` across its DP ranks (`server_args.max_running_requests //
    dp_size` when `enable_dp_attention`, TpModelWorker.__init__ in SGLANG_TP_WORKER_SRC), so the flag is the
    total; vLLM's --max-num-seqs, SGLang's dense --dp-size replicas and llama.cpp slots are per replica."""
    return per_replica * par.dp if sglang_attention_dp(engine, spec, par) else per_replica


def running_per_replica(engine: str, spec: ModelSpec, par: Parallel, flag: int, explicit: bool) -> int:
    """Sequences one DP replica runs at most under the engine's cap `flag` (inverse of `running_flag`). SGLang
    divides only a set `--max-running-requests` (DeepSeek-V4's default 256 is set by its hook, so it is divided
    too); unset, each rank's cap is its own token pool's (the 4096 request-pool default stands per rank)."""
    if sglang_attention_dp(engine, spec, par) and (explicit or spec.family == "deepseek_v4"):
        return max(1, flag // par.dp)
    return flag


def _table_dtype(formats: set[str], bits: float, moe: bool) -> str | None:
    """The kernel-table dtype (optimizer/estimate/kernels.py) of weights in `formats` running at `bits`."""
    if len(formats) != 1:
        return None
    f = next(iter(formats))
    if f in ("bf16", "f16", "fp16"):
        return "bf16"
    if f in FP8_FORMATS and bits == 8.0:
        return "fp8_block" if f == "fp8-block128" else "fp8"
    if f == "nvfp4" and bits == 4.0:
        return "nvfp4"
    if moe and f == "mxfp4":
        return "mxfp4_w4a16" if bits == 16.0 else "mxfp4_w4a8"
    if moe and f.startswith("int4") and bits == 16.0:
        return "int4_w4a16"
    return None


def kernel_dtypes_of(scheme: Scheme, acc: Accelerator, moe: bool) -> KernelDtypes:
    """The measured-kernel dtypes of a deployment's dense linear layers and routed experts (None where no table
    dtype matches: the speed model then keeps its fixed compute efficiency)."""
    dense_f = {f for c in DENSE_LINEAR_CLASSES for _, f in scheme.mix(c)}
    dense_bits = kernel_bits(dense_f, acc.native_fp8, acc.native_fp4)
    if not moe:
        return KernelDtypes(_table_dtype(dense_f, dense_bits, False), dense_bits)
    exp_f = {f for _, f in scheme.mix("routed_experts")}
    exp_bits = kernel_bits(exp_f, acc.native_fp8, acc.native_fp4)
    return KernelDtypes(_table_dtype(dense_f, dense_bits, False), dense_bits, _table_dtype(exp_f, exp_bits, True),
                        exp_bits)


def physics_of(d: Deployment) -> str:
    """The engine whose memory layout and speed a deployment runs: LM Studio loads MLX checkpoints with its MLX
    engine (mlx-lm underneath: lmstudio-ai/mlx-engine) and GGUF with llama.cpp; every other engine is itself."""
    if d.engine == "lmstudio" and _is_mlx_quant(d):
        return "mlx"
    return d.engine


def _is_mlx_quant(d: Deployment) -> bool:
    s = SCHEMES.get(d.quant.strip().lower())
    return bool(s and s.mlx)


def resolve_settings(d: Deployment) -> ResolvedSettings:
    acc, spec, s = d.hardware.accelerator, d.model.spec, d.settings
    cap = acc.memory_usable_bytes
    phys = physics_of(d)
    mnbt = s.max_num_batched_tokens or default_max_num_batched_tokens(phys, cap)
    per_request = is_llamacpp(d.engine) or d.engine == "mlx"
    seqs = s.max_num_seqs or (d.concurrency if per_request else default_max_num_seqs(d.engine, acc, spec))
    gmu = mfs = None
    if d.engine == "vllm":
        gmu = s.gpu_memory_utilization or F.VLLM_GPU_MEMORY_UTILIZATION.value
    elif d.engine == "sglang":
        mfs = s.mem_fraction_static or sglang_default_mem_fraction_static(cap, mnbt, d.parallel)
    block = s.block_size or (256 if spec.family == "deepseek_v4" else 64 if spec.family.startswith("deepseek") else 16)
    return ResolvedSettings(engine=d.engine, max_model_len=d.context, max_num_seqs=seqs, max_num_batched_tokens=mnbt,
                            gpu_memory_utilization=gmu, mem_fraction_static=mfs, block_size=block)


def default_spec_decode(m: ResolvedModel, method: str | None = None, num_tokens: int | None = None,
                        accept_len: float | None = None) -> SpecDecode:
    """The model card's published setup for `method` (the first listed when None), overridden by the arguments."""
    rows: list[SpecDecodeDefault] = list(m.card.spec_decoding) if m.card else []
    if method is not None:
        rows = [r for r in rows if r.method == method]
    if not rows:
        if method == "mtp" and not m.spec.mtp_layers:
            raise InputError(f"{m.key} has no MTP/NextN layers in its config; use --spec eagle3:N with --accept-len")
        if method is None:
            raise InputError(f"no published speculative-decoding setup for {m.key}; "
                             "give --spec METHOD:N --accept-len L")
        if accept_len is None:
            raise InputError(f"no published acceptance length for {method} on {m.key}; give --accept-len L")
        return SpecDecode(method=method, num_tokens=num_tokens or 1, accept_len=accept_len,
                          draft_params=eagle3_draft_params(m.spec) if method == "eagle3" else 0.0,
                          source="user-given acceptance length")
    r = rows[0]
    k = num_tokens or r.num_speculative_tokens
    if accept_len is None and k != r.num_speculative_tokens:
        # fewer/more drafts than measured: keep the per-position acceptance of the published setup (geometric)
        p = _per_position_acceptance(r.accept_len, r.num_speculative_tokens)
        accept_len = sum(p ** i for i in range(k + 1))
    return SpecDecode(method=r.method, num_tokens=k, accept_len=accept_len or r.accept_len,
                      draft_params=r.draft_params or (eagle3_draft_params(m.spec) if r.method == "eagle3" else 0.0),
                      draft_model=r.draft_model,
                      source=r.source if accept_len is None or k == r.num_speculative_tokens else
                      "user-given acceptance length")


def _per_position_acceptance(accept_len: float, k: int) -> float:
    """p with 1 + p + ... + p^k = accept_len (bisection; the sum rises with p)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if sum(mid ** i for i in range(k + 1)) < accept_len:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def eagle3_draft_params(spec: ModelSpec) -> float:
    """An EAGLE-3 head: one decoder layer at the target's hidden size (attention 4 d^2, MLP 3 d x 4d), the fusion
    projection of three hidden states (3 d^2) and a 32K-entry draft vocabulary head. Estimate (the heads
    published for gpt-oss and Llama follow this shape)."""
    d = spec.hidden_size
    return 4 * d * d + 12 * d * d + 3 * d * d + F.EAGLE3_DRAFT_VOCAB.value * d


def _model_key(m: ResolvedModel) -> tuple[str, str, int]:
    """What a model's derived figures depend on: its architecture's content, its catalogue key (the card's storage
    formats) and, for a weights file, its size (files are re-read when they change)."""
    wf = m.weights_file
    return (m.key, m.spec.content_key, int(getattr(wf, "file_bytes", 0) or 0))


_WEIGHTS: BoundedCache[tuple[object, ...], tuple[Scheme, WeightBreakdown]] = BoundedCache("estimate.weights", 256)
_QUALITY: BoundedCache[tuple[object, ...], tuple[float, float, float]] = BoundedCache("estimate.quality", 256)


def quality_of(m: ResolvedModel, quant: str) -> tuple[float, float, float]:
    """(expert/FFN bits, attention bits, mean active bits) of a quantization, never above the checkpoint's own."""
    def compute() -> tuple[float, float, float]:
        scheme, native = get_scheme(quant, m.storage), get_scheme("native", m.storage)
        exp_bits, attn_bits = quality_bits(m.spec, scheme, native)
        return exp_bits, attn_bits, mean_active_bits(m.spec, scheme, native)
    return _QUALITY.get_or_compute((*_model_key(m), quant), compute)


def resident_weights(m: ResolvedModel, quant: str, engine: str, include_mtp: bool) -> tuple[Scheme, WeightBreakdown]:
    """The weights an engine holds for a model and quantization: a real file's exact bytes when it is served
    as is, the per-class estimate otherwise, plus engine padding: vLLM rounds gpt-oss's MoE hidden size up to a
    multiple of 256 for MXFP4 experts (vllm/model_executor/layers/fused_moe/layer.py maybe_roundup_hidden_size;
    2880 -> 3072), so those experts take 3072/2880 of their checkpoint bytes."""
    return _WEIGHTS.get_or_compute((*_model_key(m), quant, engine == "vllm", include_mtp),
                                   lambda: _resident_weights(m, quant, engine, include_mtp))


def _resident_weights(m: ResolvedModel, quant: str, engine: str, include_mtp: bool) -> tuple[Scheme, WeightBreakdown]:
    scheme = get_scheme(quant, m.storage)
    w = weights_of(m.spec, scheme, m.weights_file, quant, include_mtp=include_mtp)
    spec = m.spec
    formats = {f for _, f in scheme.mix("routed_experts")} if spec.is_moe else set()
    if engine == "vllm" and spec.family == "gpt_oss" and formats == {"mxfp4"} and spec.hidden_size % 256:
        w = _scale_experts(spec, w, (-(-spec.hidden_size // 256) * 256) / spec.hidden_size)
    return scheme, w


def _scale_experts(spec: ModelSpec, w: WeightBreakdown, f: float) -> WeightBreakdown:
    """The same weights with every routed expert `f` times larger (engine padding)."""
    by = dict(w.by_class)
    by["routed_experts"] = by.get("routed_experts", 0.0) * f
    main = spec.main_layers
    active_experts = sum(w.per_layer_experts[i] * main[i].experts_per_token / main[i].n_routed_experts
                         for i in range(len(main)) if main[i].is_moe)
    return replace(w, by_class=by, per_layer_experts=tuple(x * f for x in w.per_layer_experts),
                   expert_bytes=w.expert_bytes * f,
                   active_bytes_per_token=w.active_bytes_per_token + active_experts * (f - 1.0))


def links_for(hw: Hardware, par: Parallel) -> Links:
    """The links a deployment's traffic crosses: given, or from the node's topology graph; a bare device with no
    catalogue node uses its own scale-up link (NVLink/xGMI) or else its host link, from the catalogue."""
    if hw.links is not None:
        return hw.links
    if hw.node is None:
        ic = load_hardware().interconnects
        host = ic[hw.accelerator.host_link]
        peer_bw = hw.accelerator.scaleup_bw_bytes_per_s or host.bw_bytes_per_s
        peer_lat = ic[hw.accelerator.scaleup].latency_s if hw.accelerator.scaleup else host.latency_s
        lat = max(peer_lat, 1e-6)
        return Links(tp_bw=peer_bw, tp_latency_s=max(lat, F.ALLREDUCE_LATENCY_S.value), ep_bw=peer_bw,
                     ep_latency_s=lat, pp_bw=peer_bw, pp_latency_s=lat, host_link_bw=host.bw_bytes_per_s)
    return plan_links(hw.node, hw.n_nodes, par)


def _tiers(d: Deployment, n_moe: int) -> ExpertTiers:
    o = d.offload
    if o.mode == "none" or not n_moe:
        return ExpertTiers()
    x, z = o.dram_layers / n_moe, o.nvme_layers / n_moe
    if o.mode == "cpu":
        return ExpertTiers(gpu=1 - x - z, cpu=x, nvme=z, activation_share_gpu=o.activation_share_gpu)
    return ExpertTiers(gpu=1 - x - z, stream=x, nvme=z, activation_share_gpu=o.activation_share_gpu)


def _spec_speed(base: SpeedEstimate, verify: SpeedEstimate, spec: SpecDecode, draft_layer_s: float) -> SpeedEstimate:
    """Per-token decode speed with drafts: one target pass verifies k+1 tokens per sequence and emits accept_len
    of them on average; the draft runs k sequential one-layer passes first."""
    draft_s = spec.num_tokens * draft_layer_s
    step = verify.step_time_s + draft_s
    per_token = step / spec.accept_len
    bound_per_token = verify.bound_step_time_s / spec.accept_len
    terms = dict(verify.terms_s)
    terms["spec_draft"] = draft_s
    tok = 1.0 / per_token if per_token > 0 and math.isfinite(per_token) else 0.0
    tok_b = 1.0 / bound_per_token if bound_per_token > 0 and math.isfinite(bound_per_token) else 0.0
    return replace(verify, tok_s_per_seq=tok, tok_s_bound_per_seq=max(tok, tok_b), tok_s_aggregate=tok * base.batch,
                   batch=base.batch, step_time_s=per_token, bound_step_time_s=min(per_token, bound_per_token),
                   terms_s=terms)


# ------------------------------------------------------------------------------------------------ evaluate
@dataclass(frozen=True)
class _MemoryParts:
    settings: ResolvedSettings
    scheme: Scheme
    weights: WeightBreakdown
    kv: KVEstimate
    memory: DeviceMemory
    recurrent: RecurrentEstimate | None = None


def recurrent_of(d: Deployment, kv: KVEstimate) -> RecurrentEstimate | None:
    """The recurrent state a deployment's engine allocates per sequence (None: not a hybrid model)."""
    spec = d.model.spec
    if not spec.is_hybrid:
        return None
    attn = next((l for _, l in kv.layouts if l.stream.kind in ("kv", "mla")), None)
    n_spec = d.spec_decode.num_tokens if d.spec_decode is not None else 0
    # Ollama / LM Studio (GGUF) run llama.cpp's recurrent memory; mlx-lm keeps one state set per sequence like it
    # (an approximation: rigopt has no mlx-specific state rules)
    eng = "llamacpp" if (is_llamacpp(d.engine) or physics_of(d) == "mlx") else d.engine
    return recurrent_estimate(spec, eng, attn_token_bytes=attn.row_bytes if attn else 0.0, tp=d.parallel.tp,
                              num_spec=n_spec, ssm_dtype=d.settings.mamba_ssm_cache_dtype,
                              prefix_caching=d.settings.prefix_caching,
                              is_mla=attn is not None and attn.stream.kind == "mla",
                              block_size=d.settings.block_size if eng == "vllm" else None)


def _memory_parts(d: Deployment) -> _MemoryParts:
    m, spec, acc, par = d.model, d.model.spec, d.hardware.accelerator, d.parallel
    settings = resolve_settings(d)
    mtp = d.spec_decode is not None and d.spec_decode.method == "mtp"
    scheme, w = resident_weights(m, d.quant, d.engine, include_mtp=mtp)
    phys = physics_of(d)
    if scheme.mlx and d.engine not in ("mlx", "lmstudio"):
        raise InputError(f"{d.quant} is an MLX checkpoint format; serve it with --engine mlx or lmstudio "
                         "(Apple silicon)")
    if phys == "mlx" and acc.vendor != "apple":
        raise InputError(f"{d.quant} runs in MLX, only on Apple silicon, not on {acc.key}")
    if d.engine == "mlx" and (scheme.gguf or getattr(m.weights_file, "format", None) == "gguf"):
        raise InputError(f"mlx-lm does not load GGUF weights ({d.quant}); use an MLX quantization "
                         "(mlx4, mlx8, mlx-mixed-4-6, ...) or native")
    if d.spec_decode is not None and d.spec_decode.method == "eagle3":
        draft_bytes = d.spec_decode.draft_params * 2.0  # BF16 head, replicated on every rank
        w = replace(w, by_class={**w.by_class, "draft": draft_bytes}, dense_bytes=w.dense_bytes + draft_bytes * par.tp)
    kvd = (d.kv_dtype or default_kv_dtype(spec, phys)).lower()
    kv = kv_estimate(spec, phys, kvd, tp=par.tp, include_mtp=mtp)
    rec = recurrent_of(d, kv)
    if rec is not None and rec.vllm_block_size:
        # vLLM serving a hybrid model sets the attention block size itself (Platform._align_hybrid_block_size)
        settings = replace(settings, block_size=rec.vllm_block_size)
    n_moe = len(spec.moe_layers)
    if d.offload.dram_layers + d.offload.nvme_layers > n_moe + 1e-9:
        raise InputError(f"{d.offload.dram_layers + d.offload.nvme_layers:g} expert layers offloaded, "
                         f"but the model has {n_moe}")
    on_gpu = 1.0 - ((d.offload.dram_layers + d.offload.nvme_layers) / n_moe if n_moe else 0.0)
    mem = device_memory(spec, w, kv, engine=phys, capacity_bytes=acc.memory_usable_bytes, context=d.context,
                        concurrency=d.concurrency, par=par, gpu_expert_fraction=on_gpu,
                        unified=acc.kind == "unified", gpu_memory_utilization=settings.gpu_memory_utilization,
                        max_num_batched_tokens=settings.max_num_batched_tokens,
                        mem_fraction_static=settings.mem_fraction_static if d.engine == "sglang" else None,
                        max_num_seqs=settings.max_num_seqs if d.engine == "vllm" else
                        running_per_replica(d.engine, spec, par, settings.max_num_seqs,
                                            explicit=d.settings.max_num_seqs is not None)
                        if d.engine == "sglang" else None, recurrent=rec,
                        gpu_layer_fraction=gpu_layer_fraction(d), cuda_total_bytes=acc.cuda_total_bytes)
    return _MemoryParts(settings, scheme, w, kv, mem, rec)


def gpu_layer_fraction(d: Deployment) -> float:
    """Share of the repeating layers on the GPU (1 unless `gpu_layers` puts some on the CPU)."""
    n = len(d.model.spec.main_layers)
    return 1.0 if d.gpu_layers is None or not n else d.gpu_layers / n


def memory_of(d: Deployment) -> DeviceMemory:
    """The memory part of `evaluate(d)` alone (the same computation; for fit tables over many devices)."""
    return _memory_parts(d).memory


def evaluate(d: Deployment) -> Evaluation:
    """Memory, decode, prefill and (with a workload) serving figures of one deployment."""
    return Evaluator(d).at(d.workload)


class Evaluator:
    """`evaluate()` split at the workload's rate: everything that does not depend on the request rate or the
    concurrency in flight (memory, links, the decode step curve memoised per batch size, prefill of one prompt)
    is computed once, lazily; `at(workload)` adds the serving solve. `Evaluator(d).at(w)` is exactly
    `evaluate(replace(d, workload=w))` for any `w` with the same isl, osl and prefix_hit as `d.workload` (tests
    compare them field by field); callers that ask one deployment at many rates (the fleet's capacity bisection)
    keep one Evaluator instead of re-deriving the physics per rate."""

    def __init__(self, d: Deployment) -> None:
        self.d = d
        self.parts = _memory_parts(d)
        self.n_moe = len(d.model.spec.moe_layers)
        self.phys = physics_of(d)        # the engine whose physics runs (LM Studio + MLX checkpoint: mlx)
        self.glf = gpu_layer_fraction(d)  # share of the layers on the GPU (Ollama / LM Studio automatic offload)
        acc = d.hardware.accelerator
        self.cal = (d.calibration.applied(acc.key, d.hardware.world, d.engine, d.model.key, d.quant)
                    if d.calibration else None)
        self.k_dec, self.k_pf = (self.cal.decode, self.cal.prefill) if self.cal else (1.0, 1.0)
        self._speed: dict[int, SpeedEstimate] = {}
        self._curve: _StepCurve | None = None
        self._phys: tuple[Links, ExpertTiers, Device, float, int] | None = None
        self._dec: Callable[[int, int], SpeedEstimate] | None = None
        self._free: tuple[PrefillEstimate, PrefillEstimate | None, int] | None = None

    def sibling(self, wl: Workload) -> Evaluator:
        """The same deployment with another workload: memory does not depend on the workload (only on context
        and concurrency), so it is shared; with the same decode context (isl + osl/2) the decode step memo is
        shared too (only the prompt computed, e.g. a prefix-cache hit, differs). Exactly
        `Evaluator(replace(d, workload=wl))`, without recomputing what is shared."""
        base = self.d.workload
        if base is None:
            raise ValueError("Evaluator.sibling needs a deployment with a workload")
        ev = Evaluator.__new__(Evaluator)
        ev.d, ev.parts, ev.n_moe, ev._curve = replace(self.d, workload=wl), self.parts, self.n_moe, None
        ev.phys, ev.glf, ev.cal, ev.k_dec, ev.k_pf = self.phys, self.glf, self.cal, self.k_dec, self.k_pf
        if wl.decode_context == base.decode_context:  # the same decode physics: share the curve and its memo
            ev._speed, ev._phys, ev._dec = self._speed, self._physics, self._decode
        else:
            ev._speed, ev._phys, ev._dec = {}, None, None
        ev._free = None
        return ev

    @property
    def memory(self) -> DeviceMemory:
        return self.parts.memory

    @property
    def _physics(self) -> tuple[Links, ExpertTiers, Device, float, int]:
        if self._phys is None:
            self._phys = self._compute_physics()
        return self._phys

    def _compute_physics(self) -> tuple[Links, ExpertTiers, Device, float, int]:
        d, spec, acc = self.d, self.d.model.spec, self.d.hardware.accelerator
        scheme = self.parts.scheme
        links = links_for(d.hardware, d.parallel)
        bits = kernel_bits({f for _, f in scheme.mix("routed_experts" if spec.is_moe else "dense_ffn")},
                           acc.native_fp8, acc.native_fp4)
        wl = d.workload
        ctx_dec = d.decode_context or (wl.decode_context if wl else d.context)
        return links, _tiers(d, self.n_moe), device_of(acc), bits, ctx_dec

    @property
    def _decode(self) -> Callable[[int, int], SpeedEstimate]:
        if self._dec is None:
            self._dec = self._compute_decode()
        return self._dec

    @property
    def _cpu_path(self) -> str:
        """The CPU kernel path (int8 / bf16) for host-computed experts of this engine and expert format."""
        spec = self.d.model.spec
        formats = {f for _, f in self.parts.scheme.mix("routed_experts" if spec.is_moe else "dense_ffn")}
        return kernel_path(self.phys, formats)

    def _compute_decode(self) -> Callable[[int, int], SpeedEstimate]:
        d, spec, w, kv = self.d, self.d.model.spec, self.parts.weights, self.parts.kv
        links, tiers, dev, bits, ctx_dec = self._physics
        return decode_curve(spec, w, kv, dev, par=d.parallel, context=ctx_dec, links=links, tiers=tiers,
                            compute_bits=bits, expert_imbalance=d.expert_imbalance, load_imbalance=d.load_imbalance,
                            engine=self.phys, recurrent=self.parts.recurrent, cpu_layer_fraction=1.0 - self.glf,
                            kernel_dtypes=kernel_dtypes_of(self.parts.scheme, d.hardware.accelerator,
                                                           spec.is_moe),
                            cpu_path=self._cpu_path)

    def _step(self, batch: int, tokens_per_seq: int = 1) -> SpeedEstimate:
        """`decode_speed(...)` of this deployment at `batch` (the same arithmetic, batch-free parts once), with
        the user's calibration applied."""
        return scale_decode(self._decode(batch, tokens_per_seq), self.k_dec)

    def token_speed(self, batch: int) -> SpeedEstimate:
        """Decode speed at `batch` sequences (speculative decoding folded in), memoised per batch."""
        got = self._speed.get(batch)
        if got is not None:
            return got
        d, spec = self.d, self.d.model.spec
        base = self._step(batch)
        if d.spec_decode is None:
            out = base
        else:
            sd = d.spec_decode
            verify = self._step(batch, sd.num_tokens + 1)
            n_layers = max(1, len(spec.main_layers))
            # one draft pass: one layer's share of the step's roofline time plus that layer's fixed costs; the
            # engine's per-step and per-sequence costs (scheduling, sampling) are paid once per engine step,
            # which the drafts share with the verification pass
            fixed = base.terms_s.get("layer_overhead", 0.0) + base.terms_s.get("per_seq_overhead", 0.0)
            layer_s = (base.step_time_s - fixed) / n_layers \
                + F.engine_factor(F.ENGINE_LAYER_OVERHEAD_S, self.phys) \
                + (F.engine_factor(F.ENGINE_MOE_LAYER_OVERHEAD_S, self.phys) if spec.moe_layers else 0.0)
            out = _spec_speed(base, verify, sd, layer_s)
        self._speed[batch] = out
        return out

    def _prefill(self, prompt: int) -> PrefillEstimate:
        d, spec, w = self.d, self.d.model.spec, self.parts.weights
        links, tiers, dev, bits, _ = self._physics
        acc = d.hardware.accelerator
        dense_bits = kernel_bits({f for c in DENSE_LINEAR_CLASSES for _, f in self.parts.scheme.mix(c)},
                                 acc.native_fp8, acc.native_fp4)
        return scale_prefill(prefill_time(spec, w, dev, par=d.parallel, prompt_tokens=prompt, links=links,
                                          tiers=tiers, compute_bits=bits, engine=self.phys, dense_bits=dense_bits,
                                          chunk_tokens=self.parts.settings.max_num_batched_tokens,
                                          cpu_layer_fraction=1.0 - self.glf, cpu_path=self._cpu_path,
                                          kt_prefill_threshold=d.settings.kt_gpu_prefill_token_threshold), self.k_pf)

    @property
    def _rate_free(self) -> tuple[PrefillEstimate, PrefillEstimate | None, int]:
        """(prefill of the TTFT prompt, prefill of the workload's prompt, admitted sequences per replica)."""
        if self._free is None:
            self._free = self._compute_rate_free()
        return self._free

    def _compute_rate_free(self) -> tuple[PrefillEstimate, PrefillEstimate | None, int]:
        d, kv, mem, par = self.d, self.parts.kv, self.parts.memory, self.d.parallel
        wl = d.workload
        prompt = d.prompt_tokens or (wl.prefill_tokens if wl else d.context)
        pf = self._prefill(prompt)
        if wl is None:
            return pf, None, 0
        kv_avail = mem.kv_available_bytes - mem.reserve_per_seq_bytes
        glf, settings = self.glf, self.parts.settings
        run_cap = running_per_replica(d.engine, d.model.spec, par, settings.max_num_seqs,
                                      explicit=d.settings.max_num_seqs is not None)
        if self.parts.recurrent is not None:
            admitted = min(run_cap,
                           mem.seqs_that_fit(hybrid_kv_per_seq(kv, self.parts.recurrent, wl.max_len) * glf / par.pp))
        else:
            per_seq_gpu = kv.bytes_at(wl.max_len) * glf / par.pp   # the GPU's layers' share of a sequence's KV
            admitted = min(run_cap, (int(kv_avail // per_seq_gpu) if per_seq_gpu > 0 else
                                     run_cap) if kv_avail > 0 else 0)
        wpf = pf if wl.prefill_tokens == prompt else self._prefill(wl.prefill_tokens)
        self._curve = _StepCurve(lambda b: self.token_speed(b).step_time_s, par.dp, admitted)
        return pf, wpf, admitted

    @property
    def workload_prefill(self) -> PrefillEstimate:
        """One prompt of the workload's (prefix-missed) length: `serve()`'s single-prompt TTFT and engine work."""
        wpf = self._rate_free[1]
        if wpf is None:
            raise ValueError("Evaluator.workload_prefill needs a deployment with a workload")
        return wpf

    @property
    def admitted_per_replica(self) -> int:
        """Sequences of the workload's full length one DP replica's KV pool (and engine cap) admits."""
        return self._rate_free[2]

    def step_time(self, n: float) -> float:
        """`serve()`'s decode time per token at `n` sequences per DP replica (the same memoised curve)."""
        _ = self._rate_free  # builds the curve
        if self._curve is None:
            raise ValueError("Evaluator.step_time needs a deployment with a workload")
        return self._curve(n)

    def at(self, wl: Workload | None) -> Evaluation:
        d = self.d
        base = d.workload
        if (wl is None) != (base is None) or (
                wl is not None and base is not None
                and (wl.isl, wl.osl, wl.prefix_hit) != (base.isl, base.osl, base.prefix_hit)):
            raise ValueError("Evaluator.at: a workload of another shape needs its own Evaluator")
        if wl is not base:
            d = replace(d, workload=wl)
        par = d.parallel
        settings, scheme, w, kv, mem = (self.parts.settings, self.parts.scheme, self.parts.weights, self.parts.kv,
                                        self.parts.memory)
        n_moe = self.n_moe
        notes: list[str] = []
        pf, wpf, admitted = self._rate_free
        decode = self.token_speed(d.concurrency)
        links = self._physics[0]
        serving = None
        if wl is not None:
            assert wpf is not None and self._curve is not None
            serving = serve(wl, world=d.hardware.world, dp=par.dp, admitted_per_replica=admitted,
                            step_time=self._curve, prefill_single_s=wpf.ttft_s, prefill_work_s=wpf.work_s,
                            ttft_overhead_s=F.engine_factor(F.ENGINE_TTFT_OVERHEAD_S, d.engine))
            notes.extend(serving.notes)
        off_frac = (d.offload.dram_layers / n_moe) if n_moe else 0.0
        nvme_frac = (d.offload.nvme_layers / n_moe) if n_moe else 0.0
        host_used = (w.routed_expert_bytes * off_frac + F.HOST_RESERVED_BYTES) if (off_frac or nvme_frac) else 0.0
        glf = self.glf
        if glf < 1.0:  # the CPU's layers and their KV in host memory
            head, embed = w.by_class.get("head", 0.0), w.by_class.get("embed", 0.0)
            host_used += embed + (w.total - head - embed) * (1.0 - glf) \
                + kv.bytes_at(d.context) * d.concurrency * (1.0 - glf) + (0.0 if host_used else F.HOST_RESERVED_BYTES)
        exp_bits, attn_bits, _ = quality_of(d.model, d.quant)
        notes.extend(mem.notes)
        acc = d.hardware.accelerator
        path = expert_kernel_path(self.phys, {f for _, f in scheme.mix("routed_experts" if d.model.spec.is_moe
                                                                        else "dense_ffn")},
                                  acc.native_fp4, acc.bf16_flops, acc.fp8_flops if acc.native_fp8 else None,
                                  acc.vendor)
        if path:
            notes.append(path)
        if self.cal is not None:
            notes.append(self.cal.describe())
        return Evaluation(deployment=d, settings=settings, scheme=scheme, weights=w, kv=kv, memory=mem,
                          decode=decode, prefill=pf, serving=serving, host_used_bytes=host_used,
                          nvme_used_bytes=w.routed_expert_bytes * nvme_frac, expert_bits=exp_bits,
                          attn_bits=attn_bits, links=links, notes=tuple(notes), calibration=self.cal,
                          recurrent=self.parts.recurrent)


class _StepCurve:
    """Decode time per token at n sequences per replica (fractional n interpolated between the integer batch
    sizes evaluated; the physics is evaluated once per distinct batch)."""

    def __init__(self, f: Callable[[int], float], dp: int, cap: int):
        self._f, self._dp, self._cap = f, dp, max(1, cap)
        self._memo: dict[int, float] = {}

    def _at(self, n: int) -> float:
        n = max(1, min(n, self._cap))
        if n not in self._memo:
            self._memo[n] = self._f(n * self._dp)
        return self._memo[n]

    def __call__(self, n: float) -> float:
        lo = max(1, min(int(math.floor(n)), self._cap))
        hi = max(1, min(lo + 1, self._cap))
        if hi == lo or n <= lo:
            return self._at(lo)
        t = min(1.0, n - lo)
        return self._at(lo) * (1 - t) + self._at(hi) * t
