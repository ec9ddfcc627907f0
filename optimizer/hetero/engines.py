"""Which engine runs a model over a MIX of accelerator types, and how: rules as data with sources (like
`optimizer/solver/support.py` for kernels). The mixed-hardware planner asks `mixed_support` before it builds a
model for an engine, and the exporter writes the flags named here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MixRule:
    engine: str
    any_mix: bool  # layer split over devices of different types in one process
    tp_across_types: bool  # tensor parallelism over devices of different types
    pp_across_types: bool  # pipeline stages on devices of different types
    uneven_layers: bool  # stages may hold different numbers of layers
    cpu_experts: bool  # routed experts of chosen layers computed by the CPU from host DRAM
    flags: tuple[str, ...]  # the launch flags / variables that express the plan
    source: str


RULES: dict[str, MixRule] = {
    "llamacpp": MixRule(
        engine="llamacpp",
        any_mix=True,
        tp_across_types=False,
        pp_across_types=True,
        uneven_layers=True,
        cpu_experts=True,
        flags=(
            "--split-mode layer",
            "--tensor-split",
            "-ot/--override-tensor REGEX=CUDA<i>|CPU",
            "--main-gpu",
            "CUDA_VISIBLE_DEVICES",
        ),
        source=(
            "ggml-org/llama.cpp docs/multi-gpu.md (split mode 'layer': each GPU holds a contiguous slice of "
            "layers and the KV cache of layer l lives on the GPU that owns layer l); tools/main/README.md "
            "(-ts/--tensor-split: comma-separated proportions per device in order; -mg/--main-gpu); common/arg.cpp "
            "-ot/--override-tensor <tensor name pattern>=<buffer type> (tests/data/engine_flags/"
            "llamacpp-0c1e57098.txt lists -ts, -sm, -mg, -ot, -dev); any CUDA devices of the build may be mixed"
        ),
    ),
    "vllm": MixRule(
        engine="vllm",
        any_mix=False,
        tp_across_types=False,
        pp_across_types=True,
        uneven_layers=True,
        cpu_experts=False,
        flags=("--pipeline-parallel-size", "VLLM_PP_LAYER_PARTITION", "CUDA_VISIBLE_DEVICES"),
        source=(
            "vllm-project/vllm vllm/distributed/utils.py get_pp_indices reads VLLM_PP_LAYER_PARTITION "
            "(comma-separated layers per PP stage; tests/distributed/test_pipeline_partition.py); vLLM assumes one "
            "TP size for all stages (feature request vllm-project/vllm#27239 'Heterogeneous TP per Pipeline Stage', "
            "closed unimplemented) and maintainers answer mixed-type questions with pipeline parallelism "
            "(vllm-project/vllm#13760, #6601): different GPU types only as different PP stages, TP within one type"
        ),
    ),
    "sglang": MixRule(
        engine="sglang",
        any_mix=False,
        tp_across_types=False,
        pp_across_types=False,
        uneven_layers=False,
        cpu_experts=True,
        flags=(),
        source=(
            "sgl-project/sglang#5614 (RTX 4090 + RTX 3060 in one server: no supported way; closed inactive), "
            "#3388 (multi-node with different GPU architectures: untested); SGLang's TP/EP groups assume "
            "identical devices, so rigopt never plans SGLang across types"
        ),
    ),
}


def mixed_support(engine: str, types: list[str]) -> str | None:
    """None if `engine` can run one model over devices of these accelerator types with a layer split (one device
    per stage), else why not, with the source."""
    r = RULES.get(engine)
    if r is None:
        return f"unknown engine {engine!r} (use llamacpp, vllm or sglang)"
    if len(set(types)) <= 1:
        return None
    if r.any_mix or r.pp_across_types:
        return None
    return f"{engine} does not run one model across GPU types ({', '.join(sorted(set(types)))}); source: {r.source}"
