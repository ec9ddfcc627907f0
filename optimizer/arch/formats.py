"""Storage formats: exact bits per weight, block scales included.

Sources:
- GGML/GGUF block layouts: `gguf.GGML_QUANT_SIZES` (block size, bytes per block) from the gguf package,
  which mirrors ggml/src/ggml-common.h; bits per weight = 8 * type_size / block_size. Importing gguf (and numpy,
  which it imports) costs a fresh process about 0.1 s, so the table is kept in the disk cache
  (optimizer/disk_cache.py) under a digest of the installed gguf's constants.py and of this file: gguf is
  imported only when that file changes or the cache is off or empty, and the values are the same either way.
- FP8 block-128: one fp32 scale per 128x128 block (DeepSeek-V3 README_WEIGHTS.md, `weight_scale_inv`).
- MXFP4: FP4 e2m1 + one E8M0 scale per 32 values (OCP MX spec; openai/gpt-oss README; vLLM deepseek_v4.py
  at 023da1fc828e: "MXFP4 experts with ue8m0 (e8m0fnu) FP8 linear scales").
- NVFP4: FP4 e2m1 + one FP8 e4m3 scale per 16 values + a per-tensor fp32 scale (NVIDIA ModelOpt;
  nvidia/DeepSeek-V4-*-NVFP4 hf_quant_config.json group_size 16).
- INT4 AWQ/GPTQ group 128: 4-bit weights + fp16 scale and 4-bit zero point per 128 values.
- ik_llama.cpp's own types (IQ*_K, IQ*_KS, IQ*_KT, *_R4): ggml/src/ggml-common.h static_asserts of that fork
  (IK_LLAMA_FORMATS below), served by the ik_llama engine only.
- MLX affine (mlx-lm 0.32.0 `mlx_lm/utils.py` quantize_model: mode "affine" defaults group_size 64, bits 4;
  `mlx.nn.quantize` stores per group one scale and one bias in the model's float dtype, 16 bit each):
  b-bit group 64 = b + 32/64 bits per weight (4-bit 4.5, 8-bit 8.5, 3-bit 3.5, 6-bit 6.5). Group 32 = b + 1.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from optimizer.disk_cache import DiskTable, digest_files
from optimizer.errors import InputError


@dataclass(frozen=True)
class Format:
    name: str
    bits_per_weight: float   # including scales/zero points
    bits_compute: int        # bits of the math type a kernel runs at best (8 for FP8, 4 for FP4, 16 otherwise)
    description: str


_COUNT_KEY = ""  # the table's entry count: a table missing entries is recomputed


def ggml_quant_sizes_from_gguf() -> dict[str, tuple[int, int]]:
    """{GGML type name: (block size, bytes per block)}, in gguf.GGML_QUANT_SIZES order (imports gguf)."""
    import gguf
    return {qt.name: (int(block), int(size)) for qt, (block, size) in gguf.GGML_QUANT_SIZES.items()}


def _ggml_table() -> DiskTable | None:
    spec = importlib.util.find_spec("gguf")  # finds the package without importing it
    where = list(spec.submodule_search_locations or []) if spec is not None else []
    constants = Path(where[0]) / "constants.py" if where else None
    if constants is None or not constants.is_file():
        return None
    return DiskTable("ggml-quant-sizes", digest_files([constants, Path(__file__)]))


def ggml_quant_sizes() -> dict[str, tuple[int, int]]:
    """The GGML block table, from the disk cache when the installed gguf's constants are unchanged."""
    table = _ggml_table()
    if table is not None:
        got = table.snapshot()
        n = got.pop(_COUNT_KEY, None)
        if n is not None and n == [float(len(got))] and all(len(v) == 2 for v in got.values()):
            return {k: (int(v[0]), int(v[1])) for k, v in got.items()}
    sizes = ggml_quant_sizes_from_gguf()
    if table is not None:
        for k, (block, size) in sizes.items():
            table.put(k, [float(block), float(size)])
        table.put(_COUNT_KEY, [float(len(sizes))])
    return sizes


_GGML_SIZES = ggml_quant_sizes()


def _ggml_formats() -> dict[str, Format]:
    out = {}
    for qt_name, (block, size) in _GGML_SIZES.items():
        name = qt_name.lower()
        bpw = 8.0 * size / block
        out[name] = Format(name, bpw, 16, f"GGML {qt_name}: {size} bytes per {block} weights")
    return out


_NAMED: dict[str, Format] = {
    "fp32": Format("fp32", 32.0, 16, "IEEE float32"),
    "bf16": Format("bf16", 16.0, 16, "bfloat16"),
    "fp16": Format("fp16", 16.0, 16, "float16"),
    "fp8": Format("fp8", 8.0, 8, "FP8 e4m3, per-tensor scale"),
    "fp8-block128": Format("fp8-block128", 8.0 + 32.0 / (128 * 128), 8, "FP8 e4m3 + fp32 scale per 128x128 block"),
    "fp8-channel": Format("fp8-channel", 8.0, 8, "FP8 e4m3, per-output-channel scale (negligible)"),
    "mxfp4": Format("mxfp4", 4.0 + 8.0 / 32, 4, "FP4 e2m1 + E8M0 scale per 32 values"),
    "nvfp4": Format("nvfp4", 4.0 + 8.0 / 16, 4, "FP4 e2m1 + FP8 scale per 16 values"),
    "int8": Format("int8", 8.0, 8, "INT8 per-channel (W8A8/W8A16)"),
    "int4-g128": Format("int4-g128", 4.0 + (16.0 + 4.0) / 128, 16, "INT4 AWQ/GPTQ, fp16 scale + 4-bit zero per 128"),
    "int64": Format("int64", 64.0, 64, "64-bit integer lookup table"),
}
for _b in (2, 3, 4, 5, 6, 8):
    for _g in (32, 64):
        _NAMED[f"mlx-affine{_b}-g{_g}"] = Format(f"mlx-affine{_b}-g{_g}", _b + 32.0 / _g, 16,
                                                 f"MLX affine {_b}-bit, fp16 scale + fp16 bias per {_g} values")

# ik_llama.cpp's own GGML types (ikawrakow/ik_llama.cpp at the commit of optimizer/engines.py IK_LLAMA_COMMIT): block
# bytes per QK_K = 256 weights from the static_asserts of ggml/src/ggml-common.h (e.g. "sizeof(block_iq4_ks) ==
# QK_K/32 + QK_K/2"), block sizes from type_traits in ggml/src/ggml.c. The _KS/_KSS/_KT/_KL types also store a
# row_meta_size of 2 or 4 bytes per row (one scale per row, type_traits .row_meta_size): < 0.005 bits per weight for
# rows of >= 7,168 weights, not counted. The *_R4 types are the same blocks interleaved 4 rows at a time for the CPU
# (what -rtr repacks to at load): the same bits per weight.
_IK_BLOCK_BYTES: dict[str, int] = {
    "iq2_k": 2 + 2 + 8 + 64,            # sizeof(ggml_half) + sizeof(uint16_t) + QK_K/32 + QK_K/4
    "iq2_ks": 2 + 4 + 64,               # sizeof(uint16_t) + QK_K/64 + QK_K/4
    "iq2_kl": 2 + 4 + 64 + 16,          # sizeof(uint16_t) + QK_K/64 + QK_K/4 + QK_K/16
    "iq3_k": 2 + 4 + 8 + 64 + 32,       # sizeof(ggml_half) + 2*sizeof(uint16_t) + QK_K/32 + QK_K/4 + QK_K/8
    "iq3_ks": 2 + 4 + 64 + 32,          # sizeof(uint16_t) + QK_K/64 + QK_K/4 + QK_K/8
    "iq4_k": 2 + 2 + 128 + 12,          # sizeof(ggml_half) + sizeof(uint16_t) + QK_K/2 + 3*QK_K/64
    "iq4_ks": 8 + 128,                  # QK_K/32 + QK_K/2
    "iq4_kss": 32 * 4,                  # QK_K/8*sizeof(uint32_t)
    "iq5_k": 2 + 2 + 128 + 32 + 12,     # sizeof(ggml_half) + sizeof(uint16_t) + QK_K/2 + QK_K/8 + 3*QK_K/64
    "iq5_ks": 8 + 128 + 32,             # QK_K/32 + QK_K/2 + QK_K/8
    "iq6_k": 2 + 2 + 128 + 64 + 16,     # sizeof(ggml_half) + sizeof(uint16_t) + QK_K/2 + QK_K/4 + QK_K/16
    "iq1_kt": 32 + 16 + 8,              # QK_K/8 + QK_K/16 + QK_K/32
    "iq2_kt": 64 + 4,                   # QK_K/4 + QK_K/64
    "iq3_kt": 64 + 32 + 4,              # QK_K/4 + QK_K/8 + QK_K/64
    "iq4_kt": 128,                      # QK_K/2
}
_IK_R4 = ("iq2_k", "iq3_k", "iq4_k", "iq5_k", "iq4_ks", "iq5_ks")  # type_traits *_R4 of ik's own types
IK_LLAMA_FORMATS: dict[str, Format] = {}
for _n, _bytes in _IK_BLOCK_BYTES.items():
    for _name in (_n, f"{_n}_r4") if _n in _IK_R4 else (_n,):
        IK_LLAMA_FORMATS[_name] = Format(_name, 8.0 * _bytes / 256, 16,
                                         f"ik_llama.cpp {_name.upper()}: {_bytes} bytes per 256 weights")

FORMATS: dict[str, Format] = {**_ggml_formats(), **_NAMED, **IK_LLAMA_FORMATS}
FORMATS["f32"] = FORMATS["fp32"]
FORMATS["f16"] = FORMATS["fp16"]


def get_format(name: str) -> Format:
    key = name.strip().lower().replace("_", "-") if name.lower() not in FORMATS else name.lower()
    if key in FORMATS:
        return FORMATS[key]
    alt = name.strip().lower()
    if alt in FORMATS:
        return FORMATS[alt]
    raise InputError(f"unknown weight format '{name}'")


def bytes_for(params: int, fmt: str | Format) -> float:
    f = fmt if isinstance(fmt, Format) else get_format(fmt)
    return params * f.bits_per_weight / 8.0


# ---- KV-cache element types -------------------------------------------------------------
# bytes per element; llama.cpp quantized caches use GGML block sizes (q8_0: 34 B per 32 values).
# MLX quantized KV (mlx-lm models/cache.py QuantizedKVCache, --kv-bits with --kv-group-size 64 default): b-bit
# values + one scale and one bias (fp16) per 64 values: b/8 + 4/64 bytes per element.
KV_DTYPES: dict[str, float] = {
    "fp32": 4.0, "f32": 4.0,
    "bf16": 2.0, "fp16": 2.0, "f16": 2.0, "auto": 2.0,
    "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0,
}
KV_DTYPES["mlx_q8"] = 8 / 8 + 4 / 64
KV_DTYPES["mlx_q4"] = 4 / 8 + 4 / 64
for _t in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"):
    _b, _s = _GGML_SIZES[_t.upper()]
    KV_DTYPES[_t] = _s / _b


def kv_elem_bytes(kv_dtype: str) -> float:
    k = kv_dtype.strip().lower()
    if k not in KV_DTYPES:
        raise InputError(f"unknown KV dtype '{kv_dtype}' (known: {', '.join(sorted(KV_DTYPES))})")
    return KV_DTYPES[k]
