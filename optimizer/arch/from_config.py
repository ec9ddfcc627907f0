"""Build a ModelSpec from a Hugging Face config.json (as a dict).

Parameter shapes follow the reference implementations named per family below. Each builder raises
ModelFormatError naming the missing field, so an unsupported or truncated config gives one clear line.
"""

from __future__ import annotations

from typing import Any

from optimizer.arch.spec import KVStream, LayerSpec, ModelSpec
from optimizer.errors import ModelFormatError
from optimizer.limits import (MAX_DIM, MAX_EXPERTS, MAX_LAYERS, MAX_NAME_CHARS, MAX_NESTING, MAX_PARAMS, MAX_POSITIONS,
                              MAX_VOCAB, clip_for_message, nesting_depth)

# Every integer field a builder below reads: (smallest, largest) accepted. None / absent = not set.
_LAYERS = ("num_hidden_layers", "num_nextn_predict_layers", "num_mtp_modules", "first_k_dense_replace",
           "num_hash_layers", "max_window_layers")
_EXPERTS = ("n_routed_experts", "num_local_experts", "num_experts", "num_experts_per_tok", "experts_per_token",
            "top_k_experts", "n_shared_experts")
_DIMS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
         "moe_intermediate_size", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
         "v_head_dim", "index_n_heads", "index_head_dim", "index_topk", "o_groups", "o_lora_rank", "hc_mult",
         "shared_expert_intermediate_size", "shared_intermediate_size", "global_head_dim",
         "num_global_key_value_heads", "sliding_window_pattern", "moe_layer_freq", "decoder_sparse_step")
INT_FIELDS: dict[str, tuple[int, int]] = {
    **{k: (0, MAX_LAYERS) for k in _LAYERS}, **{k: (0, MAX_EXPERTS) for k in _EXPERTS},
    **{k: (0, MAX_DIM) for k in _DIMS},
    "vocab_size": (1, MAX_VOCAB), "max_position_embeddings": (0, MAX_POSITIONS), "sliding_window": (0, MAX_POSITIONS),
}
# Fields that divide or size everything: 0 is as wrong as a string.
POSITIVE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "o_groups")
_INT_LISTS = ("compress_ratios", "mlp_only_layers")


def check_config_values(raw: dict[str, Any], name: str) -> None:
    """Types and ranges of every field the builders read (optimizer.limits), so a wrong-typed, zero, NaN or
    absurd value is one ModelFormatError naming the field instead of a crash or a 10**9-layer model."""
    def bad(key: str, why: str, v: Any) -> ModelFormatError:
        shown = repr(v[:40]) if isinstance(v, str) else v  # quoted, so "8" reads as a string
        return ModelFormatError(f"{name}: config.json field '{key}' {why}, got {clip_for_message(shown, 40)}")

    for key, (lo, hi) in INT_FIELDS.items():
        v = raw.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(key, "must be an integer", v)
        if key in POSITIVE:
            lo = max(lo, 1)
        if not lo <= v <= hi:
            raise bad(key, f"must be within {lo}..{hi}", v)
    for key in _INT_LISTS:
        v = raw.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or len(v) > 2 * MAX_LAYERS:
            raise bad(key, f"must be a list of at most {2 * MAX_LAYERS} integers", v)
        for x in v:
            if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= MAX_DIM:
                raise bad(key, f"must hold integers within 0..{MAX_DIM}", x)
    lt = raw.get("layer_types")
    if lt is not None and (not isinstance(lt, list) or len(lt) > 2 * MAX_LAYERS
                           or not all(isinstance(t, str) and len(t) <= MAX_NAME_CHARS for t in lt)):
        raise bad("layer_types", f"must be a list of at most {2 * MAX_LAYERS} strings", lt)
    arch = raw.get("architectures")
    if arch is not None and (not isinstance(arch, list) or not arch or len(arch) > 64
                             or not all(isinstance(a, str) and 0 < len(a) <= MAX_NAME_CHARS for a in arch)):
        raise bad("architectures", f"must be a non-empty list of names of at most {MAX_NAME_CHARS} characters", arch)
    layers = raw.get("num_hidden_layers") or 0
    extra = max(raw.get("num_nextn_predict_layers") or 0, raw.get("num_mtp_modules") or 0)
    if layers + extra > MAX_LAYERS:
        raise ModelFormatError(f"{name}: config.json has {layers} + {extra} layers, more than {MAX_LAYERS}")


class _Cfg:
    """Typed access to a config dict with clear errors for missing fields."""

    def __init__(self, raw: dict[str, Any], name: str):
        self.raw = raw
        self.name = name

    def req(self, key: str) -> Any:
        if key not in self.raw or self.raw[key] is None:
            raise ModelFormatError(f"{self.name}: config.json has no '{key}' (needed for {self.raw.get('model_type', 'this architecture')})")
        return self.raw[key]

    def int(self, key: str) -> int:
        v = self.req(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ModelFormatError(f"{self.name}: config.json field '{key}' must be a non-negative integer, "
                                   f"got {clip_for_message(v, 40)}")
        return v

    def get(self, key: str, default: Any = None) -> Any:
        v = self.raw.get(key)
        return default if v is None else v


def _p(**kw: int) -> dict[str, int]:
    return {k: int(v) for k, v in kw.items() if v}


# ---------------------------------------------------------------------------------------------
# DeepSeek-V4 (deepseek_v4). Shapes: vLLM deepseek_v4.py / transformers configuration_deepseek_v4.py,
# summarised in shared/reference/models.md §1.3.
# ---------------------------------------------------------------------------------------------
V4_SWA_WINDOW_DEFAULT = 128


def _v4(c: _Cfg) -> ModelSpec:
    d = c.int("hidden_size")
    L = c.int("num_hidden_layers")
    H = c.int("num_attention_heads")
    D = c.int("head_dim")
    q_lora = c.int("q_lora_rank")
    o_groups = c.int("o_groups")
    o_lora = c.int("o_lora_rank")
    idx_heads = c.int("index_n_heads")
    idx_dim = c.int("index_head_dim")
    E = c.int("n_routed_experts")
    k = c.int("num_experts_per_tok")
    inter = c.int("moe_intermediate_size")
    n_shared = c.get("n_shared_experts", 0)
    vocab = c.int("vocab_size")
    window = c.get("sliding_window", V4_SWA_WINDOW_DEFAULT)
    hc = c.get("hc_mult", 1)
    n_hash = c.get("num_hash_layers", 0)
    n_mtp = c.get("num_nextn_predict_layers", 0)
    ratios = list(c.req("compress_ratios"))
    if len(ratios) < L:
        raise ModelFormatError(f"{c.name}: compress_ratios has {len(ratios)} entries, fewer than num_hidden_layers={L}")
    topk = c.int("index_topk")

    expert = 3 * d * inter
    mix_hc = (2 + hc) * hc  # mHC mixing rows per sub-block
    attn = q_lora * d + q_lora + H * D * q_lora + D * d + D + o_groups * o_lora * (H * D // o_groups) + d * o_groups * o_lora
    layers: list[LayerSpec] = []
    for i in range(L + n_mtp):
        is_mtp = i >= L
        ratio = ratios[i] if i < len(ratios) else 0
        comp = idx = 0
        if ratio:
            coff = 2 if ratio == 4 else 1
            comp = 2 * coff * D * d + ratio * coff * D + D  # wkv, wgate, ape, norm
        if ratio == 4:
            # indexer: wq_b, weights_proj, and its own ratio-4 compressor (head_dim idx_dim, coff 2)
            idx = idx_heads * idx_dim * q_lora + idx_heads * d + 2 * 2 * idx_dim * d + 4 * 2 * idx_dim + idx_dim
        norms = 2 * d + H  # attn_norm, ffn_norm, attn_sink
        norms += 2 * (mix_hc * hc * d + mix_hc + 3)  # mHC fn/base/scale for attn and ffn
        lookup = vocab * k if i < n_hash else 0  # tid2eid int table
        extra_attn = 0
        if is_mtp:
            extra_attn = 2 * d * d  # e_proj + h_proj
            norms += 3 * d + hc * hc * d + hc + 1  # enorm, hnorm, norm, hc_head
        params = _p(attention=attn + extra_attn, indexer=idx, compressor=comp,
                    shared_experts=n_shared * expert, routed_experts=E * expert,
                    router=E * d + E, norms=norms, lookup=lookup)
        kv: list[KVStream] = [KVStream("v4_kv", width=D, ratio=1, window=window)]
        if ratio:
            kv.append(KVStream("v4_kv", width=D, ratio=ratio))
            coff = 2 if ratio == 4 else 1
            # fp32 compressor state ring: coff*ratio slots x 2 (kv, gate) x coff*D values (vLLM compressor.py spec)
            kv.append(KVStream("state", fixed_bytes=coff * ratio * 2 * coff * D * 4))
        if ratio == 4:
            kv.append(KVStream("indexer", width=idx_dim, ratio=4))
            kv.append(KVStream("state", fixed_bytes=2 * 4 * 2 * 2 * idx_dim * 4))
        kind = {0: "v4-swa", 4: "v4-csa", 128: "v4-hca"}.get(ratio, f"v4-c{ratio}")
        layers.append(LayerSpec(index=i, params=params, kv=tuple(kv), n_routed_experts=E, experts_per_token=k,
                                expert_params=expert, is_mtp=is_mtp, attn_kind=kind,
                                attn_flops_per_ctx=2 * H * (D + D), attended_topk=topk if ratio == 4 else None,
                                indexer_flops_per_ctx=2 * idx_heads * idx_dim if ratio == 4 else 0, indexer_ratio=4))
    glob = _p(embed=vocab * d, head=vocab * d, norms=d + hc * hc * d + hc + 1)
    return ModelSpec(name=c.name, architecture=c.get("architectures", ["DeepseekV4ForCausalLM"])[0], family="deepseek_v4",
                     hidden_size=d, vocab_size=vocab, max_context=c.int("max_position_embeddings"), layers=tuple(layers),
                     global_params=glob, num_attention_heads=H, index_topk=topk)


# ---------------------------------------------------------------------------------------------
# DeepSeek-V3 / R1 / Kimi-K2 (MLA) and V3.2 (MLA + DSA indexer).
# Shapes: deepseek-ai/DeepSeek-V3 inference/model.py; V3.2-Exp inference/model.py.
# ---------------------------------------------------------------------------------------------
def _mla(c: _Cfg, dsa: bool) -> ModelSpec:
    d = c.int("hidden_size")
    L = c.int("num_hidden_layers")
    H = c.int("num_attention_heads")
    q_lora = c.get("q_lora_rank") or 0
    kv_lora = c.int("kv_lora_rank")
    nope = c.int("qk_nope_head_dim")
    rope = c.int("qk_rope_head_dim")
    v_dim = c.int("v_head_dim")
    vocab = c.int("vocab_size")
    inter = c.int("intermediate_size")
    E = c.get("n_routed_experts", 0) or 0
    k = c.get("num_experts_per_tok", 0) or 0
    moe_inter = c.get("moe_intermediate_size", 0) or 0
    n_shared = c.get("n_shared_experts", 0) or 0
    first_dense = c.get("first_k_dense_replace", 0)
    freq = c.get("moe_layer_freq", 1) or 1
    n_mtp = c.get("num_nextn_predict_layers", 0)
    qk = nope + rope
    if q_lora:
        q = q_lora * d + q_lora + H * qk * q_lora
    else:
        q = H * qk * d
    attn = q + (kv_lora + rope) * d + kv_lora + H * (nope + v_dim) * kv_lora + d * H * v_dim
    idx = 0
    topk = None
    if dsa:
        ih, idim = c.int("index_n_heads"), c.int("index_head_dim")
        topk = c.int("index_topk")
        idx = ih * idim * (q_lora or d) + idim * d + 2 * idim + ih * d  # wq_b, wk, k_norm(w,b), weights_proj
    expert = 3 * d * moe_inter
    layers = []
    for i in range(L + n_mtp):
        is_mtp = i >= L
        moe = E > 0 and i >= first_dense and (i - first_dense) % freq == 0
        extra = 2 * d * d if is_mtp else 0  # eh_proj [d, 2d]
        norms = 2 * d + (3 * d if is_mtp else 0)
        params = _p(attention=attn + extra, indexer=idx, norms=norms,
                    dense_ffn=0 if moe else 3 * d * inter,
                    shared_experts=n_shared * expert if moe else 0,
                    routed_experts=E * expert if moe else 0,
                    router=(E * d + E) if moe else 0)
        kv = [KVStream("dsa_kv" if dsa else "mla", width=kv_lora + rope)]
        if dsa:
            kv.append(KVStream("indexer", width=c.int("index_head_dim")))
        layers.append(LayerSpec(index=i, params=params, kv=tuple(kv), n_routed_experts=E if moe else 0,
                                experts_per_token=k if moe else 0, expert_params=expert if moe else 0,
                                is_mtp=is_mtp, attn_kind="dsa" if dsa else "mla",
                                # absorbed MLA decode: scores over kv_lora+rope and values over kv_lora, per head
                                attn_flops_per_ctx=2 * H * (kv_lora + rope + kv_lora), attended_topk=topk,
                                indexer_flops_per_ctx=2 * c.int("index_n_heads") * c.int("index_head_dim") if dsa else 0))
    glob = _p(embed=vocab * d, head=0 if c.get("tie_word_embeddings", False) else vocab * d, norms=d)
    return ModelSpec(name=c.name, architecture=c.get("architectures", ["DeepseekV3ForCausalLM"])[0],
                     family="deepseek_v32" if dsa else "deepseek_v3", hidden_size=d, vocab_size=vocab,
                     max_context=c.int("max_position_embeddings"), layers=tuple(layers), global_params=glob,
                     num_attention_heads=H, index_topk=topk)


# ---------------------------------------------------------------------------------------------
# GQA/MHA decoder families: llama, qwen2, qwen3, qwen3_moe, mistral, minimax_m2, gpt_oss, gemma3/4.
# ---------------------------------------------------------------------------------------------
def _layer_types(c: _Cfg, L: int) -> list[str]:
    lt = c.get("layer_types")
    if lt:
        if len(lt) < L:
            raise ModelFormatError(f"{c.name}: layer_types has {len(lt)} entries, fewer than num_hidden_layers={L}")
        return ["sliding" if "sliding" in t else "full" for t in lt[:L]]
    pattern = c.get("sliding_window_pattern")
    if pattern and c.get("sliding_window"):
        return ["full" if (i + 1) % pattern == 0 else "sliding" for i in range(L)]
    if c.get("use_sliding_window") and c.get("sliding_window"):
        mw = c.get("max_window_layers", L)
        return ["sliding" if i >= mw else "full" for i in range(L)]
    return ["full"] * L


def _gqa(c: _Cfg, family: str) -> ModelSpec:
    d = c.int("hidden_size")
    L = c.int("num_hidden_layers")
    H = c.int("num_attention_heads")
    kvh = c.get("num_key_value_heads", H)
    hd = c.get("head_dim") or d // H
    vocab = c.int("vocab_size")
    mt = c.get("model_type", "")
    inter = c.get("intermediate_size", 0) or 0
    E = c.get("num_local_experts") or c.get("num_experts") or c.get("n_routed_experts") or 0
    k = c.get("num_experts_per_tok") or c.get("experts_per_token") or c.get("top_k_experts") or 0
    moe_inter = c.get("moe_intermediate_size") or (inter if E else 0)
    if mt == "minimax_m2":
        moe_inter = inter
    shared_inter = c.get("shared_expert_intermediate_size") or c.get("shared_intermediate_size") or 0
    bias = bool(c.get("attention_bias", False)) or mt == "qwen2"
    qk_norm = mt in ("qwen3", "qwen3_moe", "minimax_m2", "gemma3_text", "gemma3", "gemma4_text", "gemma4")
    window = c.get("sliding_window")
    types = _layer_types(c, L)
    mlp_only = set(c.get("mlp_only_layers", []) or [])
    sparse_step = c.get("decoder_sparse_step", 1) or 1
    gemma4 = mt.startswith("gemma4")
    g_hd = c.get("global_head_dim") or hd
    g_kvh = c.get("num_global_key_value_heads") or kvh
    k_eq_v = bool(c.get("attention_k_eq_v", False))
    n_mtp = c.get("num_mtp_modules", 0) if c.get("use_mtp") else 0
    gpt_oss = mt == "gpt_oss"
    expert = (3 * d * moe_inter + (2 * moe_inter + d if gpt_oss else 0)) if E else 0
    layers = []
    for i in range(L + n_mtp):
        is_mtp = i >= L
        t = types[i] if i < L else "full"
        lhd, lkvh = (g_hd, g_kvh) if (gemma4 and t == "full") else (hd, kvh)
        v_heads = 0 if (gemma4 and t == "full" and k_eq_v) else lkvh
        attn = d * H * lhd + d * lkvh * lhd + d * v_heads * lhd + H * lhd * d
        if bias:
            attn += H * lhd + lkvh * lhd + v_heads * lhd + (d if gpt_oss else 0)
        norms = 2 * d + (2 * lhd if qk_norm else 0) + (H if gpt_oss else 0)
        if mt.startswith("gemma"):
            norms += 2 * d  # pre/post feed-forward norms
        moe = E > 0 and i not in mlp_only and (i + 1) % sparse_step == 0
        dense = 0
        if not moe or gemma4:
            dense = 3 * d * inter
        params = _p(attention=attn, norms=norms, dense_ffn=dense,
                    routed_experts=E * expert if moe else 0,
                    shared_experts=3 * d * shared_inter if (moe and shared_inter) else 0,
                    router=(E * d + (E if (gpt_oss or mt == "minimax_m2") else 0)) if moe else 0)
        width = lkvh * lhd + v_heads * lhd
        kv = (KVStream("kv", width=width, window=window if t == "sliding" else None, kv_heads=lkvh),)
        layers.append(LayerSpec(index=i, params=params, kv=kv, n_routed_experts=E if moe else 0,
                                experts_per_token=k if moe else 0, expert_params=expert if moe else 0,
                                is_mtp=is_mtp, attn_kind="swa" if t == "sliding" else "full",
                                attn_flops_per_ctx=2 * H * 2 * lhd))
    tied = c.get("tie_word_embeddings", False)
    glob = _p(embed=vocab * d, head=0 if tied else vocab * d, norms=d)
    return ModelSpec(name=c.name, architecture=(c.get("architectures") or [mt])[0], family=family, hidden_size=d,
                     vocab_size=vocab, max_context=c.get("max_position_embeddings", 0), layers=tuple(layers),
                     global_params=glob, num_attention_heads=H)


def _vision_params(vc: dict[str, Any]) -> int:
    """Rough parameter count of a ViT tower (SigLIP-style): per layer 4h^2 + 2hI, plus patch embedding."""
    try:
        h, inter, n = int(vc["hidden_size"]), int(vc["intermediate_size"]), int(vc["num_hidden_layers"])
        patch = int(vc.get("patch_size", 14))
    except (KeyError, TypeError, ValueError, OverflowError):
        return 0
    if not (0 <= h <= MAX_DIM and 0 <= inter <= MAX_DIM and 0 <= n <= MAX_LAYERS and 0 <= patch <= 1024):
        raise ModelFormatError("vision_config: hidden_size / intermediate_size / num_hidden_layers / patch_size "
                               "out of range")
    return n * (4 * h * h + 2 * h * inter + 9 * h) + 3 * patch * patch * h


_GQA_TYPES = {"llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "minimax_m2", "gpt_oss",
              "gemma3_text", "gemma4_text", "gemma2", "gemma", "mixtral", "phi3", "granite"}

SUPPORTED_MODEL_TYPES = sorted(_GQA_TYPES | {"deepseek_v4", "deepseek_v3", "kimi_k2", "deepseek_v32", "deepseek_v2",
                                             "gemma3", "gemma4"})


# Defaults that transformers' config classes fill in when config.json omits them (the HF gemma-3 files
# rely on these). Source: transformers Gemma3TextConfig.__init__ defaults (vocab_size=262_208,
# max_position_embeddings=131_072, sliding_window_pattern=6, tie_word_embeddings=True).
MODEL_TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {"vocab_size": 262208, "max_position_embeddings": 131072, "sliding_window_pattern": 6,
                    "tie_word_embeddings": True},
}


def _model_type(raw: dict[str, Any], name: str) -> Any:
    mt = raw.get("model_type")
    if mt is not None and (not isinstance(mt, str) or len(mt) > MAX_NAME_CHARS):
        raise ModelFormatError(f"{name}: config.json field 'model_type' must be a name of at most "
                               f"{MAX_NAME_CHARS} characters, got {clip_for_message(mt, 40)}")
    return mt


def spec_from_config(raw: dict[str, Any], name: str = "model", source: str = "") -> ModelSpec:
    if not isinstance(raw, dict):
        raise ModelFormatError(f"{name}: config.json must be a JSON object")
    if nesting_depth(raw) > MAX_NESTING:
        raise ModelFormatError(f"{name}: config.json is nested deeper than {MAX_NESTING} levels")
    mt = _model_type(raw, name)
    if not mt:
        raise ModelFormatError(f"{name}: config.json has no 'model_type'; cannot tell the architecture")
    vision = 0
    if mt in ("gemma3", "gemma4") or ("text_config" in raw and mt not in _GQA_TYPES):
        tc = raw.get("text_config")
        if tc is not None and not isinstance(tc, dict):
            raise ModelFormatError(f"{name}: config.json field 'text_config' must be an object, "
                                   f"got {type(tc).__name__}")
        text = dict(tc or {})
        if not text:
            raise ModelFormatError(f"{name}: multimodal config '{mt}' has no 'text_config'")
        text.setdefault("model_type", mt + "_text")
        if "architectures" in raw and "architectures" not in text:
            check_config_values({"architectures": raw["architectures"]}, name)
        text.setdefault("tie_word_embeddings", raw.get("tie_word_embeddings", True))
        if isinstance(raw.get("vision_config"), dict):
            vision = _vision_params(raw["vision_config"])
        raw, mt = text, _model_type(text, name)
        if not isinstance(mt, str):
            raise ModelFormatError(f"{name}: text_config has no valid 'model_type'")
    for k, v in MODEL_TYPE_DEFAULTS.get(mt, {}).items():
        if raw.get(k) is None:
            raw = {**raw, k: v}
    if mt not in _GQA_TYPES and mt not in SUPPORTED_MODEL_TYPES:
        raise ModelFormatError(
            f"{name}: unsupported model_type '{clip_for_message(mt, 60)}' (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    check_config_values(raw, name)
    c = _Cfg(raw, name)
    if mt == "deepseek_v4":
        spec = _v4(c)
    elif mt in ("deepseek_v3", "kimi_k2", "deepseek_v2"):
        spec = _mla(c, dsa=False)
    elif mt == "deepseek_v32":
        spec = _mla(c, dsa=True)
    elif mt in _GQA_TYPES:
        spec = _gqa(c, "gpt_oss" if mt == "gpt_oss" else ("gemma" if mt.startswith("gemma") else "gqa"))
    else:
        raise ModelFormatError(
            f"{name}: unsupported model_type '{mt}' (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    if vision:
        g = dict(spec.global_params)
        g["vision"] = vision
        spec = ModelSpec(**{**spec.__dict__, "global_params": g})
    if source:
        spec = ModelSpec(**{**spec.__dict__, "source": source})
    total = spec.total_params(include_mtp=True, include_vision=True)
    if total > MAX_PARAMS:
        raise ModelFormatError(f"{name}: config.json describes {total:.3g} parameters, more than {MAX_PARAMS:.0e}")
    return spec
