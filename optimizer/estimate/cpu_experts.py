"""Routed experts computed by the host CPU: DRAM bytes at the bandwidth an engine achieves on a host class, FLOPs
at the instruction set's rate for the expert format, the cross-socket (NUMA) cost, threads, and how each engine
combines the CPU part with the GPU part of a layer. Pure float arithmetic on a `layout.CpuHost`.

Engines (the key `cpu_engine` returns):

* ``llamacpp`` (llama.cpp, Ollama, LM Studio) and ``ik_llama`` (ik_llama.cpp): `--n-cpu-moe` / `-ot exps=CPU` keep a
  layer's expert tensors in a CPU buffer; ggml's scheduler runs a graph's splits strictly one after another
  (ggml/src/ggml-backend.cpp `ggml_backend_sched_compute_splits`, ggml-org/llama.cpp at LLAMACPP_COMMIT), so a
  layer's CPU experts start after that layer's GPU work: the times ADD. Prefill: an op whose weights sit in host
  memory runs on the GPU (weights copied over PCIe) when its batch reaches 32 tokens
  (ggml/src/ggml-cuda/ggml-cuda.cu `ggml_backend_cuda_device_offload_op`: `min_batch_size = 32`), else on the CPU;
  ik_llama.cpp offloads a MoE op only when batch x active experts >= 32 x total experts (ggml/src/ggml-cuda.cu
  `ggml_backend_cuda_offload_op`, ikawrakow/ik_llama.cpp at 8337e4cd3861406fc04e0854b1409cd1b027fbc9: "we need
  (active_experts / total_experts) * batch_size >= min_batch_size"), so DeepSeek's 256-expert layers stream only
  from 1,024-token batches. Layer split: each layer's copy crosses the PCIe link of the one GPU holding it.
* ``ktransformers`` (SGLang + KTransformers kt-kernel): CPU and GPU experts run in parallel ("coordinates parallel
  execution of GPU experts ... and CPU experts (using AMX/AVX instructions)", kvcache-ai/sglang
  python/sglang/srt/layers/moe/kt_ep_wrapper.py at aafedd704debb7ae55c22a193d311cb3c877d930): a layer's CPU experts
  overlap that layer's GPU MoE work (shared experts, GPU-resident experts), so only the excess is exposed. The
  layer's attention cannot overlap at one sequence: routing needs its output, and the next layer's attention needs
  the experts' output. Prefill: "<= threshold: hybrid CPU+GPU prefill ... > threshold: layerwise GPU prefill"
  (`--kt-gpu-prefill-token-threshold`, kvcache-ai/ktransformers doc/en/kt-kernel/Kimi-K2-Thinking-Native.md at
  95009ea6856c0799e517e93cb12be5e8494bc7ce): above it every layer's experts are copied to the GPUs (each TP rank its
  share), at or below it the CPU computes them. That flag belongs to KTransformers' own SGLang builds; SGLang 0.5.23,
  the release rigopt exports, computes the CPU experts of every forward on the CPU (its KTEPWrapperMethod.apply:
  submit to kt-kernel, GPU experts, sync), so its prefill never streams. kt-kernel runs one thread pool per NUMA
  node with that node's share of every expert (`--kt-threadpool-count`, kvcache-ai/ktransformers
  kt-kernel/README.md): every socket reads local memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.engines import is_llamacpp
from optimizer.estimate import factors as F
from optimizer.layout import CpuHost

IK_LLAMA = "ik_llama"
KTRANSFORMERS = "ktransformers"
# ggml-cuda.cu ggml_backend_cuda_device_offload_op: ops with host weights move to the GPU from this batch size
OP_OFFLOAD_MIN_BATCH = 32
# KTransformers --kt-gpu-prefill-token-threshold as its tutorials set it (400 for Kimi-K2 / MiniMax, 1024 for GLM-5,
# 4096 for DeepSeek-V4-Flash: doc/en/kt-kernel/*.md at 95009ea6856c0799e517e93cb12be5e8494bc7ce); the flag's own
# default (None) disables layerwise GPU prefill, and the pinned SGLang 0.5.23 has no such flag (the published
# KTransformers runs in measurements/ used KTransformers' own builds, predicted with this value)
KT_GPU_PREFILL_TOKEN_THRESHOLD = 1024

# Peak operations per cycle per core of the matrix instruction set, by expert kernel path:
#  int8: integer dot products on quantized weights with 8-bit activations (llama.cpp / ik_llama.cpp quantize the
#        activations to Q8 and use vpmaddubsw / VNNI / SDOT; KTransformers AMXINT4/AMXINT8);
#  bf16: weights dequantized to BF16 (KTransformers on FP8 / MXFP4 / BF16 experts).
# avx2: 2 x 256-bit FMA ports (32 FP32 FLOP) and 2 x vpmaddubsw (2 x 64 int8 ops); avx512: 2 x 512-bit ports
# (VNNI vpdpbusd 128 ops, vdpbf16ps 64 FLOP each; Zen 4 runs them on 256-bit halves, which this table does not
# distinguish); amx: Intel AMX TMUL 2,048 INT8 ops / 1,024 BF16 FLOP per cycle per core (Intel, "Intel Advanced
# Matrix Extensions (Intel AMX)" overview, https://www.intel.com/content/www/us/en/products/docs/accelerator-engines/
# advanced-matrix-extensions/overview.html); neon: 4 x 128-bit SDOT (4 x 32 ops), BFMMLA (4 x 16 FLOP).
OPS_PER_CYCLE: dict[str, dict[str, float]] = {
    "avx2": {"int8": 128.0, "bf16": 32.0},
    "avx512": {"int8": 256.0, "bf16": 128.0},
    "amx": {"int8": 2048.0, "bf16": 1024.0},
    "neon": {"int8": 128.0, "bf16": 64.0},
}
BF16_EXPERT_FORMATS = frozenset({"bf16", "fp16", "fp8", "fp8-block128", "fp8-channel", "mxfp4", "nvfp4"})


def cpu_engine(engine: str) -> str:
    """The CPU-expert rule an engine key follows: llamacpp, ik_llama or ktransformers (SGLang's CPU offload)."""
    if engine == IK_LLAMA:
        return IK_LLAMA
    if engine in ("sglang", KTRANSFORMERS):
        return KTRANSFORMERS
    return "llamacpp" if is_llamacpp(engine) else engine


def kernel_path(engine: str, expert_formats: set[str]) -> str:
    """int8 or bf16: the CPU kernel path of an engine for the experts' weight formats."""
    if cpu_engine(engine) == KTRANSFORMERS and expert_formats and expert_formats <= BF16_EXPERT_FORMATS:
        return "bf16"
    return "int8"


def generic_host(dram_bw: float) -> CpuHost:
    """A host known only by its DRAM bandwidth (hand-built `Links` without a host): one AVX2 desktop socket."""
    return CpuHost(name="generic", sockets=1, cores_per_socket=16, clock_hz=3.0e9, isa="avx2",
                   socket_bw_bytes_per_s=dram_bw, basis=f"{dram_bw / 1e9:.1f} GB/s (given)", channels_populated=2)


def numa_mode(host: CpuHost, engine: str) -> str:
    """single | interleave | per-socket: the NUMA behaviour on this host (auto: the engine's own)."""
    if host.sockets == 1:
        return "single"
    if not host.socket_link_bw_bytes_per_s:
        return "per-socket"  # sockets with no link between them (separate trays): each reads its own memory
    if host.numa != "auto":
        return host.numa
    return "per-socket" if cpu_engine(engine) == KTRANSFORMERS else "interleave"


def threads_used(host: CpuHost, mode: str) -> int:
    cores = host.cores_per_socket * (1 if mode == "single" else host.sockets)
    return min(host.threads or cores, cores)


def efficiency_class(host: CpuHost, engine: str) -> str:
    """The host axis of the fitted efficiency: desktop, server (one socket in use) or server-2s (two or more sockets
    in use: the engine's threads or pages span sockets, which the single-socket classes never see)."""
    cls = host.host_class
    return "server-2s" if cls == "server" and numa_mode(host, engine) != "single" else cls


@dataclass(frozen=True)
class HostBandwidth:
    bytes_per_s: float      # achievable by this engine on this host (efficiency, NUMA and threads applied)
    theoretical: float      # the populated channels' peak (or the measured figure) of the sockets in use
    efficiency: float       # the fitted host-class fraction of the theoretical peak (every engine's)
    basis: str              # printed: where the figure comes from
    limit: str              # dram | socket-link | threads
    host_class: str = "server"  # the efficiency's host class (efficiency_class)


def host_bandwidth(host: CpuHost, engine: str) -> HostBandwidth:
    """DRAM bandwidth an engine reaches for expert weights on `host`.

    Per socket: the populated channels' peak (or the measured figure's share) x the engine's efficiency on this host
    class (factors.CPU_EXPERT_BW_EFFICIENCY, fitted on measured CPU-expert decode). Sockets: `per-socket` (each
    socket reads its own copy / share) sums them; `interleave` (pages striped over the sockets, every thread reads
    all of them) sends (S-1)/S of each socket's reads over the socket link, so a socket is limited by
    min(its DRAM, link x S/(S-1)); `single` uses one socket. Threads: at most PER_THREAD_DRAM_BW each."""
    mode = numa_mode(host, engine)
    s_used = 1 if mode == "single" else host.sockets
    per_socket = (host.measured_bw_bytes_per_s / host.sockets if host.measured_bw_bytes_per_s
                  else host.socket_bw_bytes_per_s)
    cls = efficiency_class(host, engine)
    eff_f = F.cpu_expert_bw_efficiency(cpu_engine(engine), cls)
    eff = eff_f.value
    # the efficiency is a fraction of the theoretical peak; a measured (STREAM / MLC) figure is itself a fraction of
    # it (F.STREAM_OF_PEAK), so the engine reaches eff / STREAM_OF_PEAK of the measured figure (at most all of it)
    applied = min(1.0, eff / F.STREAM_OF_PEAK.value) if host.measured_bw_bytes_per_s else eff
    socket_rate, limit = per_socket * applied, "dram"
    if mode == "interleave" and host.sockets > 1 and host.socket_link_bw_bytes_per_s > 0:
        link_cap = host.socket_link_bw_bytes_per_s * host.sockets / (host.sockets - 1)
        if link_cap < socket_rate:
            socket_rate, limit = link_cap, "socket-link"
    total = socket_rate * s_used
    thread_cap = threads_used(host, mode) * F.PER_THREAD_DRAM_BW.value
    if thread_cap < total:
        total, limit = thread_cap, "threads"
    basis = (f"{host.basis}; x {applied:.2f} ("
             + (f"{cpu_engine(engine)} on a {cls} host, estimate" if eff_f.estimate
                else f"{cls} hosts, fitted over every engine's runs")
             + (f": {eff:.2f} of peak / {F.STREAM_OF_PEAK.value:.2f}, the measured share of peak" if applied != eff
                else "") + ")"
             + (f"; {mode} NUMA over {host.sockets} sockets" if host.sockets > 1 else "")
             + {"dram": "", "socket-link": f"; capped by the socket link "
                f"({host.socket_link_bw_bytes_per_s / 1e9:.0f} GB/s per direction)",
                "threads": f"; capped by {threads_used(host, mode)} threads"}[limit])
    return HostBandwidth(total, per_socket * s_used, eff, basis, limit, cls)


def compute_rate(host: CpuHost, engine: str, path: str) -> float:
    """Expert FLOP/s of the CPU: threads x clock x ISA ops per cycle for the kernel path x utilisation."""
    threads = threads_used(host, numa_mode(host, engine))
    ops = OPS_PER_CYCLE.get(host.isa, OPS_PER_CYCLE["avx2"])[path]
    return threads * host.clock_hz * ops * F.CPU_EXPERT_COMPUTE_EFFICIENCY.value


@dataclass(frozen=True)
class CpuExpertTime:
    """One step's CPU-expert work. `time_s` = max(dram_s, compute_s): the kernels stream weights while computing."""
    dram_s: float
    compute_s: float
    bandwidth: HostBandwidth
    flops_per_s: float
    exposed_s: float = 0.0  # what the step pays after the engine's overlap with GPU work

    @property
    def time_s(self) -> float:
        return max(self.dram_s, self.compute_s)

    @property
    def binding(self) -> str:
        return ("cpu compute" if self.compute_s > self.dram_s else
                {"dram": "host DRAM bandwidth", "socket-link": "cross-socket link",
                 "threads": "CPU threads (bandwidth per thread)"}[self.bandwidth.limit])

    def as_dict(self) -> dict[str, object]:
        return {"time_s": self.time_s, "exposed_s": self.exposed_s, "dram_s": self.dram_s,
                "compute_s": self.compute_s, "binding": self.binding,
                "dram_bw_bytes_per_s": self.bandwidth.bytes_per_s,
                "dram_bw_theoretical_bytes_per_s": self.bandwidth.theoretical,
                "dram_bw_efficiency": self.bandwidth.efficiency, "dram_bw_basis": self.bandwidth.basis,
                "cpu_flops_per_s": self.flops_per_s}


def expert_time(host: CpuHost, engine: str, bytes_read: float, flops: float, path: str = "int8") -> CpuExpertTime:
    bw = host_bandwidth(host, engine)
    rate = compute_rate(host, engine, path)
    return CpuExpertTime(dram_s=bytes_read / bw.bytes_per_s, compute_s=flops / rate, bandwidth=bw,
                         flops_per_s=rate)


def overlaps_gpu(engine: str) -> bool:
    """True when the engine runs a layer's CPU experts in parallel with the layer's GPU work (KTransformers)."""
    return cpu_engine(engine) == KTRANSFORMERS


def exposed_time(engine: str, cpu_s: float, cpu_layers: float, gpu_s_per_layer: float) -> float:
    """The step time the CPU experts add. llama.cpp / ik_llama.cpp: all of it (the splits run in sequence).
    KTransformers: per offloaded layer, only what exceeds that layer's GPU MoE work (they run in parallel)."""
    if not overlaps_gpu(engine) or cpu_layers <= 0:
        return cpu_s
    return max(0.0, cpu_s - cpu_layers * gpu_s_per_layer)


def prefill_streams(engine: str, chunk_tokens: int, n_experts: int = 0, experts_per_token: int = 0,
                    kt_threshold: int | None = None) -> bool:
    """Whether the engine copies host-resident experts to the GPU for a prefill micro-batch (True) or computes
    them on the CPU (False): llama.cpp from OP_OFFLOAD_MIN_BATCH tokens; ik_llama.cpp from OP_OFFLOAD_MIN_BATCH x
    total / active experts tokens; KTransformers above `kt_threshold` (its SGLang builds' layerwise prefill; None:
    SGLang 0.5.23, which always computes them on the CPU, EngineSettings.kt_gpu_prefill_token_threshold); vLLM's
    CPU offload always streams."""
    e = cpu_engine(engine)
    if e == KTRANSFORMERS:
        return kt_threshold is not None and kt_threshold > 0 and chunk_tokens > kt_threshold
    if e == IK_LLAMA:
        if chunk_tokens < OP_OFFLOAD_MIN_BATCH:
            return False
        return not experts_per_token or chunk_tokens * experts_per_token >= OP_OFFLOAD_MIN_BATCH * n_experts
    if e == "llamacpp":
        return chunk_tokens >= OP_OFFLOAD_MIN_BATCH
    return True


def stream_links(engine: str, tp: int) -> int:
    """GPU links a streamed micro-batch's experts are split over: llama.cpp's layer split copies each layer's
    experts to the one GPU holding it (one link at a time); vLLM's TP ranks each stream their shard (tp links)."""
    return 1 if cpu_engine(engine) in ("llamacpp", IK_LLAMA) else max(tp, 1)
