"""Which engine runs which model family on which accelerator architecture (kernel availability), with sources.

Only the gaps that matter for planning are listed; anything not listed is assumed to run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    engines: frozenset[str]
    families: frozenset[str]
    archs: frozenset[str]      # architectures where the combination runs
    source: str
    kt_archs: frozenset[str] = frozenset()  # extra architectures for SGLang + KTransformers hybrid (CPU experts)
    kt_source: str = ""


# DeepSeek sparse attention (V3.2 DSA, V4 CSA/HCA) in vLLM and SGLang needs FlashMLA-sparse / DeepGEMM kernels that
# exist for Hopper (sm90) and datacenter Blackwell (sm100) and on AMD CDNA3/4, not for Ampere/Ada, and SM12x
# (RTX 5090, RTX PRO 6000, GB10) only through unmerged or preview branches.
SPARSE_MLA = Rule(
    engines=frozenset({"vllm", "sglang"}), families=frozenset({"deepseek_v4", "deepseek_v32"}),
    archs=frozenset({"sm90", "sm100", "gfx942", "gfx950"}),
    source=("vllm-project/vllm issue #40851 (no sm80 path for DeepSeek-V4; A800 log: 'No valid attention backend "
            "found ... use_sparse=True ... compute capability not supported'), #57144 (V4.1 verified on H200, "
            "GB200, GB300, MI350X; no Ampere path), PRs #40899/#40991 (SM12x prototypes, closed), "
            "timothystewart6/vllm-gb10#26 (GB10 rejected by SM100-only gates); engines.md §3.1 (SGLang ROCm V4 pool)"),
    kt_archs=frozenset({"sm89", "sm120"}),
    kt_source=("kvcache-ai/ktransformers doc/en/kt-kernel/deepseek-v3.2-sglang-tutorial.md (DeepSeek-V3.2 on an "
               "NVIDIA L20, sm89) and doc/en/DeepSeek-V4-Flash.md (V4-Flash on one RTX 5090, sm120)"))

RULES: tuple[Rule, ...] = (SPARSE_MLA,)


@dataclass(frozen=True)
class EngineGap:
    """An engine with no usable backend for an accelerator architecture, whatever the model."""
    engine: str
    archs: frozenset[str]
    source: str


GAUDI = frozenset({"gaudi2", "gaudi3"})
ENGINE_GAPS: tuple[EngineGap, ...] = (
    EngineGap("sglang", frozenset({"sm70"}), (
        "opendatalab/MinerU issue #3416 (SGLang on a V100: 'SGlang only supports sm 75 and above'); "
        "gpustack/gpustack PR #3932 (SGLang cannot run below compute capability 8.0, ref sgl-project/sglang#6006); "
        "sgl-project/sglang issue #24302 (sgl-kernel built for sm80+)")),
    EngineGap("sglang", GAUDI, (
        "sgl-project/sglang PRs #2121/#2357 (initial Intel Gaudi 'hpu' device: native PyTorch attention, "
        "offline example on 1-2 Gaudi2 cards) and #5252 (HPUAttnBackend/HPUGraph for usable speed, closed unmerged): "
        "no serving path rigopt can plan")),
    EngineGap("llamacpp", GAUDI, (
        "ggml-org/llama.cpp README 'Supported backends' (Metal, BLAS, SYCL, MUSA, CUDA, HIP, Vulkan, CANN, OpenCL, "
        "...): no Habana/Gaudi backend")),
)


@dataclass(frozen=True)
class FormatGap:
    """Weight formats an engine has no kernel for on an architecture (plans using them are impossible)."""
    engine: str
    archs: frozenset[str]
    formats: frozenset[str]
    source: str


_FP8 = frozenset({"fp8", "fp8-block128", "fp8-channel"})
_FP4 = frozenset({"nvfp4", "mxfp4"})
FORMAT_GAPS: tuple[FormatGap, ...] = (
    # vLLM docs "Supported Hardware" quantization table (docs.vllm.ai/quantization/): Volta (SM 7.0) has GPTQ and
    # GGUF but no AWQ, no Marlin (GPTQ/AWQ/FP8/FP4), no INT8 W8A8 and no FP8; the FP8 W8A8 page
    # (docs.vllm.ai/en/v0.32.0/features/quantization/llm_compressor/fp8/): FP8 runs from compute capability 7.5
    # (weight-only, Marlin). rigopt's int4 is GPTQ/AWQ group 128, which GPTQ kernels serve on Volta.
    FormatGap("vllm", frozenset({"sm70"}), _FP8 | _FP4 | frozenset({"int8"}),
              "docs.vllm.ai/quantization/ Supported Hardware table (Volta: no FP8, no Marlin FP8/FP4, no INT8 W8A8)"),
    # The same table (v0.11.2 and v0.14.0, column 'Intel Gaudi'): only INC (FP8 W8A8) among the quantizations;
    # 'All Intel Gaudi quantization support has been migrated to vLLM-Gaudi' (v0.15.1 notes).
    FormatGap("vllm", GAUDI, _FP4 | frozenset({"int4-g128", "int8"}),
              "docs.vllm.ai/en/v0.14.0/features/quantization/ Supported Hardware table (Intel Gaudi: INC FP8 only; "
              "no AWQ/GPTQ/Marlin); vllm-project/vllm-gaudi plugin"),
)


def format_unsupported(engine: str, arch: str, formats: set[str]) -> str | None:
    """None if the engine has kernels for every one of these weight formats on this architecture, else why."""
    for g in FORMAT_GAPS:
        bad = formats & g.formats
        if engine == g.engine and arch in g.archs and bad:
            return f"{engine} has no {', '.join(sorted(bad))} kernels on {arch}; source: {g.source}"
    return None


def unsupported(engine: str, family: str, arch: str, kt: bool = False) -> str | None:
    """None if the engine runs this model family on this architecture, else the reason with its source.
    kt: an SGLang plan whose offloaded experts run in KTransformers' CPU kernels (its fork ships more GPU kernels)."""
    for gap in ENGINE_GAPS:
        if engine == gap.engine and arch in gap.archs:
            return f"{engine} does not run on {arch}; source: {gap.source}"
    for r in RULES:
        ok = r.archs | (r.kt_archs if kt and engine == "sglang" else frozenset())
        if engine in r.engines and family in r.families and arch not in ok:
            return (f"{engine} has no {family} kernels for {arch} (runs on {', '.join(sorted(r.archs))}); "
                    f"source: {r.source}")
    return None
