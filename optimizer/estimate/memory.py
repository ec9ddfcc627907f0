"""Per-device memory: weights, KV cache and engine runtime, with each engine's own accounting.

- vLLM: `gpu_memory_utilization` is a fraction of TOTAL device memory as CUDA reports it (cudaMemGetInfo, below
  the nvidia-smi total by the driver's reserve: Accelerator.cuda_total_bytes) and bounds weights + activations +
  non-torch + CUDA graphs + KV (vllm 0.33.0 vllm/v1/worker/gpu_worker.py determine_available_memory). The CUDA context must fit in the remaining (1 - gmu).
- SGLang: `mem_fraction_static` bounds weights + KV only; the rest is a reserve for activations and graphs
  whose default is floored at 10 GiB on GPUs above 60 GiB (sglang 0.5.23 arg_groups/memory_hook.py).
- llama.cpp: weights + KV + a compute buffer, leaving the 1 GiB margin its `--fit` keeps free per device.
- Ollama (v0.33.0-rc2) runs llama.cpp's `llama-server`: the same accounting, with its own batch (`num_batch`,
  default 512, passed as -b and -ub) and a context of num_ctx x OLLAMA_NUM_PARALLEL (ollama llm/llama_server.go:
  `-c NumCtx*numParallel -np numParallel`). Ollama passes no -ngl by default, so llama-server's own fit decides
  the GPU layers (same 1 GiB margin); OLLAMA_GPU_OVERHEAD (default 0) is extra. LM Studio's llama.cpp engine
  links llama.cpp: the same accounting, its margin taken as llama.cpp's (an estimate: its load guardrails are
  not published); its MLX engine uses the MLX accounting below.
- MLX (mlx-lm 0.32.0): weights + KV + one prefill chunk's activations inside the Metal wired limit, which is the
  accelerator's `memory_usable_bytes` for Macs (macOS recommendedMaxWorkingSetSize, ~75% of RAM by default,
  raisable with `sysctl iogpu.wired_limit_mb`; mlx_lm/server.py main() wires exactly
  mx.device_info()["max_recommended_working_set_size"]). No CUDA context and no fit margin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optimizer.arch.spec import ModelSpec
from optimizer.engines import is_llamacpp
from optimizer.estimate import factors as F
from optimizer.estimate.kv import KVEstimate
from optimizer.estimate.recurrent import RecurrentEstimate
from optimizer.estimate.weights import WeightBreakdown
from optimizer.layout import Parallel
from optimizer.limits import MAX_CONTEXT_TOKENS
from optimizer.units import GiB


def weights_per_device(w: WeightBreakdown, par: Parallel, gpu_expert_fraction: float = 1.0) -> float:
    """Weight bytes on the busiest device (dense parts split by TP, experts by EP or TP; layers by PP)."""
    experts = w.routed_expert_bytes * gpu_expert_fraction
    expert_split = par.ep_size if par.ep else par.tp
    return (w.dense_bytes / par.tp + experts / expert_split) / par.pp


def default_max_num_batched_tokens(engine: str, device_bytes: float) -> int:
    """vLLM API-server defaults (vllm/engine/arg_utils.py, v0.33.0): >=160 GiB 16384, 70-160 GiB 8192, else 2048.
    SGLang chunked-prefill defaults: <20 GB 2048, <60 GB 4096, <160 GB 8192, else 16384."""
    gib = device_bytes / GiB
    if engine == "vllm":
        return 16384 if gib >= 160 else (8192 if gib >= 70 else 2048)
    if engine == "sglang":
        gb = device_bytes / 1e9
        return 2048 if gb < 20 else 4096 if gb < 60 else 8192 if gb < 160 else 16384
    if engine == "ollama":
        return int(F.OLLAMA_NUM_BATCH.value)
    if engine == "lmstudio":
        return int(F.LMSTUDIO_BATCH.value)
    if engine == "mlx":
        return int(F.MLX_PREFILL_STEP.value)
    return int(F.LLAMACPP_UBATCH.value)


def vllm_sampler_peak_bytes(vocab_size: int, max_num_seqs: int, max_num_batched_tokens: int) -> float:
    """Peak of vLLM's dummy sampler run in the profile run (vllm 0.33.0 gpu_model_runner.py profile_run ->
    _dummy_run(max_num_tokens) -> _dummy_sampler_run): one logits row per dummy request, and _dummy_run makes
    min(max_num_batched_tokens, max_num_seqs) requests; bytes per (request x vocab entry) in
    F.VLLM_SAMPLER_BYTES_PER_SEQ_PER_VOCAB."""
    return min(max_num_seqs, max_num_batched_tokens) * vocab_size * F.VLLM_SAMPLER_BYTES_PER_SEQ_PER_VOCAB.value


def v4_inflight_reserve(spec: ModelSpec, in_flight_tokens: int) -> float:
    """vLLM's per-request reservation for DeepSeek-V4 SWA rings and compressor states (derived from vllm 0.33.0
    vllm/v1/kv_cache_interface.py)."""
    if spec.family != "deepseek_v4":
        return 0.0
    n_c4 = sum(1 for l in spec.main_layers if l.attn_kind == "v4-csa")
    n_c128 = sum(1 for l in spec.main_layers if l.attn_kind == "v4-hca")
    per_tok = (len(spec.main_layers) * 584 + n_c4 * F.VLLM_V4_INFLIGHT_BYTES_PER_TOKEN_PER_C4.value
               + n_c128 * F.VLLM_V4_INFLIGHT_BYTES_PER_TOKEN_PER_C128.value)
    return in_flight_tokens * per_tok


SGLANG_V4_POOL_SRC = ("sglang 0.5.23 wheel, sglang/srt/model_executor/pool_configurator.py: DSV4PoolConfigurator "
                      "(calculate_pool_sizes, _get_c128_state_fixed_bytes, _get_bytes_per_full_token); "
                      "arg_groups/deepseek_v4_hook.py (max_running_requests 256), "
                      "arg_groups/model_overrides/deepseek_v4.py (swa_full_tokens_ratio 0.1, page_size 256)")
SGLANG_V4_C128_RING = 128  # get_compress_state_ring_size(128) without speculative decoding


def sglang_v4_fixed_bytes(spec: ModelSpec, running_per_worker: int) -> float:
    """Memory SGLang allocates per GPU for DeepSeek-V4 before its token pool, whatever the requests' lengths: the
    C128 compressor-state rings of every request slot, ceil128((n + 1) x 128 + 129) rows of (2 x 512) fp32 per
    C128 layer (_get_c128_state_fixed_bytes in SGLANG_V4_POOL_SRC; n = the running-request cap of one
    attention-DP worker, 256 by V4's hook). The sliding-window pool and the C4 states scale with the full pool
    (kv.py SGLANG_V4_SWA_RATIO)."""
    if spec.family != "deepseek_v4":
        return 0.0
    n = max(1, running_per_worker)
    n_c128 = sum(1 for l in spec.main_layers if l.attn_kind == "v4-hca")
    rows = -(-((n + 1) * SGLANG_V4_C128_RING + SGLANG_V4_C128_RING + 1) // 128) * 128
    return float(rows * 2 * 512 * 4 * n_c128)


def sglang_default_reserve_bytes(capacity_bytes: float, chunked_prefill_size: int, par: Parallel) -> float:
    """SGLang's default reserve outside `mem_fraction_static` (sglang 0.5.23 arg_groups/memory_hook.py):
    512 MB + 1.5 MB x max(chunked_prefill_size, 2048) + 1 GB x tp x pp / 8, floored at 10 GiB above 60 GiB."""
    reserve_min = F.SGLANG_RESERVE_MIN_BYTES.value if capacity_bytes > 60 * GiB else 0.0
    return max(reserve_min, 512 * 2**20 + 1.5 * max(chunked_prefill_size, 2048) * 2**20
               + 1024 * 2**20 * par.tp * par.pp / 8)


def sglang_default_mem_fraction_static(capacity_bytes: float, chunked_prefill_size: int, par: Parallel) -> float:
    """SGLang's default `mem_fraction_static` = (memory - reserve) / memory."""
    return (capacity_bytes - sglang_default_reserve_bytes(capacity_bytes, chunked_prefill_size, par)) / capacity_bytes


@dataclass(frozen=True)
class DeviceMemory:
    """Memory of the busiest device of a plan, in bytes."""
    engine: str
    capacity_bytes: float          # usable memory of the device
    budget_bytes: float            # what the engine may use (vLLM: gmu x total)
    weights_bytes: float
    kv_bytes: float                # KV for `concurrency` sequences at `context` on this device
    kv_per_seq_bytes: float
    runtime_bytes: float           # activations, graphs, non-torch, compute buffers
    outside_budget_bytes: float    # CUDA context etc. (must fit outside the budget)
    reserve_per_seq_bytes: float = 0.0  # engine in-flight reservation beyond the KV itself (vLLM V4), once per replica
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Hybrid recurrent models. `kv_bytes` / `kv_per_seq_bytes` above are the whole cache (attention KV + recurrent
    # state) so that every sum of used memory stays right; these give the two parts apart.
    attention_kv_per_seq_bytes: float = 0.0   # attention KV of one sequence at `context` (engine block rounding)
    state_per_seq_bytes: float = 0.0          # recurrent state a running sequence pins (copies, padding)
    state_bytes: float = 0.0                  # recurrent state held for the plan (SGLang: its whole state pool)
    state_set_bytes: float = 0.0              # one state set (SGLang keeps one spare slot)
    state_pool_share: float | None = None     # SGLang: share of cache memory in the separate state pool
    state_fits: bool = True                   # SGLang: the state pool holds the plan's running sequences

    @property
    def attention_kv_bytes(self) -> float:
        return self.kv_bytes - self.state_bytes

    @property
    def used_bytes(self) -> float:
        return self.weights_bytes + self.kv_bytes + self.runtime_bytes

    @property
    def headroom_bytes(self) -> float:
        return self.budget_bytes - self.used_bytes

    @property
    def kv_available_bytes(self) -> float:
        return self.budget_bytes - self.weights_bytes - self.runtime_bytes

    @property
    def fits(self) -> bool:
        return (self.headroom_bytes >= 0 and self.state_fits
                and self.outside_budget_bytes <= self.capacity_bytes - self.budget_bytes + 1)

    def seqs_that_fit(self, attention_kv_per_seq: float) -> int:
        """Sequences (of one replica) whose attention KV of `attention_kv_per_seq` bytes and recurrent state fit."""
        avail = self.kv_available_bytes - self.reserve_per_seq_bytes
        if avail <= 0:
            return 0
        if self.state_pool_share is not None:  # SGLang: two pools, the state pool sized by its memory ratio
            pool = avail * self.state_pool_share
            n_state = int((pool - self.state_set_bytes) // self.state_per_seq_bytes) if self.state_per_seq_bytes else 0
            kv_room = avail - pool
            n_kv = int(kv_room // attention_kv_per_seq) if attention_kv_per_seq > 0 else n_state
            return max(0, min(n_state, n_kv))
        per = attention_kv_per_seq + self.state_per_seq_bytes
        return int(avail // per) if per > 0 else 0


def device_memory(spec: ModelSpec, w: WeightBreakdown, kv: KVEstimate, *, engine: str, capacity_bytes: float,
                  context: int, concurrency: int, par: Parallel, gpu_expert_fraction: float = 1.0,
                  unified: bool = False, gpu_memory_utilization: float | None = None,
                  max_num_batched_tokens: int | None = None, mem_fraction_static: float | None = None,
                  max_num_seqs: int | None = None, recurrent: RecurrentEstimate | None = None,
                  gpu_layer_fraction: float = 1.0, cuda_total_bytes: float | None = None) -> DeviceMemory:
    """Memory of the busiest device. Engine settings (None = the engine's default):
    vLLM `gpu_memory_utilization`, `max_num_batched_tokens` (profile-run activations) and `max_num_seqs`
    (the sampler's dummy run; for SGLang the running-request cap of one worker, which sizes DeepSeek-V4's fixed
    pools); SGLang `mem_fraction_static` (weights + KV as a fraction of memory; the rest is
    its reserve) and `max_num_batched_tokens` (= `chunked_prefill_size`).
    `gpu_layer_fraction` < 1 (llama.cpp family, one device): only that share of the repeating layers and their KV
    is on the GPU (-ngl); the output head stays on the GPU and the token embedding in host memory, as llama.cpp
    places them (its input layer is always on the CPU).
    `cuda_total_bytes`: the device total cudaMemGetInfo reports (Accelerator.cuda_total_bytes), which vLLM multiplies
    by gpu_memory_utilization; None = `capacity_bytes`."""
    weights = weights_per_device(w, par, gpu_expert_fraction)
    # sequences per DP replica; KV of a replica is split across PP stages, MLA/V4 not by TP (kv already per TP rank)
    seqs = -(-concurrency // par.dp)
    kv_seq = hybrid_kv_per_seq(kv, recurrent, context) / par.pp
    if gpu_layer_fraction < 1.0:
        head, embed = w.by_class.get("head", 0.0), w.by_class.get("embed", 0.0)
        weights = head + max(0.0, weights - head - embed) * gpu_layer_fraction
        kv_seq *= gpu_layer_fraction
    # vLLM picks its defaults on NVML's total (vllm 0.33.0 arg_utils.py via CudaPlatform.get_device_total_memory:
    # nvmlDeviceGetMemoryInfo(handle).total, the nvidia-smi figure), not on the CUDA total its budget uses
    mnbt = max_num_batched_tokens or default_max_num_batched_tokens(engine, capacity_bytes)
    act = mnbt * spec.hidden_size * F.ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN.value
    notes: list[str] = []
    reserve = 0.0
    if engine == "vllm":
        # vLLM sees the CUDA total (torch.cuda.mem_get_info()[1], below nvidia-smi's by the driver's reserve) and
        # requests ceil(total x gpu_memory_utilization) (vllm 0.33.0 vllm/v1/worker/utils.py request_memory)
        capacity_bytes = cuda_total_bytes or capacity_bytes
        gmu = gpu_memory_utilization or F.VLLM_GPU_MEMORY_UTILIZATION.value
        budget = capacity_bytes * gmu
        sampler = vllm_sampler_peak_bytes(spec.vocab_size, max_num_seqs or 0, mnbt)
        # the profile run's model pass and the sampler's dummy run come one after the other: the peak is the larger
        runtime = max(act, sampler) + F.VLLM_NON_TORCH_BYTES.value + F.VLLM_CUDAGRAPH_BYTES.value
        outside = F.CUDA_CONTEXT_BYTES.value
        reserve = v4_inflight_reserve(spec, 2 * mnbt) / par.pp
        if reserve:
            notes.append(f"vLLM reserves ~{reserve / GiB:.1f} GiB for V4 SWA/compressor state of in-flight prefill tokens "
                         f"(max_num_batched_tokens {mnbt}, async scheduling); its logged 'Maximum concurrency' charges "
                         f"this to every request, so it prints a lower figure than the max concurrency here")
    elif engine == "sglang":
        if mem_fraction_static is not None:
            # weights + KV pool get mem_fraction_static of the memory free before loading (sglang kv_cache_configurator.py)
            runtime = (1.0 - mem_fraction_static) * capacity_bytes
        else:
            runtime = sglang_default_reserve_bytes(capacity_bytes, mnbt, par)
        budget = capacity_bytes
        outside = 0.0
        if spec.family == "deepseek_v4":
            # max_num_seqs: the running-request cap of one attention-DP worker (deployment.running_per_replica)
            reserve = sglang_v4_fixed_bytes(spec, max_num_seqs or 256) / par.pp
            notes.append(f"SGLang sets aside ~{reserve / GiB:.1f} GiB per GPU for DeepSeek-V4's C128 compressor "
                         f"states of its {max_num_seqs or 256} request slots per worker (--max-running-requests), "
                         "and charges every token 10% of a sliding-window slot (swa_full_tokens_ratio 0.1) on top "
                         "of its compressed KV (pool_configurator.py DSV4PoolConfigurator)")
    elif engine == "mlx":
        # one prefill chunk (--prefill-step-size tokens) in flight; fused SDPA keeps no score matrix and the
        # chunk's logits are never evaluated (generate.py evaluates only the cache state during prefill)
        runtime = act
        budget = capacity_bytes
        outside = 0.0
    else:
        if not is_llamacpp(engine):
            raise ValueError(f"no memory accounting for engine {engine!r}")
        ub = F.LLAMACPP_UBATCH.value if engine in ("llamacpp", "ik_llama") else mnbt  # llama-server -ub 512
        runtime = ub * (4 * spec.vocab_size + 64 * spec.hidden_size) + (0 if unified else F.CUDA_CONTEXT_BYTES.value)
        budget = capacity_bytes - F.LLAMACPP_FIT_MARGIN_BYTES.value  # the margin llama.cpp's own fit leaves free
        outside = 0.0
    # the in-flight reservation covers the prefill chunk(s) being processed, once per replica (vLLM's logged
    # "Maximum concurrency" charges it to every request, a worst-case bound; see notes)
    kv_total = seqs * kv_seq + reserve
    if recurrent is None or not recurrent.is_hybrid:
        return DeviceMemory(engine=engine, capacity_bytes=capacity_bytes, budget_bytes=budget, weights_bytes=weights,
                            kv_bytes=kv_total, kv_per_seq_bytes=kv_seq, runtime_bytes=runtime,
                            outside_budget_bytes=outside, reserve_per_seq_bytes=reserve, notes=tuple(notes),
                            attention_kv_per_seq_bytes=kv_seq)
    st_seq = recurrent.per_seq_bytes / par.pp   # PP stages hold their own layers' state
    st_set = recurrent.set_bytes / par.pp
    share = recurrent.separate_pool_share
    state_fits = True
    if share is None:
        state = seqs * st_seq
    else:
        avail = budget - weights - runtime - reserve
        state = max(0.0, avail * share)
        state_fits = seqs * st_seq + st_set <= state
        notes.append(f"SGLang keeps recurrent state in its own pool: {share:.0%} of the cache memory "
                     f"(--mamba-full-memory-ratio {share / (1 - share):g}), {recurrent.copies:g} state slots per running "
                     f"request with the radix cache on; the attention KV pool gets the rest")
    return DeviceMemory(engine=engine, capacity_bytes=capacity_bytes, budget_bytes=budget, weights_bytes=weights,
                        kv_bytes=kv_total + state, kv_per_seq_bytes=kv_seq + st_seq, runtime_bytes=runtime,
                        outside_budget_bytes=outside, reserve_per_seq_bytes=reserve, notes=tuple(notes),
                        attention_kv_per_seq_bytes=kv_seq, state_per_seq_bytes=st_seq, state_bytes=state,
                        state_set_bytes=st_set, state_pool_share=share, state_fits=state_fits)


def hybrid_kv_per_seq(kv: KVEstimate, recurrent: RecurrentEstimate | None, context: int) -> float:
    """Attention KV of one sequence at `context`. vLLM serving a hybrid model allocates whole attention blocks of
    the (large) block size it forces, and dummy attention layers when their count is not a multiple of the group
    size (kv_cache_planning.py); other engines and models: the KV layout's own figure."""
    if recurrent is None or not recurrent.is_hybrid or recurrent.engine != "vllm" or not recurrent.vllm_block_size:
        return kv.bytes_at(context)
    b = recurrent.vllm_block_size
    tokens = -(-context // b) * b
    n_attn = len({i for i, l in kv.layouts if l.stream.kind != "state"})
    pad = (n_attn + recurrent.vllm_attention_padding_layers) / n_attn if n_attn else 1.0
    return kv.bytes_at(tokens) * pad


def max_concurrency(mem: DeviceMemory, dp: int = 1) -> int:
    if mem.state_per_seq_bytes or mem.state_pool_share is not None:
        return mem.seqs_that_fit(mem.attention_kv_per_seq_bytes) * dp
    per = mem.kv_per_seq_bytes
    avail = mem.kv_available_bytes - mem.reserve_per_seq_bytes
    if per <= 0 or avail <= 0:
        return 0
    return int(avail // per) * dp


def max_context(kv: KVEstimate, available_bytes: float, concurrency_per_replica: int, pp: int = 1,
                reserve_per_seq: float = 0.0, limit: int = MAX_CONTEXT_TOKENS,
                recurrent: RecurrentEstimate | None = None) -> int:
    """Largest context T whose KV for `concurrency_per_replica` sequences fits in `available_bytes` (0 if none).
    With a hybrid model's `recurrent` state: vLLM and llama.cpp take it from the same memory (a fixed amount per
    sequence); SGLang's separate state pool takes its share first and must hold the sequences' state."""
    fixed = 0.0
    if recurrent is not None and recurrent.is_hybrid:
        if recurrent.separate_pool_share is not None:
            pool = (available_bytes - reserve_per_seq) * recurrent.separate_pool_share
            if concurrency_per_replica * recurrent.per_seq_bytes / pp + recurrent.set_bytes / pp > pool:
                return 0
            available_bytes -= pool
        else:
            fixed = concurrency_per_replica * recurrent.per_seq_bytes / pp

    def need(t: int) -> float:
        return concurrency_per_replica * hybrid_kv_per_seq(kv, recurrent, t) / pp + reserve_per_seq + fixed
    if need(1) > available_bytes:
        return 0
    lo, hi = 1, limit
    if need(hi) <= available_bytes:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= available_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo
