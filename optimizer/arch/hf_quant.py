"""Storage formats of a Hugging Face checkpoint from its own files: `config.json`'s `torch_dtype` / `dtype` and
`quantization_config`, and ModelOpt's `hf_quant_config.json`. The result has the shape of a model card's `storage`
map (tensor class -> optimizer.arch.formats name, `default` for every class not named).

What each quantization method stores (the classes it leaves unquantized stay in the checkpoint dtype):
- `fp8` (transformers FineGrainedFP8Config; DeepSeek-V3 README_WEIGHTS.md): FP8 e4m3 with a fp32 scale per
  `weight_block_size` block -> fp8-block128 for [128, 128]; without a block size, per-tensor fp8.
  Embedding, output head, router and norms stay BF16 (DeepSeek-V3 README_WEIGHTS.md).
- `mxfp4` (gpt-oss, transformers Mxfp4Config): only the MoE expert weights are FP4 (`modules_to_not_convert`
  covers attention, router, embedding and unembedding; openai/gpt-oss-120b config.json).
- `awq` / `gptq` with `bits` 4 and `group_size` 128: int4-g128 (fp16 scale + 4-bit zero per 128); `bits` 8: int8.
  The embedding and head stay in the checkpoint dtype (AutoAWQ / GPTQModel quantize the decoder linears only).
- ModelOpt (`quant_method` "modelopt" or hf_quant_config.json `quantization.quant_algo`): NVFP4 -> nvfp4 (FP4 +
  FP8 scale per 16, `group_size` 16), FP8 -> fp8; embedding, head, router and norms unquantized (ModelOpt's default
  exclusions: `lm_head`, the MoE `gate`). MIXED_PRECISION (nvidia/DeepSeek-V4-Flash-NVFP4, Qwen3.6-27B-NVFP4):
  `quantized_layers` names modules with their algorithm; each tensor class (optimizer.arch.from_safetensors
  hf_tensor_class of the module name) takes the algorithm most of its modules use, over the config's own
  quantization_config (an fp8 one for the DeepSeek-V4 NVFP4 checkpoints).
- `compressed-tensors`: the first config group's `weights` (`num_bits` 8 float -> fp8-channel for strategy
  "channel", fp8-block128 for strategy "block" with block_structure [128, 128], fp8 otherwise; `num_bits` 4 int with
  group_size 128 -> int4-g128; `num_bits` 4 float with group_size 16 -> nvfp4).
Anything else is refused with one error naming the method: guessing 16-bit for a 4-bit checkpoint would be 4x off.
"""

from __future__ import annotations

from typing import Any

from optimizer.errors import ModelFormatError
from optimizer.limits import clip_for_message

_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
_UNQUANTIZED = ("embed", "head", "router", "norms")


def checkpoint_dtype(config: dict[str, Any]) -> str:
    """The unquantized tensors' format from `torch_dtype` (or the newer `dtype`); bf16 when neither is given."""
    raw = config.get("torch_dtype", config.get("dtype"))
    if raw is None and isinstance(config.get("text_config"), dict):
        tc = config["text_config"]
        raw = tc.get("torch_dtype", tc.get("dtype"))
    if raw is None:
        return "bf16"
    if not isinstance(raw, str) or raw.lower().removeprefix("torch.") not in _DTYPES:
        raise ModelFormatError(f"config.json field 'torch_dtype' {clip_for_message(raw, 40)} is not a dtype rigopt "
                               f"knows ({', '.join(sorted(_DTYPES))})")
    return _DTYPES[raw.lower().removeprefix("torch.")]


def _quantized(fmt: str, base: str, only: str | None = None) -> dict[str, str]:
    if only is not None:
        return {"default": base, only: fmt}
    return {"default": fmt, **{c: base for c in _UNQUANTIZED}}


def _algo_format(algo: Any) -> str | None:
    """ModelOpt quant_algo names (modelopt/torch/export/model_config.py QUANTIZATION_*): the weight format."""
    a = str(algo).upper() if isinstance(algo, str) else ""
    if "NVFP4" in a:        # NVFP4, W4A16_NVFP4, W4A8_NVFP4_FP8, NVFP4_AWQ: FP4 weights, FP8 scale per 16
        return "nvfp4"
    if a.startswith("FP8"):  # FP8, FP8_PER_CHANNEL_PER_TOKEN: FP8 weights
        return "fp8"
    if a in ("W4A16_AWQ", "W4A8_AWQ"):
        return "int4-g128"
    if a in ("INT8_SQ", "W8A8_SQ_PER_CHANNEL", "INT8_WO"):
        return "int8"
    return None


def _mixed(q: dict[str, Any], start: dict[str, str]) -> dict[str, str]:
    """ModelOpt MIXED_PRECISION: `quantized_layers` {module: {quant_algo}} over the config's own storage; each
    tensor class takes the algorithm most of its modules use (ties: the name sorting first)."""
    from optimizer.arch.from_safetensors import hf_tensor_class
    layers = q.get("quantized_layers")
    if not isinstance(layers, dict) or not layers:
        raise ModelFormatError("hf_quant_config.json: MIXED_PRECISION without quantized_layers")
    votes: dict[str, dict[str, int]] = {}
    for module, entry in layers.items():
        algo = entry.get("quant_algo") if isinstance(entry, dict) else None
        fmt = _algo_format(algo)
        if fmt is None:
            raise ModelFormatError(f"hf_quant_config.json: quantized layer {clip_for_message(module, 60)} has "
                                   f"quant_algo {clip_for_message(algo, 30)} (supported: NVFP4, FP8, AWQ, INT8)")
        cls = hf_tensor_class(f"{module}.weight")
        votes.setdefault(cls, {})
        votes[cls][fmt] = votes[cls].get(fmt, 0) + 1
    out = dict(start)
    for cls, by in sorted(votes.items()):
        out[cls] = max(sorted(by), key=lambda f: by[f])
    return out


def _modelopt(algo: Any, base: str, where: str) -> dict[str, str]:
    fmt = _algo_format(algo)
    if fmt is None:
        raise ModelFormatError(f"{where}: ModelOpt quant_algo {clip_for_message(algo, 40)} is not supported "
                               "(NVFP4, FP8, AWQ, INT8)")
    return _quantized(fmt, base)


def _compressed_tensors(q: dict[str, Any], base: str) -> dict[str, str]:
    groups = q.get("config_groups")
    w = None
    if isinstance(groups, dict) and groups:
        first = groups[sorted(groups)[0]]
        w = first.get("weights") if isinstance(first, dict) else None
    if not isinstance(w, dict):
        raise ModelFormatError("config.json quantization_config (compressed-tensors) has no config_groups weights")
    bits, kind, strategy, group = w.get("num_bits"), w.get("type"), w.get("strategy"), w.get("group_size")
    if bits == 8 and kind == "float":
        if strategy == "block" and w.get("block_structure") == [128, 128]:
            return _quantized("fp8-block128", base)
        return _quantized("fp8-channel" if strategy == "channel" else "fp8", base)
    if bits == 4 and kind == "int" and group == 128:
        return _quantized("int4-g128", base)
    if bits == 4 and kind == "float" and group == 16:
        return _quantized("nvfp4", base)
    raise ModelFormatError(f"config.json quantization_config (compressed-tensors) weights "
                           f"{clip_for_message({'num_bits': bits, 'type': kind, 'group_size': group}, 60)} "
                           "are not a format rigopt knows")


def storage_from_hf(config: dict[str, Any], hf_quant_config: Any = None) -> dict[str, str]:
    """Card-style storage map of a checkpoint from its config.json (and hf_quant_config.json when present)."""
    base = checkpoint_dtype(config)
    if isinstance(hf_quant_config, dict) and isinstance(hf_quant_config.get("quantization"), dict):
        hq = hf_quant_config["quantization"]
        if str(hq.get("quant_algo")).upper() == "MIXED_PRECISION":
            cq = config.get("quantization_config")
            inner = dict(config, quantization_config=None)
            start = (storage_from_hf(inner) if not isinstance(cq, dict) or cq.get("quant_method") != "fp8"
                     else storage_from_hf(dict(config, quantization_config={k: v for k, v in cq.items()
                                                                             if k in ("quant_method", "weight_block_size")})))
            return _mixed(hq, start)
        return _modelopt(hq.get("quant_algo"), base, "hf_quant_config.json")
    q = config.get("quantization_config")
    if q is None:
        return {"default": base}
    if not isinstance(q, dict):
        raise ModelFormatError("config.json field 'quantization_config' is not an object")
    method = q.get("quant_method")
    if method == "fp8":
        block = q.get("weight_block_size")
        if block == [128, 128]:
            return _quantized("fp8-block128", base)
        if block is None:
            return _quantized("fp8", base)
        raise ModelFormatError(f"config.json quantization_config weight_block_size {clip_for_message(block, 40)} "
                               "is not supported (only [128, 128])")
    if method == "mxfp4":
        return _quantized("mxfp4", base, only="routed_experts")
    if method in ("awq", "gptq"):
        bits, group = q.get("bits", q.get("w_bit")), q.get("group_size", q.get("q_group_size"))
        if bits == 4 and group == 128:
            return {"default": "int4-g128", "embed": base, "head": base, "norms": base}
        if bits == 8:
            return {"default": "int8", "embed": base, "head": base, "norms": base}
        raise ModelFormatError(f"config.json quantization_config {method} bits={clip_for_message(bits, 10)} "
                               f"group_size={clip_for_message(group, 10)} is not supported (4-bit g128, 8-bit)")
    if method == "modelopt":
        return _modelopt(q.get("quant_algo"), base, "config.json quantization_config")
    if method == "compressed-tensors":
        return _compressed_tensors(q, base)
    raise ModelFormatError(f"config.json quantization_config quant_method {clip_for_message(method, 40)} is not "
                           "supported (fp8, mxfp4, awq, gptq, modelopt, compressed-tensors)")
