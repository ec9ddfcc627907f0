"""Empirical factors, each a named datum with its source. Formulas never carry bare literals for these."""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.units import GiB, MiB


@dataclass(frozen=True)
class Factor:
    value: float
    source: str
    estimate: bool = False


# Provenance of the values fitted by `python bench/fidelity.py --fit` (optimizer/fidelity/calibrate.py): decode rows of
# the fit split of measurements/speed_measurements.yaml; the check split and the report say how well they transfer.
_FITTED = ("fitted on rows lcpp-spark-gptoss20b-tg32-d4096, lcpp-spark-gptoss20b-tg32-d8192, "
           "lcpp-spark-gptoss120b-tg32-d32768, lcpp-geerling-gptoss20b-rtx4090, lcpp-geerling-llama70b-m3ultra, "
           "lcpp-geerling-llama70b-strixhalo, lcpp-geerling-gptoss20b-f16-strixhalo-tg128, "
           "lcpp-lhl-qwen3-30b-a3b-q4km-strixhalo-vulkan-tg128, lcpp-quozul-gptoss120b-strixhalo-tg128 "
           "(measurements/speed_measurements.yaml), rigopt fidelity 2026-11-25")

# ---- memory-bandwidth efficiency (achieved / peak) for decode ------------------------------------
BW_EFFICIENCY = {
    "nvidia": Factor(0.80, "aiconfigurator systems/*.yaml mem_bw_empirical_scaling_factor: 0.8 (NVIDIA SKUs)"),
    "amd": Factor(0.70, "estimate: MI300X decode kernels reach a lower fraction of HBM peak than NVIDIA", True),
    "intel": Factor(0.50, "aiconfigurator b60.yaml mem_bw_empirical_scaling_factor: 0.5"),
    "apple": Factor(0.75, "estimate: llama.cpp Metal decode reaches ~70-80% of unified-memory peak", True),
    "unified": Factor(0.78, _FITTED + ": llama.cpp decode on DGX Spark and Strix Halo (LPDDR5X); "
                      "least squares in log space, checked on the check split (optimizer/fidelity)"),
}
HOST_DRAM_EFFICIENCY = Factor(0.75, "estimate: STREAM-style sustained fraction 70-85% (shared/reference/hardware.md §2)", True)
PCIE_EFFICIENCY = Factor(0.80, "MLE-N: PCIe 4.0/5.0 x16 deliver ~31/63 of 32/64 GB/s; pinned copies ~80% of nominal", True)
NVME_EFFICIENCY = Factor(0.70, "estimate: random 1-MiB expert reads reach ~70% of sequential read rate", True)

# ---- compute efficiency --------------------------------------------------------------------------
PREFILL_MFU_BY_ENGINE: dict[str, dict[str, Factor]] = {}  # filled below with fitted values; falls back to PREFILL_MFU
PREFILL_MFU = Factor(0.45, "estimate: MAMF/spec is 0.70-0.80 on Hopper/Blackwell (MLE-A); whole-model prefill reaches ~0.4-0.5", True)
DECODE_COMPUTE_EFFICIENCY = Factor(0.50, "estimate: small-batch GEMMs reach about half of MAMF", True)
CPU_EXPERT_EFFICIENCY = Factor(0.60, "estimate: AMX/AVX-512 MoE kernels (KTransformers/llama.cpp) at batch 1 are bandwidth bound", True)

# ---- per-step fixed costs, per engine ------------------------------------------------------------
# Decode step = bytes / (bandwidth x efficiency) (or FLOPs / compute) + these fixed costs: per step (scheduling,
# sampling, launch), per layer, per MoE layer (routing, top-k, grouped-GEMM launches) and, when TP > 1, per layer
# for the two TP synchronisations beyond the all-reduce's own latency/bytes term (kernel boundaries, barriers).
# Fitted by optimizer/fidelity/calibrate.py per engine group; all >= 0, so the expected time never drops below
# the roofline bound. Engines without enough fit rows of their own share a group's values (said in the source).
_FITTED_SERVING = ("fitted on rows " + ", ".join((
    "vllm-yobitel-llama31-8b-h100-c1",
    "vllm-musgrave-llama31-8b-a100-40gb-c1",
    "vllm-tt-qwen3-30b-a3b-a100-isl8192-c1",
    "vllm-tt-deepseek-r1-awq-8xh100-isl4096-c1",
    "vllm-ghostplant-gptoss120b-a100-tp1",
    "vllm-inferencex-gptoss120b-h100-tp8-c4",
    "sglang-pr8552-dsr1-fp4-tp4-c1")) + " (measurements/speed_measurements.yaml; vLLM and SGLang rows pooled: SGLang has fewer than "
    "MIN_ROWS_PER_ENGINE fit rows of its own), rigopt fidelity 2026-11-26; refit 2026-12-01 after FP4 weights on "
    "Hopper/Ampere became W4A16 (16-bit math)")
_FITTED_LLAMACPP = _FITTED

LAYER_OVERHEAD_S = Factor(0.0, _FITTED_LLAMACPP + ": the fit drives llama.cpp's per-layer cost to its bound 0 (was an "
                          "estimate of 5 us per layer)")
MOE_LAYER_OVERHEAD_S = Factor(1.35e-05, _FITTED_LLAMACPP + ": routing, top-k and grouped-GEMM launches per MoE layer in "
                              "llama.cpp decode (was an estimate of 50 us; 15 us before the 2026-11-26 refit)")

ENGINE_STEP_OVERHEAD_S = {
    "vllm": Factor(0.00045, _FITTED_SERVING + ": scheduler, sampling and launch cost per decode step"),
    "sglang": Factor(0.00045, _FITTED_SERVING + ": per decode step (SGLang shares the vLLM/SGLang group value)"),
    "llamacpp": Factor(0.0, "not fitted: llama.cpp rows (batch 1, one device) cannot separate a per-step cost from "
                            "the per-layer one; 0"),
}
ENGINE_LAYER_OVERHEAD_S = {
    "vllm": Factor(0.0, "not fitted: with a per-step and a per-MoE-layer cost the vLLM/SGLang rows leave no per-layer cost to separate (fits with it moved dense single-GPU rows 15-20% below their measurements); 0"),
    "sglang": Factor(0.0, "not fitted (as vllm); 0"),
    "llamacpp": LAYER_OVERHEAD_S,
}
ENGINE_MOE_LAYER_OVERHEAD_S = {
    "vllm": Factor(0.0001406, _FITTED_SERVING + ": routing, top-k and fused-MoE launches per MoE layer"),
    "sglang": Factor(0.0001406, _FITTED_SERVING + ": per MoE layer (SGLang shares the vLLM/SGLang group value)"),
    "llamacpp": MOE_LAYER_OVERHEAD_S,
}
ENGINE_TP_LAYER_SYNC_S = {
    "vllm": Factor(0.0, _FITTED_SERVING + ": the fit drives the TP cost beyond the all-reduce term (2 x (bytes / link + ALLREDUCE_LATENCY_S) per layer) to its bound 0"),
    "sglang": Factor(0.0, _FITTED_SERVING + ": TP cost beyond the all-reduce term (SGLang shares the vLLM/SGLang group value)"),
    "llamacpp": Factor(0.0, "not fitted: rigopt runs llama.cpp with layer split (no TP); 0"),
}


def engine_factor(table: dict[str, Factor], engine: str) -> float:
    """An engine's value from one of the ENGINE_* tables (unknown engines use vLLM's)."""
    return table.get(engine, table["vllm"]).value


ALLREDUCE_LATENCY_S = Factor(12e-6, "estimate: small-message all-reduce inside an NVLink domain (vLLM custom all-reduce ~8-10 us, NCCL ~15-25 us)", True)
ALL2ALL_KERNEL_S = Factor(25e-6, "estimate: fixed cost of one EP dispatch or combine kernel at decode batch sizes", True)

# ---- host memory and drafts ---------------------------------------------------------------------
HOST_RESERVED_BYTES = Factor(16 * GiB, "estimate: host DRAM kept for the OS, the engine process and a page-cache floor "
                             "on a host that holds offloaded experts", True)
EAGLE3_DRAFT_VOCAB = Factor(32000, "EAGLE-3 heads use a reduced draft vocabulary (draft_vocab_size 32000 in the "
                            "published yuhuili/EAGLE3-LLaMA3.1-Instruct-8B and nebius gpt-oss heads' configs)", True)

# ---- engine memory overheads ---------------------------------------------------------------------
VLLM_GPU_MEMORY_UTILIZATION = Factor(0.92, "vllm 0.33.0 vllm/config/cache.py default gpu_memory_utilization (engines.md §1.3)")
VLLM_NON_TORCH_BYTES = Factor(2 * GiB, "engines.md §2.6: non-torch memory (NCCL, cuBLAS, workspaces) ~1-3 GiB", True)
VLLM_CUDAGRAPH_BYTES = Factor(1.5 * GiB, "engines.md §2.6: cudagraph memory ~0.5-3 GiB", True)
VLLM_SAMPLER_BYTES_PER_SEQ_PER_VOCAB = Factor(8.0, "vllm v1 gpu_model_runner _dummy_sampler_run: fp32 logits for max_num_seqs "
                                              "requests plus the softmax/probability copy (2 x 4 B per vocab entry)", True)
CUDA_CONTEXT_BYTES = Factor(500 * MiB, "estimate: CUDA context + driver reservation before any allocator (~0.4-0.6 GiB)", True)
ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN = Factor(32.0, "estimate: profile-run peak ≈ tokens x hidden x 2 B x 16 live buffers", True)
SGLANG_RESERVE_MIN_BYTES = Factor(10 * GiB, "sglang memory_hook.py: reserve floored at 10 GiB on GPUs > 60 GiB (engines.md §3.4)")
LLAMACPP_UBATCH = Factor(512, "llama.cpp common.h default n_ubatch 512")
LLAMACPP_FIT_MARGIN_BYTES = Factor(1024 * MiB, "llama.cpp --fit-target default: 1024 MiB left free per device "
                                   "(engines.md §4.1, common/arg.cpp at 0c1e57098)")
VLLM_V4_INFLIGHT_BYTES_PER_TOKEN_PER_C4 = Factor(8192 + 2048, "engines.md §2.7 (derived): C4 compressor state 32 KiB per 4-token block + indexer state", True)
VLLM_V4_INFLIGHT_BYTES_PER_TOKEN_PER_C128 = Factor(4096, "engines.md §2.7 (derived): C128 compressor state 32 KiB per 8-token block", True)

# Prefill MFU for llama.cpp, fitted by optimizer.fidelity.calibrate.fit_prefill_mfu (median MFU implied by the
# `fit` prefill rows of measurements/speed_measurements.yaml; prefill there is compute bound). Dense: 1 row
# (lcpp-tosukui-qwen3-32b-q4km-strixhalo-pp512); MoE: 4 rows (lcpp-spark-gptoss20b-pp2048,
# lcpp-spark-gptoss120b-pp2048, lcpp-tosukui-qwen3-30b-a3b-q4km-strixhalo-pp512, lcpp-quozul-gptoss120b-strixhalo-pp512).
# MoE prefill in llama.cpp runs grouped expert GEMMs of few tokens each, far from peak.
_PREFILL_SRC = ("fitted on the fit-split llama.cpp prefill rows, rigopt fidelity 2026-11-25; refit 2026-12-01 once "
                "prefill reads the weights once per ubatch (512 tokens) and a pipeline split no longer divides one "
                "prompt's time")
PREFILL_MFU_BY_ENGINE["llamacpp"] = {
    "dense": Factor(0.2795, _PREFILL_SRC + " (1 dense row: few data)"),
    "moe": Factor(0.07542, _PREFILL_SRC + " (4 MoE rows)"),
}
