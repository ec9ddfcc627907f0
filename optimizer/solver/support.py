"""Which engine runs which model family on which accelerator architecture (kernel availability), with sources.

Only the gaps that matter for planning are listed; anything not listed is assumed to run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optimizer.arch.formats import IK_LLAMA_FORMATS
from optimizer.arch.spec import ModelSpec
from optimizer.catalog.ktransformers import KtModel, load_kt_matrix
from optimizer.estimate.schemes import Scheme


@dataclass(frozen=True)
class Rule:
    engines: frozenset[str]
    families: frozenset[str]
    archs: frozenset[str]      # architectures where the combination runs
    source: str


# DeepSeek sparse attention (V3.2 DSA, V4 CSA/HCA) in vLLM and SGLang needs FlashMLA-sparse / DeepGEMM kernels that
# exist for Hopper (sm90) and datacenter Blackwell (sm100) and on AMD CDNA3/4, not for Ampere/Ada, and SM12x
# (RTX 5090, RTX PRO 6000, GB10) only through unmerged or preview branches.
SPARSE_MLA = Rule(
    engines=frozenset({"vllm", "sglang"}), families=frozenset({"deepseek_v4", "deepseek_v32"}),
    archs=frozenset({"sm90", "sm100", "gfx942", "gfx950"}),
    source=("vllm-project/vllm issue #40851 (no sm80 path for DeepSeek-V4; A800 log: 'No valid attention backend "
            "found ... use_sparse=True ... compute capability not supported'), #57144 (V4.1 verified on H200, "
            "GB200, GB300, MI350X; no Ampere path), PRs #40899/#40991 (SM12x prototypes, closed), "
            "timothystewart6/vllm-gb10#26 (GB10 rejected by SM100-only gates); vllm-project/vllm PR #40871 (ROCm "
            "DeepSeek-V4: ROCM_AITER_MLA_SPARSE), vllm-project/recipes PR #830 (DeepSeek-V4-Flash verified on MI300X, "
            "gfx942) and models/deepseek-ai/DeepSeek-V4-Pro.yaml at commit 0159550e68b545023a2d1c1bf59fc5088f9d6e89 "
            "(V4-Pro verified on MI355X, gfx950); sglang 0.5.23 mem_cache/deepseek_v4_memory_pool.py (SGLang ROCm V4 "
            "pool)"))
# SGLang + KTransformers runs these models on more GPU architectures (its SGLang fork's Triton fallbacks): the
# architectures of the model's row in hardware/ktransformers.yaml (optimizer/catalog/ktransformers.py).

RULES: tuple[Rule, ...] = (SPARSE_MLA,)


@dataclass(frozen=True)
class ModelGap:
    """One model (a checkpoint geometry: its architecture and hidden size) that an engine does not run on an
    architecture where the rest of its family runs: the family rule says yes, the engine's own support table no."""
    engine: str
    architecture: str          # config architectures[0]
    hidden_size: int           # tells the models of one family apart (V4-Pro 7168, V4-Flash 4096)
    label: str
    archs: frozenset[str]
    source: str

    def matches(self, engine: str, spec: ModelSpec, arch: str) -> bool:
        return (engine == self.engine and arch in self.archs and spec.architecture == self.architecture
                and spec.hidden_size == self.hidden_size)


MODEL_GAPS: tuple[ModelGap, ...] = (
    # V4-Flash runs on MI300X (recipes PR #830) but V4-Pro does not: vLLM's own recipe rates it "unsupported" on
    # MI300X and MI325X (both gfx942) while it verifies MI355X (gfx950), and the request for MI300/MI325 V4-Pro
    # support is open. Applies to every V4-Pro checkpoint (native FP4+FP8, base, NVFP4): the recipe rates the model.
    ModelGap("vllm", "DeepseekV4ForCausalLM", 7168, "DeepSeek-V4-Pro", frozenset({"gfx942"}), (
        "vllm-project/recipes models/deepseek-ai/DeepSeek-V4-Pro.yaml at commit "
        "0159550e68b545023a2d1c1bf59fc5088f9d6e89 (hardware: mi300x unsupported, mi325x unsupported, mi355x "
        "verified); vllm-project/vllm issue #45231 (open: 'MI300/MI325 DeepSeekv4 Pro (Functional Support & "
        "Recipes)')")),
    # SGLang: the same request is open upstream (CUDA has run V4-Pro since day 0; on MI300/MI325 "it doesnt work
    # yet"), and AMD's own gfx942 support matrix marks V4-Pro FP4 on SGLang UNSUPPORTED (its FP8 re-quantization
    # runs only with AMD's own image settings, not a pinned upstream SGLang)
    ModelGap("sglang", "DeepseekV4ForCausalLM", 7168, "DeepSeek-V4-Pro", frozenset({"gfx942"}), (
        "sgl-project/sglang issue #27890 (open: '[Parity with CUDA H200] MI300/MI325 DeepSeekv4 Pro Support'); "
        "AMD-AGI/Infera pull request #4, infera/engine/dsv4_gfx942.py support matrix (Pro fp4: sglang "
        "UNSUPPORTED)")),
)


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
    EngineGap("ik_llama", GAUDI | frozenset({"sm70", "gfx942", "gfx950", "gfx1100", "gfx1151",
                                             "apple-m1", "apple-m2", "apple-m3", "apple-m4"}), (
        "ikawrakow/ik_llama.cpp README.md at commit 8337e4cd3861406fc04e0854b1409cd1b027fbc9: 'The only fully "
        "functional and performant compute backends are CPU (AVX2 or better, ARM_NEON or better) and CUDA (Turing or "
        "newer)'; ROCm, Vulkan, Metal and old NVIDIA GPUs are not supported")),
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
AMD_GPUS = frozenset({"gfx942", "gfx950", "gfx1100", "gfx1151"})
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
    # ModelOpt NVFP4 on ROCm: RocmPlatform.supported_quantization has no "modelopt" / "modelopt_fp4" (so vLLM
    # refuses the checkpoint's method on ROCm); a ModelOpt NVFP4 config is rerouted to "petit_nvfp4", whose
    # get_quant_method returns a method only for linear layers and the KV cache: FusedMoE experts get none, and
    # it needs the optional petit-kernel package. No NVFP4 MoE path on any AMD GPU, CDNA4 included.
    FormatGap("vllm", AMD_GPUS, frozenset({"nvfp4"}), (
        "vllm-project/vllm vllm/platforms/rocm.py at commit 001eda31e3d032e9dc864e97f3630358b2ff8b5a "
        "(RocmPlatform.supported_quantization: no modelopt / modelopt_fp4) and "
        "vllm/model_executor/layers/quantization/petit.py at commit 1d321368081bca440d66e510e34b420267f7fa27 "
        "(PetitNvFp4Config.get_quant_method: LinearBase and Attention only, no FusedMoE)")),
)


def format_unsupported(engine: str, arch: str, formats: set[str]) -> str | None:
    """None if the engine has kernels for every one of these weight formats on this architecture, else why."""
    ik = formats & set(IK_LLAMA_FORMATS)
    if ik and engine != "ik_llama":
        return (f"{engine} has no {', '.join(sorted(ik))} kernels: these are ik_llama.cpp's own GGML types "
                "(ikawrakow/ik_llama.cpp ggml/src/ggml-common.h; upstream ggml has no such type), "
                "use --engine ik_llama")
    for g in FORMAT_GAPS:
        bad = formats & g.formats
        if engine == g.engine and arch in g.archs and bad:
            return f"{engine} has no {', '.join(sorted(bad))} kernels on {arch}; source: {g.source}"
    return None


def uses_kt(engine: str, offload_mode: str, expert_layers_offloaded: float) -> bool:
    """An SGLang plan whose offloaded routed experts run in KTransformers' CPU kernels (kt-kernel)."""
    return engine == "sglang" and offload_mode == "cpu" and expert_layers_offloaded > 0


def kt_row(spec: ModelSpec) -> KtModel | None:
    """The KTransformers support-matrix row documenting this model (None: KTransformers does not document it)."""
    return load_kt_matrix().model_row(spec.architecture, spec.model_type)


def kt_method(spec: ModelSpec, expert_formats: Iterable[str], host_isa: Iterable[str]) -> tuple[str | None, str]:
    """The --kt-method for routed experts stored in `expert_formats` on a host CPU with `host_isa`: (method, "")
    or (None, why not). Methods are tried in the matrix's preference order (AMX first where the host has it)."""
    kt = load_kt_matrix()
    row = kt_row(spec)
    if row is None:
        return None, (f"KTransformers documents no support for {spec.architecture or spec.name} "
                      f"(documented: {', '.join(sorted({a for r in kt.models for a in r.architectures}))}); "
                      f"source: {kt.cite('hardware/ktransformers.yaml rows')}")
    fmts = set(expert_formats)
    isa = set(host_isa)
    for m in kt.methods:
        if m.method in row.methods and fmts <= set(m.expert_formats) and isa & set(m.isa):
            return m.method, ""
    served = sorted({f for m in kt.methods if m.method in row.methods for f in m.expert_formats})
    if not fmts <= set(served):
        return None, (f"KTransformers runs {row.name} only with experts in {', '.join(served)} "
                      f"(methods {', '.join(row.methods)}), not {', '.join(sorted(fmts))}; source: "
                      f"{kt.cite(row.source)}")
    need = sorted({f"{m.method} needs {' or '.join(m.isa)}" for m in kt.methods
                   if m.method in row.methods and fmts <= set(m.expert_formats)})
    return None, (f"no KTransformers method for {', '.join(sorted(fmts))} experts on a host CPU with "
                  f"{', '.join(sorted(isa)) or 'no x86 vector ISA'} ({'; '.join(need)}); source: "
                  f"{kt.cite('kt-kernel/README.md CPU Requirements by Backend')}")


def unsupported(engine: str, spec: ModelSpec, arch: str, formats: Iterable[str] = (), *, kt: bool = False,
                expert_formats: Iterable[str] = (), host_isa: Iterable[str] | None = None) -> str | None:
    """THE support rule: None if the engine runs this model with these weight formats on this accelerator
    architecture, else the reason with its source. `estimate` (its WARNING), `cheapest` (its candidates), the
    independent checker and `export` all call this, so no command chooses what another warns about.

    kt: an SGLang plan whose offloaded experts run in KTransformers (see uses_kt): the model must be in
    KTransformers' support matrix with a validated GPU architecture (unvalidated ones are refused, not chosen
    by default), its routed experts in a format a documented --kt-method reads, and, when the host is known
    (host_isa), that method must run on the host CPU's ISA (AMX methods only on AMX CPUs)."""
    family = spec.family
    for gap in ENGINE_GAPS:
        if engine == gap.engine and arch in gap.archs:
            return f"{engine} does not run on {arch}; source: {gap.source}"
    for mg in MODEL_GAPS:
        if mg.matches(engine, spec, arch):
            return f"{engine} does not run {mg.label} on {arch}; source: {mg.source}"
    row = kt_row(spec) if kt and engine == "sglang" else None
    kt_ok = frozenset(row.gpu_archs) if row is not None else frozenset()
    for r in RULES:
        if engine in r.engines and family in r.families and arch not in r.archs | kt_ok:
            also = f"; with KTransformers also {', '.join(row.gpu_archs)}" if row is not None else ""
            return (f"{engine} has no {family} kernels for {arch} (runs on {', '.join(sorted(r.archs))}{also}); "
                    f"source: {r.source}")
    fgap = format_unsupported(engine, arch, set(formats))
    if fgap:
        return fgap
    if kt and engine == "sglang":
        m = load_kt_matrix()
        if row is None:
            return kt_method(spec, expert_formats, ())[1]
        if arch not in row.gpu_archs:
            return (f"unvalidated: KTransformers' docs validate {row.name} on {', '.join(row.gpu_archs)}, not {arch} "
                    f"(not chosen by default); source: {m.cite(row.source)}")
        method, why = kt_method(spec, expert_formats, host_isa if host_isa is not None else ("avx2", "avx512", "amx"))
        if method is None:
            return why
    return None


def scheme_formats(scheme: Scheme) -> set[str]:
    """Every storage format a quantization scheme puts in the model's tensors."""
    return {fmt for mix in scheme.mixes.values() for _, fmt in mix}


def expert_formats(scheme: Scheme) -> set[str]:
    """The storage formats of the routed experts (what KTransformers' CPU kernels read)."""
    return {fmt for _, fmt in scheme.mixes["routed_experts"]}


def plan_unsupported(engine: str, spec: ModelSpec, arch: str, scheme: Scheme, offload_mode: str,
                     expert_layers_offloaded: float, host_isa: Iterable[str] | None) -> str | None:
    """`unsupported` for a concrete plan: its scheme's formats, KTransformers when it offloads experts to the
    CPU under SGLang, and its node's host CPU (None: not known)."""
    return unsupported(engine, spec, arch, scheme_formats(scheme),
                       kt=uses_kt(engine, offload_mode, expert_layers_offloaded),
                       expert_formats=expert_formats(scheme), host_isa=host_isa)
