"""Engine exports of a placement: SGLang --init-expert-location map, vLLM EPLB config, llama.cpp -ot,
KTransformers flags."""

from __future__ import annotations

import json

from optimizer.errors import InputError


def sglang_map(slots_per_layer: list[list[list[int]]]) -> dict:
    """{"physical_to_logical_map": [[...]]} shaped [moe_layers, experts + redundant]: EP rank r owns the
    contiguous physical slots [r*P/EP, (r+1)*P/EP), so every rank must hold the same number of slots."""
    rows = []
    for li, ranks in enumerate(slots_per_layer):
        widths = {len(s) for s in ranks}
        if len(widths) != 1:
            raise InputError(f"SGLang needs the same slot count on every EP rank (layer {li} has "
                             f"{sorted(widths)}): choose --redundant-experts so (experts + R) is a multiple of EP")
        rows.append([e for s in ranks for e in s])
    if len({len(r) for r in rows}) > 1:
        raise InputError("SGLang needs the same number of physical experts in every MoE layer")
    return {"physical_to_logical_map": rows}


def sglang_map_json(slots_per_layer) -> str:
    return json.dumps(sglang_map(slots_per_layer), separators=(",", ":"))


def parse_sglang_map(text: str) -> list[list[int]]:
    try:
        obj = json.loads(text)
        rows = obj["physical_to_logical_map"]
        return [[int(x) for x in r] for r in rows]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError("not an SGLang physical_to_logical_map JSON") from None


def vllm_eplb(redundant: int) -> dict:
    """vLLM computes its own map online from recorded loads; what a plan fixes is the redundancy."""
    return {"flags": ["--enable-eplb", "--eplb-config",
                      json.dumps({"num_redundant_experts": redundant, "window_size": 1000, "step_interval": 3000},
                                 separators=(",", ":"))],
            "num_redundant_experts": redundant}


def _alternation(nums: list[int]) -> str:
    return "|".join(str(n) for n in sorted(nums))


def llamacpp_ot(cpu_layers: list[int]) -> list[str]:
    """`-ot` arguments keeping these layers' expert tensors in host memory (llama.cpp has no NVMe tier of its
    own: mmap'd tensors it cannot keep in RAM are paged from disk, so NVMe layers are also `=CPU`)."""
    if not cpu_layers:
        return []
    return ["-ot", f"blk\\.({_alternation(cpu_layers)})\\.ffn_(up|down|gate|gate_up)_(ch|)exps\\.=CPU"]


def kt_flags(gpu_experts_per_layer: int) -> list[str]:
    """Flags upstream SGLang 0.5.23 accepts (checked by tests/test_engines.py against the real parser)."""
    return ["--kt-num-gpu-experts", str(gpu_experts_per_layer)]


def kt_fork_flags() -> list[str]:
    """Frequency placement of the GPU experts (the N most-used of every layer, which is what rigopt's tiering
    assumes) exists only in the kvcache-ai SGLang fork (`sglang-kt`); upstream SGLang 0.5.23 rejects
    `--kt-expert-placement-strategy` (ktransformers doc/en/kt-kernel/experts-sched-Tutorial.md
    at 95009ea6). The fork also needs `--init-expert-location` pointing at
    the expert statistics it recorded itself, so rigopt names no file here."""
    return ["--kt-expert-placement-strategy", "frequency"]
