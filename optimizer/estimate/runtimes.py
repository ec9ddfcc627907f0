"""Defaults of the desktop runtimes that change memory: Ollama's VRAM-tiered default context and the number of
layers llama.cpp's automatic offload (Ollama / LM Studio) keeps on the GPU when a model does not fit.

Sources (ollama/ollama v0.33.0-rc2, commit fb30760): server/routes.go Serve() sets the default num_ctx from the
total VRAM less OLLAMA_GPU_OVERHEAD: >= 47 GiB -> 262144, >= 23 GiB -> 32768, else 4096 ("slightly lower
thresholds (47/23 GiB vs. 48/24 GiB)"); llm/server.go NewLlamaServer caps num_ctx at the model's training
context; a Modelfile `PARAMETER num_ctx` or OLLAMA_CONTEXT_LENGTH disables the automatic value
(server/routes.go usesAutomaticNumCtx). Older releases used 2048 (docs/modelfile.mdx still says "Default: 2048")
and then 4096; only the pinned version is modelled.
"""

from __future__ import annotations

from optimizer.arch.spec import ModelSpec
from optimizer.estimate.memory import DeviceMemory
from optimizer.estimate.weights import WeightBreakdown
from optimizer.units import GiB

OLLAMA_CTX_TIERS = ((47 * GiB, 262144), (23 * GiB, 32768), (0, 4096))


def ollama_default_num_ctx(total_vram_bytes: float, train_ctx: int | None = None,
                           gpu_overhead_bytes: float = 0.0) -> int:
    """Ollama's automatic num_ctx for a machine with `total_vram_bytes` of GPU memory (all GPUs summed)."""
    vram = total_vram_bytes - gpu_overhead_bytes
    ctx = next(c for floor, c in OLLAMA_CTX_TIERS if vram >= floor)
    return min(ctx, train_ctx) if train_ctx else ctx


def gpu_layers_that_fit(spec: ModelSpec, w: WeightBreakdown, mem: DeviceMemory) -> int:
    """Repeating layers llama.cpp's fit would keep on the GPU (weights and KV of a layer together), the rest
    running on the CPU. Estimate: layers taken as equal; the token embedding stays in host memory (llama.cpp
    keeps tok_embd on the CPU) and the output head on the GPU."""
    n = max(1, len(spec.main_layers))
    head = w.by_class.get("head", 0.0)
    embed = w.by_class.get("embed", 0.0)
    per_layer = (max(0.0, mem.weights_bytes - head - embed) + mem.kv_bytes) / n
    room = mem.budget_bytes - mem.runtime_bytes - head
    if per_layer <= 0:
        return n
    return max(0, min(n, int(room // per_layer)))


# ollama server/sched.go Scheduler.load: "Some architectures are not safe with num_parallel > 1" -> these GGUF
# architectures (general.architecture) always get one parallel slot, whatever OLLAMA_NUM_PARALLEL says. Keyed
# here by the Hugging Face architecture llama.cpp's convert_hf_to_gguf.py turns into that GGUF name (llama.cpp
# src/llama-arch.cpp LLM_ARCH_NAMES: "qwen35", "qwen35moe", "qwen3next", "nemotron_h", "nemotron_h_moe", ...).
OLLAMA_SINGLE_SLOT = {
    "MllamaForConditionalGeneration": "mllama",
    "Qwen3VLForConditionalGeneration": "qwen3vl",
    "Qwen3VLMoeForConditionalGeneration": "qwen3vlmoe",
    "Qwen3_5ForConditionalGeneration": "qwen35",
    "Qwen3_5ForCausalLM": "qwen35",
    "Qwen3_5MoeForConditionalGeneration": "qwen35moe",
    "Qwen3_5MoeForCausalLM": "qwen35moe",
    "Qwen3NextForCausalLM": "qwen3next",
    "Lfm2ForCausalLM": "lfm2",
    "Lfm2MoeForCausalLM": "lfm2moe",
    "NemotronHForCausalLM": "nemotron_h",
}


def ollama_single_slot_arch(spec: ModelSpec) -> str | None:
    """The GGUF architecture name when Ollama serves this model one request at a time, else None."""
    return OLLAMA_SINGLE_SLOT.get(spec.architecture)
