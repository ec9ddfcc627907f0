"""Empirical factors, each a named datum with its source. Formulas never carry bare literals for these.

Fitted values live in the data file `factors.yaml` beside this module, which `python bench/fidelity.py --fit`
writes (optimizer/fidelity/calibrate.py: write_factors) with the rows and date they were fitted on; this module
reads it once at import and exposes the same names as before (`F.X.value`, `F.engine_factor(...)`, the tables).
Factors that are not fitted stay here as named data with their source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer.engines import LLAMACPP_COMMIT, VLLM_VERSION, physics_engine
from optimizer.limits import load_yaml
from optimizer.units import GiB, MiB

FACTORS_FILE = Path(__file__).with_name("factors.yaml")
FACTORS_SCHEMA = "rigopt.factors/1"


@dataclass(frozen=True)
class Factor:
    value: float
    source: str
    estimate: bool = False


def _load_fitted(path: Path = FACTORS_FILE) -> dict[str, Any]:
    data = load_yaml(path.read_text())
    if not isinstance(data, dict) or data.get("schema_id") != FACTORS_SCHEMA:
        raise RuntimeError(f"{path}: not a {FACTORS_SCHEMA} file (rewrite it with python bench/fidelity.py --fit)")
    return data


FITTED = _load_fitted()
_DECODE = FITTED["decode"]
_PREFILL = FITTED["prefill"]


def _provenance(part: dict[str, Any], note: str) -> str:
    more = ", ..." if len(part["rows"]) > 6 else ""
    return (f"fitted on {len(part['rows'])} rows ({', '.join(part['rows'][:6])}{more}"
            f"; {FITTED.get('rows_from', 'measurements/speed_measurements.yaml')}{note}), "
            f"rigopt fidelity {FITTED['fitted_on']} (optimizer/estimate/factors.yaml)")


def _group_rows(group: str) -> dict[str, Any]:
    """The decode fit rows of one engine group (llama.cpp rows; vLLM + SGLang rows for "serving")."""
    engines = set(_DECODE["groups"][group])
    return {"rows": [r for r, e in _DECODE["row_engines"].items() if e in engines]}


# Provenance of the values fitted by `python bench/fidelity.py --fit` (optimizer/fidelity/calibrate.py): every sourced
# decode row (FITTED["rows_from"]); `bench/fidelity.py --cv` says how well they transfer to unseen sources.
_FITTED = _provenance(_group_rows("llamacpp"), "")
_FITTED_SERVING = _provenance(_group_rows("serving"), "; vLLM and SGLang rows pooled: SGLang has fewer than "
                              "MIN_ROWS_PER_ENGINE fit rows of its own")
_FITTED_LLAMACPP = _FITTED
_ENGINE_FIT: dict[str, dict[str, float]] = _DECODE["engine"]


def _fitted(engine: str, param: str) -> float:
    return float(_ENGINE_FIT[engine][param])


# ---- memory-bandwidth efficiency (achieved / peak) for decode ------------------------------------
BW_EFFICIENCY = {
    "nvidia": Factor(0.80, "aiconfigurator systems/*.yaml mem_bw_empirical_scaling_factor: 0.8 (NVIDIA SKUs)"),
    "amd": Factor(0.70, "estimate: MI300X decode kernels reach a lower fraction of HBM peak than NVIDIA", True),
    "intel": Factor(0.50, "aiconfigurator b60.yaml mem_bw_empirical_scaling_factor: 0.5"),
    "apple": Factor(0.75, "estimate: llama.cpp Metal decode reaches ~70-80% of unified-memory peak", True),
    "unified": Factor(0.78, "estimate: LPDDR5X SoCs (DGX Spark, Strix Halo) before a fit", True),
}
for _family, _value in _DECODE["bw_efficiency"].items():  # families with enough llama.cpp decode rows: fitted
    BW_EFFICIENCY[_family] = Factor(float(_value), _FITTED + f": llama.cpp decode rows on {_family} devices; Huber "
                                    "loss in log space, leave-one-source-out cross-validated (optimizer/fidelity)")
# ---- routed experts computed by the host CPU (optimizer/estimate/cpu_experts.py) -------------------------------
# Achieved fraction of the host's theoretical DRAM bandwidth (populated channels, sockets in use) on CPU-expert
# decode, per CPU-expert engine and host class (desktop: one socket, <= 4 channels; server: one socket in use with
# more channels (EPYC, Xeon, Threadripper); server-2s: two or more sockets in use, whose cross-socket traffic and
# the engines' NUMA handling cost what a single-socket host never pays: cpu_experts.efficiency_class). Starting
# values are estimates from published offload runs (desktops ~60%, servers 10-54% of the socket sum, issue 20);
# `python bench/fidelity.py --fit` replaces a host class's cells, every engine's, with the median implied by the
# measured rows of that class (factors.yaml `cpu_experts`, optimizer/fidelity/calibrate.py fit_cpu_experts) when it
# has MIN_CPU_EXPERT_ROWS rows from MIN_CPU_EXPERT_SOURCES sources; a class without them keeps these estimates.
_CPU_EXPERT_ESTIMATE = "estimate: published CPU-expert decode (desktops ~60%, servers 10-54% of peak; issue 20)"
_CPU_EXPERT_ESTIMATE_2S = ("estimate: published CPU-expert decode on dual-socket hosts reaches 25-50% of the "
                           "socket-sum peak (issue 20)")
CPU_EXPERT_BW_EFFICIENCY: dict[tuple[str, str], Factor] = {
    ("llamacpp", "desktop"): Factor(0.60, _CPU_EXPERT_ESTIMATE, True),
    ("llamacpp", "server"): Factor(0.40, _CPU_EXPERT_ESTIMATE, True),
    ("ik_llama", "desktop"): Factor(0.65, _CPU_EXPERT_ESTIMATE, True),
    ("ik_llama", "server"): Factor(0.45, _CPU_EXPERT_ESTIMATE, True),
    ("ktransformers", "desktop"): Factor(0.55, _CPU_EXPERT_ESTIMATE, True),
    ("ktransformers", "server"): Factor(0.40, _CPU_EXPERT_ESTIMATE, True),
    ("llamacpp", "server-2s"): Factor(0.30, _CPU_EXPERT_ESTIMATE_2S, True),
    ("ik_llama", "server-2s"): Factor(0.30, _CPU_EXPERT_ESTIMATE_2S, True),
    ("ktransformers", "server-2s"): Factor(0.30, _CPU_EXPERT_ESTIMATE_2S, True),
}
CPU_EXPERT_BW_ESTIMATES: dict[tuple[str, str], Factor] = dict(CPU_EXPERT_BW_EFFICIENCY)  # before any fit
_CPU_FIT = FITTED.get("cpu_experts") or {}
# one fitted value per host class, shared by every engine (calibrate.fit_cpu_experts says why)
for _cls, _v in (_CPU_FIT.get("bw_efficiency") or {}).items():
    for (_eng, _c) in list(CPU_EXPERT_BW_EFFICIENCY):
        if _c == _cls:
            CPU_EXPERT_BW_EFFICIENCY[(_eng, _c)] = Factor(float(_v["value"]), (
                f"fitted on {_v['rows']} measured CPU-expert decode rows from {_v['sources']} sources of every "
                f"CPU-expert engine on {_cls} hosts: median over sources of the efficiency each row implies, rigopt "
                f"fidelity {FITTED['fitted_on']} (optimizer/estimate/factors.yaml)"))


def cpu_expert_bw_efficiency(engine: str, host_class: str) -> Factor:
    """The CPU-expert DRAM efficiency of an engine on a host class (llama.cpp's for engines without a cell)."""
    return CPU_EXPERT_BW_EFFICIENCY.get((engine, host_class)) or CPU_EXPERT_BW_EFFICIENCY[("llamacpp", host_class)]


# The share of the populated channels' theoretical peak a STREAM / Intel MLC read test reaches, for hosts given with
# a measured bandwidth (host spec `bw`): the median of the offload rows that state both a measured figure and the
# channel population (measurements/offload_measurements.yaml: Threadripper PRO 7965WX 225 of 307 GB/s, Xeon 6980P
# 512 of 614, 2x EPYC 9355 NPS4 720 of 1152, Ryzen 9 9950X 88 of 102, EPYC 9965 275 of 576; ratios 0.73, 0.83,
# 0.63, 0.86, 0.48).
STREAM_OF_PEAK = Factor(0.73, "estimate: median measured (STREAM / MLC) share of theoretical DRAM bandwidth of the "
                              "offload measurement hosts that state both", True)
PER_THREAD_DRAM_BW = Factor(20e9, "estimate: one x86 server core sustains roughly 15-30 GB/s of DRAM reads "
                                  "(single-core STREAM); caps hosts run with few threads", True)
CPU_EXPERT_COMPUTE_EFFICIENCY = Factor(0.50, "estimate: expert GEMV/GEMM kernels (ggml, kt-kernel AMX) reach about "
                                             "half the ISA's peak ops per cycle", True)
PCIE_EFFICIENCY = Factor(0.80, "stas00/ml-engineering network/README.md: PCIe 4.0/5.0 x16 deliver ~31/63 of 32/64 "
                         "GB/s; pinned copies ~80% of nominal", True)
NVME_EFFICIENCY = Factor(0.70, "estimate: random 1-MiB expert reads reach ~70% of sequential read rate", True)

# ---- compute efficiency --------------------------------------------------------------------------
PREFILL_MFU_BY_ENGINE: dict[str, dict[str, Factor]] = {}  # filled below with fitted values; falls back to PREFILL_MFU
PREFILL_MFU = Factor(0.45, "estimate: MAMF/spec is 0.70-0.80 on Hopper/Blackwell (stas00/ml-engineering "
                           "compute/accelerator/README.md); whole-model prefill reaches ~0.4-0.5", True)
DECODE_COMPUTE_EFFICIENCY = Factor(0.50, "estimate: small-batch GEMMs reach about half of MAMF", True)

# ---- per-step fixed costs, per engine ------------------------------------------------------------
# Decode step = bytes / (bandwidth x efficiency) (or FLOPs / compute) + these fixed costs: per step (scheduling,
# sampling, launch), per layer, per MoE layer (routing, top-k, grouped-GEMM launches) and, when TP > 1, per layer
# for the two TP synchronisations beyond the all-reduce's own latency/bytes term (kernel boundaries, barriers).
# Fitted by optimizer/fidelity/calibrate.py per engine group; all >= 0, so the expected time never drops below
# the roofline bound. Engines without enough fit rows of their own share a group's values (said in the source).
LAYER_OVERHEAD_S = Factor(_fitted("llamacpp", "layer"), _FITTED_LLAMACPP + ": the fit drives llama.cpp's per-layer "
                                                                           "cost to its bound 0 (was an "
                          "estimate of 5 us per layer)")
MOE_LAYER_OVERHEAD_S = Factor(_fitted("llamacpp", "moe"), _FITTED_LLAMACPP + ": routing, top-k and grouped-GEMM "
                                                                             "launches per MoE layer in "
                              "llama.cpp decode (was an estimate of 50 us; 15 us before the 2026-11-26 refit)")

ENGINE_STEP_OVERHEAD_S = {
    "vllm": Factor(_fitted("vllm", "step"), _FITTED_SERVING + ": scheduler, sampling and launch cost per decode step"),
    "sglang": Factor(_fitted("sglang", "step"), _FITTED_SERVING + ": per decode step (SGLang shares the vLLM/SGLang "
                                                                  "group value)"),
    "llamacpp": Factor(0.0, "not fitted: llama.cpp rows (batch 1, one device) cannot separate a per-step cost from "
                            "the per-layer one; 0"),
}
ENGINE_LAYER_OVERHEAD_S = {
    "vllm": Factor(0.0, "not fitted: with a per-step and a per-MoE-layer cost the vLLM/SGLang rows leave no per-layer "
                        "cost to separate (fits with it moved dense single-GPU rows 15-20% below their "
                        "measurements); 0"),
    "sglang": Factor(0.0, "not fitted (as vllm); 0"),
    "llamacpp": LAYER_OVERHEAD_S,
}
ENGINE_MOE_LAYER_OVERHEAD_S = {
    "vllm": Factor(_fitted("vllm", "moe"), _FITTED_SERVING + ": routing, top-k and fused-MoE launches per MoE layer"),
    "sglang": Factor(_fitted("sglang", "moe"), _FITTED_SERVING + ": per MoE layer (SGLang shares the vLLM/SGLang group "
                                                                 "value)"),
    "llamacpp": MOE_LAYER_OVERHEAD_S,
}
ENGINE_TP_LAYER_SYNC_S = {
    "vllm": Factor(_fitted("vllm", "tp"), _FITTED_SERVING + ": TP cost beyond the all-reduce term "
                   "(2 x (bytes / link + ALLREDUCE_LATENCY_S) per layer); the fit drives it to its bound 0"),
    "sglang": Factor(_fitted("sglang", "tp"), _FITTED_SERVING + ": TP cost beyond the all-reduce term "
                     "(SGLang shares the vLLM/SGLang group value)"),
    "llamacpp": Factor(0.0, "not fitted: rigopt runs llama.cpp with layer split (no TP); 0"),
}


_SERVING = FITTED.get("serving", {"ttft_overhead_s": 0.0, "seq_step_s": 0.0, "rows": []})
ENGINE_SEQ_STEP_S = {
    "vllm": Factor(float(_SERVING.get("seq_step_s", 0.0)),
                   f"fitted on the batched served TPOT rows (measurements/serving_measurements.yaml; vLLM and SGLang "
                   f"pooled): median per-sequence step cost implied by measured vs predicted TPOT, rigopt fidelity "
                   f"{FITTED['fitted_on']}: per-request scheduling, sampling, detokenization and the batch-size growth "
                   "of attention/MoE kernel time the roofline terms miss"),
    "sglang": Factor(float(_SERVING.get("seq_step_s", 0.0)), "as vllm (the vLLM/SGLang rows are pooled)"),
    "llamacpp": Factor(0.0, "not fitted: llama.cpp rows are single-stream; 0"),
    "mlx": Factor(0.0, "not fitted: the mlx rows are single-stream; 0"),
}
_SAT = float(_SERVING.get("seq_saturation", 0.0) or 0.0)
ENGINE_SEQ_SATURATION = {
    e: Factor(_SAT, "fitted with the per-sequence step cost (grid over N_sat, the lowest median |TPOT error| on the "
                    "batched served rows, rigopt fidelity --fit): sequences per step at which the per-sequence cost "
                    "saturates, cost x N_sat x (1 - exp(-n / N_sat)); 0 = linear (not fitted)")
    for e in ("vllm", "sglang")}
ENGINE_SEQ_SATURATION.update({e: Factor(0.0, "per-sequence cost not fitted for this engine")
                              for e in ("llamacpp", "mlx")})
ENGINE_TTFT_OVERHEAD_S = {
    "vllm": Factor(float(_SERVING["ttft_overhead_s"]),
                   f"fitted on {len(_SERVING['rows'])} served TTFT rows (measurements/serving_measurements.yaml; vLLM "
                   f"and SGLang pooled): median of measured - predicted TTFT, rigopt fidelity {FITTED['fitted_on']}: "
                   "HTTP, tokenization, scheduling, first decode step and detokenization beyond queueing and prefill"),
    "sglang": Factor(float(_SERVING["ttft_overhead_s"]), "as vllm (the vLLM/SGLang rows are pooled)"),
    "llamacpp": Factor(0.0, "not fitted: llama-server's prompt-eval timing starts at prompt processing; 0"),
    "mlx": Factor(0.0, "not fitted: no served mlx rows; 0"),
}
# Engines without fit rows of their own use another engine's fitted values: Ollama and LM Studio launch
# llama.cpp (optimizer/engines.py physics_engine).

# mlx-lm: its own per-layer decode cost and prefill MFU (optimizer/fidelity/mlx_fit.py writes factors_mlx.yaml)
MLX_FACTORS_FILE = Path(__file__).with_name("factors_mlx.yaml")
_MLX = load_yaml(MLX_FACTORS_FILE.read_text())
if not isinstance(_MLX, dict) or _MLX.get("schema_id") != "rigopt.factors-mlx/1":
    raise RuntimeError(f"{MLX_FACTORS_FILE}: not a rigopt.factors-mlx/1 file "
                       "(python -m optimizer.fidelity.mlx_fit --write)")
MLX_FIT_ROWS: frozenset[str] = frozenset(_MLX["fit_rows"])
_FITTED_MLX = (f"fitted on the mlx rows {', '.join(_MLX['fit_rows'])} of measurements/local_measurements.yaml "
               "(ml-explore's own published figures), checked on the other mlx rows (optimizer/fidelity/mlx_fit.py, "
               "optimizer/estimate/factors_mlx.yaml)")
ENGINE_STEP_OVERHEAD_S["mlx"] = Factor(0.0, "not fitted: the mlx rows are batch 1 on one device and cannot separate a "
                                            "per-step cost from the per-layer one; 0")
ENGINE_LAYER_OVERHEAD_S["mlx"] = Factor(float(_MLX["layer_overhead_s"]), _FITTED_MLX + ": per-layer decode cost")
ENGINE_MOE_LAYER_OVERHEAD_S["mlx"] = Factor(0.0, "folded into the mlx per-layer cost (the fit rows cannot separate "
                                                 "them); 0")
ENGINE_TP_LAYER_SYNC_S["mlx"] = Factor(0.0, "rigopt plans mlx on one device (no TP); 0")


def engine_factor(table: dict[str, Factor], engine: str) -> float:
    """An engine's value from one of the ENGINE_* tables (unknown engines use vLLM's)."""
    return table.get(physics_engine(engine), table["vllm"]).value


# DeepSeek-V4 layers in llama.cpp: the per-layer costs above are fitted on dense and V3-class MoE models; V4's
# hyper-connection Sinkhorn normalisations add many tiny graph nodes per layer (LayerSpec.extra_kernels, counted
# from the config: 2 x 7 x hc_sinkhorn_iters = 280). Derived from one published measurement (not fitted): llama.cpp
# PR #24162 comment by yoloyash (2026-06-30), build b9842 (6f4f53f2b), DeepSeek-V4-Flash with Q4_K experts, Q8_0
# attention/shared/output and F16 HC/compressor/indexer on 8x RTX 3090 (-ngl 99, all layers on GPU): tg128 ~16.7 t/s
# = 59.9 ms per token. rigopt without this term: 11.5 GB read per token at the fitted 3090 bandwidth (895 GB/s,
# 12.9 ms) + 43 layers' fitted overheads (6.35 ms) + 7 PP hops (0.41 ms) = 19.6 ms; the 40.3-ms rest over 43 layers
# x 280 nodes = 3.35 us per node (~0.94 ms per V4 layer).
LLAMACPP_EXTRA_KERNEL_S = Factor(3.35e-6, "derived: llama.cpp PR #24162 (yoloyash, b9842, V4-Flash on 8x RTX 3090, "
                                          "tg128 16.7 t/s): the step time beyond rigopt's bytes and fitted "
                                          "per-layer costs over 43 layers x 280 Sinkhorn nodes", True)

ALLREDUCE_LATENCY_S = Factor(12e-6, "estimate: small-message all-reduce inside an NVLink domain (vLLM custom "
                                    "all-reduce ~8-10 us, NCCL ~15-25 us)", True)
ALL2ALL_KERNEL_S = Factor(25e-6, "estimate: fixed cost of one EP dispatch or combine kernel at decode batch "
                          "sizes", True)

# ---- drafts ---------------------------------------------------------------------------------------
EAGLE3_DRAFT_VOCAB = Factor(32000, "EAGLE-3 heads use a reduced draft vocabulary (draft_vocab_size 32000 in the "
                            "published yuhuili/EAGLE3-LLaMA3.1-Instruct-8B and nebius gpt-oss heads' configs)", True)

# ---- engine memory overheads ---------------------------------------------------------------------
VLLM_GPU_MEMORY_UTILIZATION = Factor(0.92, f"vllm {VLLM_VERSION} vllm/config/cache.py default "
                                     "gpu_memory_utilization")
VLLM_NON_TORCH_BYTES = Factor(2 * GiB, "estimate: non-torch memory (NCCL, cuBLAS, workspaces) ~1-3 GiB, which vllm "
                              "0.33.0 determine_available_memory subtracts", True)
VLLM_CUDAGRAPH_BYTES = Factor(1.5 * GiB, "estimate: vllm 0.33.0 profile_cudagraph_memory, ~0.5-3 GiB", True)
VLLM_SAMPLER_BYTES_PER_SEQ_PER_VOCAB = Factor(
    14.0, f"vllm {VLLM_VERSION}: tensors of one (request x vocab) shape alive together at the peak of the profile "
          "run's dummy sampler run: the model-dtype (BF16, 2 B) logits _dummy_sampler_run holds (v1/worker/"
          "gpu_model_runner.py), the FP32 copy Sampler.forward makes (logits.to(torch.float32), 4 B; v1/sample/"
          "sampler.py; temperature in place), and in its second, seeded call TopKTopPSampler.forward_native's "
          "probs (softmax, FP32, 4 B) and random_sample's exponential noise q (empty_exponential_noise_like, FP32, "
          "4 B; v1/sample/ops/topk_topp_sampler.py); top-k/top-p run in place (apply_top_k_top_p_triton, one "
          "num_SMs x vocab buffer)")
CUDA_CONTEXT_BYTES = Factor(500 * MiB, "estimate: CUDA context + driver reservation before any allocator "
                            "(~0.4-0.6 GiB)", True)
ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN = Factor(32.0, "estimate: profile-run peak ≈ tokens x hidden x 2 B x 16 live "
                                                     "buffers", True)
SGLANG_RESERVE_MIN_BYTES = Factor(10 * GiB, "sglang memory_hook.py: reserve floored at 10 GiB on GPUs > 60 GiB "
                                            "(sglang 0.5.23)")
LLAMACPP_UBATCH = Factor(512, "llama.cpp common.h default n_ubatch 512")
OLLAMA_NUM_BATCH = Factor(512, "ollama v0.33.0-rc2 api/types.go DefaultOptions NumBatch 512; llm/llama_server.go "
                               "appendBatchArgs passes it as both -b and -ub")
LMSTUDIO_BATCH = Factor(512, "estimate: LM Studio's llama.cpp engine evaluation batch size default (512, as "
                             "llama.cpp's n_ubatch); lms load has no flag for it", True)
MLX_PREFILL_STEP = Factor(2048, "mlx-lm 0.32.0 mlx_lm/server.py --prefill-step-size default 2048 (prompt tokens "
                                "per prefill chunk)")
LLAMACPP_FIT_MARGIN_BYTES = Factor(1024 * MiB, "llama.cpp --fit-target default: 1024 MiB left free per device "
                                   f"(common/arg.cpp at {LLAMACPP_COMMIT})")
VLLM_V4_INFLIGHT_BYTES_PER_TOKEN_PER_C4 = Factor(8192 + 2048, "derived from vllm 0.33.0 v1/kv_cache_interface.py: "
                                                              "C4 compressor state 32 KiB per 4-token block + "
                                                              "indexer state", True)
VLLM_V4_INFLIGHT_BYTES_PER_TOKEN_PER_C128 = Factor(4096, "derived from vllm 0.33.0 v1/kv_cache_interface.py: "
                                                         "C128 compressor state 32 KiB per 8-token block", True)

# Prefill MFU, fitted by optimizer.fidelity.calibrate.fit_prefill_mfu (median MFU implied by the prefill rows,
# per engine and model kind, and per device family where it has rows; prefill there is compute bound). MoE prefill in
# llama.cpp runs grouped expert GEMMs of few tokens each, far from peak.
_PREFILL_SRC = _provenance(_PREFILL, "; prefill rows")
for _engine, _kinds in _PREFILL["mfu"].items():
    PREFILL_MFU_BY_ENGINE[_engine] = {
        kind: Factor(float(v), f"{_PREFILL_SRC} ({_PREFILL['rows_per_kind'][_engine][kind]} {kind} rows)")
        for kind, v in _kinds.items()}

PREFILL_MFU_BY_ENGINE["mlx"] = {k: Factor(float(_MLX["prefill_mfu"]), _FITTED_MLX + f": prefill MFU ({k} and the other "
                                                                              "kind alike)") for k in ("dense", "moe")}

# ---- host memory ---------------------------------------------------------------------------------
# OS, engine process and page-cache floor on a host that holds offloaded experts; the planner
# (solver/candidates.py) and the independent check (solver/validate.py) both charge it.
HOST_RESERVED = Factor(16 * GiB, "estimate: OS + engine process + page-cache floor on a host that holds offloaded "
                       "experts (16 GiB)", True)
HOST_RESERVED_BYTES: int = int(HOST_RESERVED.value)
