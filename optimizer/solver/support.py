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


def unsupported(engine: str, family: str, arch: str, kt: bool = False) -> str | None:
    """None if the engine runs this model family on this architecture, else the reason with its source.
    kt: an SGLang plan whose offloaded experts run in KTransformers' CPU kernels (its fork ships more GPU kernels)."""
    for r in RULES:
        ok = r.archs | (r.kt_archs if kt and engine == "sglang" else frozenset())
        if engine in r.engines and family in r.families and arch not in ok:
            return (f"{engine} has no {family} kernels for {arch} (runs on {', '.join(sorted(r.archs))}); "
                    f"source: {r.source}")
    return None
