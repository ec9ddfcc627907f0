"""Quantization schemes: which storage format each tensor class gets.

A scheme maps a tensor class to a mix [(fraction, format)]; fractions of a class sum to 1. "native" is
built from a model card's `storage` (how the official checkpoint is stored). GGUF presets approximate
llama.cpp's default mixes (llama_tensor_get_type in src/llama-quant.cpp: K-quant "_M" presets move
attn_v and half of ffn_down up one type and store `output` at Q6_K); a real GGUF header gives exact sizes.
MLX presets (`mlx` = True) are mlx-lm's affine quantization (mlx_lm/convert.py, utils.py quantize_model):
every Linear and Embedding at the chosen bits with group size 64 (lm_head and embeddings included), norms left
in the float dtype, MoE routers at 8 bits (the quant_predicate of mlx_lm/models/qwen3_moe.py and gpt_oss.py);
the mixed recipes of convert.py (mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6) put v_proj and down_proj of the
first and last eighth of the layers and every third layer between, and lm_head, at the high width.
"""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.arch.formats import get_format
from optimizer.arch.spec import TENSOR_CLASSES, ModelSpec
from optimizer.errors import InputError

Mix = tuple[tuple[float, str], ...]

LINEAR_CLASSES = ("attention", "indexer", "compressor", "dense_ffn", "shared_experts", "routed_experts")
EXPERT_CLASSES = ("routed_experts", "shared_experts")


@dataclass(frozen=True)
class Scheme:
    name: str
    mixes: dict[str, Mix]
    description: str
    gguf: bool = False
    mlx: bool = False   # an mlx-lm checkpoint (served by the mlx engine only)
    ik: bool = False    # a GGUF with ik_llama.cpp's own types (served by the ik_llama engine only)
    mtp_format: str | None = None  # linear tensors of MTP layers stored differently (e.g. NVFP4 repos keep MTP FP8)

    def mix(self, cls: str, mtp: bool = False) -> Mix:
        if mtp and self.mtp_format and cls in LINEAR_CLASSES:
            return ((1.0, self.mtp_format),)
        return self.mixes[cls]

    def bits(self, cls: str) -> float:
        return sum(frac * get_format(fmt).bits_per_weight for frac, fmt in self.mixes[cls])

    def min_bits(self, cls: str) -> float:
        return min(get_format(fmt).bits_per_weight for _, fmt in self.mixes[cls])


def _scheme(name: str, desc: str, default: str, gguf: bool = False, **over: str | Mix) -> Scheme:
    mixes: dict[str, Mix] = {}
    base = {"norms": "bf16", "lookup": "int64", "router": "bf16", "embed": "bf16", "head": "bf16", "vision": "bf16"}
    if gguf:
        base = {"norms": "f32", "lookup": "int64", "router": "f32", "vision": "f16"}
    for cls in TENSOR_CLASSES:
        v = over.get(cls, base.get(cls, default))
        mixes[cls] = ((1.0, v),) if isinstance(v, str) else tuple(v)
    return Scheme(name, mixes, desc, gguf)


def _mlx(name: str, bits: int, desc: str, high: int | None = None) -> Scheme:
    low_f = f"mlx-affine{bits}-g64"
    hi_f = f"mlx-affine{high}-g64" if high else low_f
    mixes: dict[str, Mix] = {}
    # mixed recipe: use_more_bits holds for L/8 + L/8 + (3L/4)/3 = L/2 of the layers; v_proj (~15% of attention
    # weights in GQA models, as the GGUF presets above) and down_proj (1/3 of an FFN) of those layers go high
    attn: Mix = ((0.925, low_f), (0.075, hi_f)) if high else ((1.0, low_f),)
    ffn: Mix = ((5 / 6, low_f), (1 / 6, hi_f)) if high else ((1.0, low_f),)
    for cls in TENSOR_CLASSES:
        mixes[cls] = ((1.0, low_f),)
    for cls in ("attention", "indexer", "compressor"):
        mixes[cls] = attn
    for cls in ("dense_ffn", "shared_experts", "routed_experts"):
        mixes[cls] = ffn
    mixes.update(norms=((1.0, "bf16"),), lookup=((1.0, "int64"),), router=((1.0, "mlx-affine8-g64"),),
                 vision=((1.0, "bf16"),), head=((1.0, hi_f),))
    return Scheme(name, mixes, desc, mlx=True)


def _kquant(name: str, main: str, up: str, head: str, desc: str, embed: str | None = None) -> Scheme:
    ffn = ((5 / 6, main), (1 / 6, up))   # half of ffn_down (1/3 of an FFN) one type up
    attn = ((0.85, main), (0.15, up))     # attn_v one type up
    return _scheme(name, desc, main, gguf=True, attention=attn, indexer=attn, compressor=attn,
                   dense_ffn=ffn, shared_experts=ffn, routed_experts=ffn, head=head, embed=embed or main)


SCHEMES: dict[str, Scheme] = {s.name: s for s in [
    _scheme("bf16", "all weights BF16", "bf16"),
    _scheme("fp8", "linear layers FP8 e4m3 with 128x128 block scales; embeddings/head BF16", "fp8-block128"),
    _scheme("int8", "linear layers INT8 per-channel; embeddings/head BF16", "int8"),
    _scheme("nvfp4", "experts and FFN NVFP4; attention FP8 block; embeddings/head BF16 (ModelOpt style)",
            "fp8-block128",
            dense_ffn="nvfp4", shared_experts="nvfp4", routed_experts="nvfp4"),
    _scheme("mxfp4", "experts and FFN MXFP4; attention FP8 block; embeddings/head BF16", "fp8-block128",
            dense_ffn="mxfp4", shared_experts="mxfp4", routed_experts="mxfp4"),
    _scheme("int4", "INT4 AWQ/GPTQ group 128 for all linear layers; embeddings/head BF16", "int4-g128"),
    _scheme("q8_0", "GGUF Q8_0", "q8_0", gguf=True, head="q8_0", embed="q8_0"),
    _kquant("q6_k", "q6_k", "q6_k", "q6_k", "GGUF Q6_K"),
    _kquant("q5_k_m", "q5_k", "q6_k", "q6_k", "GGUF Q5_K_M (approximate mix)"),
    _kquant("q4_k_m", "q4_k", "q6_k", "q6_k", "GGUF Q4_K_M (approximate mix)"),
    _kquant("q4_0", "q4_0", "q4_0", "q6_k", "GGUF Q4_0 (output Q6_K)"),
    _kquant("q3_k_m", "q3_k", "q4_k", "q6_k", "GGUF Q3_K_M (approximate mix)"),
    _kquant("q2_k", "q2_k", "q3_k", "q6_k", "GGUF Q2_K (approximate mix)"),
    _kquant("iq4_xs", "iq4_xs", "iq4_xs", "q6_k", "GGUF IQ4_XS"),
    _kquant("iq3_xxs", "iq3_xxs", "iq3_s", "q6_k", "GGUF IQ3_XXS (approximate mix)"),
    _kquant("iq2_xxs", "iq2_xxs", "iq3_xxs", "q6_k", "GGUF IQ2_XXS (approximate mix)"),
    _kquant("iq1_s", "iq1_s", "iq2_xxs", "q6_k", "GGUF IQ1_S (approximate mix)"),
    _kquant("iq1_m", "iq1_m", "iq2_xxs", "q6_k", "GGUF IQ1_M (approximate mix)"),
]}

# "Expert-only" GGUF mixes, the way MoE GGUFs (e.g. unsloth dynamic quants) keep attention at Q8_0. A dense model
# has no routed experts: there the mix is Q8_0 under another name, so no planner offers it for one (moe_only).
MOE_MIXES: frozenset[str] = frozenset({"q4_k_m-moe", "q2_k-moe", "iq2_xxs-moe", "iq1_s-moe"})
for _n, _t in (("q4_k_m-moe", "q4_k"), ("q2_k-moe", "q2_k"), ("iq2_xxs-moe", "iq2_xxs"), ("iq1_s-moe", "iq1_s")):
    SCHEMES[_n] = _scheme(_n, f"GGUF: routed experts {_t.upper()}, everything else Q8_0 (MoE-style mix)", "q8_0",
                          gguf=True, routed_experts=_t, head="q6_k", embed="q8_0")

# mlx-lm affine presets (mlx-community "-4bit", "-8bit", ... repos) and the mixed recipes of mlx_lm/convert.py
# ik_llama.cpp GGUFs (its own types, optimizer/arch/formats.py IK_LLAMA_FORMATS; served by the ik_llama engine only):
# whole-model presets in the K-quant shape above (approximate mixes: half of ffn_down and attn_v one type up), and
# MoE mixes as the published ik_llama GGUFs of large MoE models are built (routed experts at the ik type,
# everything else Q8_0)
for _n, _main, _up in (("iq6_k", "iq6_k", "q8_0"), ("iq5_k", "iq5_k", "iq6_k"), ("iq4_k", "iq4_k", "iq5_k"),
                       ("iq4_ks", "iq4_ks", "iq5_ks"), ("iq3_k", "iq3_k", "iq4_k"),
                       ("iq2_k", "iq2_k", "iq3_k"), ("iq2_ks", "iq2_ks", "iq3_k")):
    _s = _kquant(_n, _main, _up, "q6_k", f"ik_llama.cpp GGUF {_n.upper()} (approximate mix)")
    SCHEMES[_n] = Scheme(_s.name, _s.mixes, _s.description, gguf=True, ik=True)
for _n, _t in (("iq4_ks-moe", "iq4_ks"), ("iq3_k-moe", "iq3_k"), ("iq2_kl-moe", "iq2_kl"), ("iq2_ks-moe", "iq2_ks"),
               ("iq1_kt-moe", "iq1_kt")):
    _s = _scheme(_n, f"ik_llama.cpp GGUF: routed experts {_t.upper()}, everything else Q8_0 (MoE-style mix)", "q8_0",
                 gguf=True, routed_experts=_t, head="q6_k", embed="q8_0")
    SCHEMES[_n] = Scheme(_s.name, _s.mixes, _s.description, gguf=True, ik=True)
IK_QUANTS = tuple(n for n, s in SCHEMES.items() if s.ik)

for _b in (8, 6, 5, 4, 3, 2):
    SCHEMES[f"mlx{_b}"] = _mlx(f"mlx{_b}", _b, f"MLX {_b}-bit affine, group 64 ({_b + 0.5:g} bits/weight with scales "
                                             "and biases); embeddings and lm_head too")
for _lo, _hi in ((2, 6), (3, 4), (3, 6), (4, 6)):
    SCHEMES[f"mlx-mixed-{_lo}-{_hi}"] = _mlx(f"mlx-mixed-{_lo}-{_hi}", _lo,
                                             f"MLX mixed_{_lo}_{_hi} recipe (mlx_lm.convert --quant-predicate): "
                                             f"{_lo}-bit, v_proj/down_proj of half the layers and lm_head {_hi}-bit",
                                             high=_hi)
# gpt-oss as mlx-community ships it ("-MXFP4-Q8"): routed experts MXFP4 (MLX mode mxfp4: E8M0 scale per 32),
# everything else 8-bit affine
_g = _mlx("mlx-mxfp4-q8", 8, "MLX gpt-oss style: routed experts MXFP4, everything else 8-bit affine g64")
SCHEMES["mlx-mxfp4-q8"] = Scheme(_g.name, {**_g.mixes, "routed_experts": ((1.0, "mxfp4"),)}, _g.description, mlx=True)

WEIGHT_QUANTS = ("native", *SCHEMES)
MLX_QUANTS = tuple(n for n, s in SCHEMES.items() if s.mlx)


def native_scheme(storage: dict[str, str]) -> Scheme:
    """Scheme for how an official checkpoint is stored (a card's `storage` field)."""
    default = storage.get("default", "bf16")
    mtp = storage.get("mtp")
    over = {k: v for k, v in storage.items() if k not in ("default", "mtp")}
    for k in over:
        if k not in TENSOR_CLASSES:
            raise InputError(f"storage class '{k}' is not a tensor class ({', '.join(TENSOR_CLASSES)})")
    over.setdefault("norms", "bf16")
    over.setdefault("lookup", "int64")
    for v in [default, *over.values()] + ([mtp] if mtp else []):
        get_format(v)
    s = _scheme("native", "as stored in the official checkpoint", default, False, **over)
    return Scheme(s.name, s.mixes, s.description, s.gguf, mtp_format=mtp)


def get_scheme(name: str, storage: dict[str, str] | None = None) -> Scheme:
    key = name.strip().lower().replace("-", "_") if name.strip().lower() not in SCHEMES else name.strip().lower()
    if name.strip().lower() == "native":
        return native_scheme(storage or {"default": "bf16"})
    for cand in (name.strip().lower(), key):
        if cand in SCHEMES:
            return SCHEMES[cand]
    import difflib
    close = difflib.get_close_matches(name.lower(), list(WEIGHT_QUANTS), n=3)
    hint = f" (did you mean: {', '.join(close)}?)" if close else ""
    raise InputError(f"unknown quantization '{name}'{hint}; known: {', '.join(WEIGHT_QUANTS)}")


FFN_CLASSES = ("routed_experts", "shared_experts", "dense_ffn")


def quality_bits(spec: ModelSpec, scheme: Scheme, native: Scheme) -> tuple[float, float]:
    """Effective (FFN/expert bits, attention bits): the lowest width any FFN/expert tensor is stored at, never
    above the official checkpoint's (re-quantizing to a wider format adds no information)."""
    present = spec.params_by_class()
    ffn = min(min(scheme.min_bits(c), native.min_bits(c)) for c in FFN_CLASSES if present.get(c))
    attn = min(scheme.min_bits("attention"), native.min_bits("attention"))
    return ffn, attn


def mean_active_bits(spec: ModelSpec, scheme: Scheme, native: Scheme) -> float:
    """Effective bits averaged over the linear parameters one token touches (a finer quality tie-break)."""
    num = den = 0.0
    for layer in spec.main_layers:
        for c, n in layer.params.items():
            if c not in LINEAR_CLASSES:
                continue
            act = layer.experts_per_token * layer.expert_params if c == "routed_experts" else n
            num += act * min(scheme.bits(c), native.bits(c))
            den += act
    return num / den if den else 0.0
