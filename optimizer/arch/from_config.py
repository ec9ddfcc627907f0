"""Build a ModelSpec from a Hugging Face config.json (as a dict).

Parameter shapes follow the reference implementations named per family below. Each builder raises
ModelFormatError naming the missing field, so an unsupported or truncated config gives one clear line.
"""

from __future__ import annotations

from typing import Any

from optimizer.arch.spec import KVStream, LayerSpec, ModelSpec, RecurrentState
from optimizer.errors import ModelFormatError
from optimizer.limits import (
    MAX_DIM,
    MAX_EXPERTS,
    MAX_LAYERS,
    MAX_NAME_CHARS,
    MAX_NESTING,
    MAX_PARAMS,
    MAX_POSITIONS,
    MAX_VOCAB,
    clip_for_message,
    nesting_depth,
)

# Every integer field a builder below reads: (smallest, largest) accepted. None / absent = not set.
_LAYERS = ("num_hidden_layers", "num_nextn_predict_layers", "num_mtp_modules", "first_k_dense_replace",
           "num_hash_layers", "max_window_layers", "mtp_num_hidden_layers", "full_attention_interval")
_EXPERTS = ("n_routed_experts", "num_local_experts", "num_experts", "num_experts_per_tok", "experts_per_token",
            "top_k_experts", "n_shared_experts")
_DIMS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
         "moe_intermediate_size", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
         "v_head_dim", "index_n_heads", "index_head_dim", "index_topk", "o_groups", "o_lora_rank", "hc_mult",
         "shared_expert_intermediate_size", "shared_intermediate_size", "global_head_dim",
         "num_global_key_value_heads", "sliding_window_pattern", "moe_layer_freq", "decoder_sparse_step",
         # hybrid recurrent layers (Gated DeltaNet, Mamba2)
         "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
         "linear_conv_kernel_dim", "mamba_num_heads", "mamba_head_dim", "n_groups", "ssm_state_size", "conv_kernel",
         "mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_d_state", "mamba_d_conv", "mamba_expand",
         "chunk_size", "mamba_chunk_size", "moe_latent_size", "moe_shared_expert_intermediate_size",
         "attention_head_dim", "num_shared_experts", "num_experts_per_token")
INT_FIELDS: dict[str, tuple[int, int]] = {
    **{k: (0, MAX_LAYERS) for k in _LAYERS}, **{k: (0, MAX_EXPERTS) for k in _EXPERTS},
    **{k: (0, MAX_DIM) for k in _DIMS},
    "vocab_size": (1, MAX_VOCAB), "max_position_embeddings": (0, MAX_POSITIONS), "sliding_window": (0, MAX_POSITIONS),
}
# Fields that divide or size everything: 0 is as wrong as a string.
POSITIVE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "o_groups",
            "linear_conv_kernel_dim", "conv_kernel", "mamba_d_conv", "full_attention_interval", "chunk_size",
            "mamba_chunk_size")
_INT_LISTS = ("compress_ratios", "mlp_only_layers")


def _check_names(raw: dict[str, Any], key: str, bad: Any) -> None:
    lt = raw.get(key)
    if lt is not None and (not isinstance(lt, list) or len(lt) > 2 * MAX_LAYERS
                           or not all(isinstance(t, str) and len(t) <= MAX_NAME_CHARS for t in lt)):
        raise bad(key, f"must be a list of at most {2 * MAX_LAYERS} strings", lt)


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
    for key in ("layer_types", "layers_block_type"):
        _check_names(raw, key, bad)
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
# DeepSeek-V4 (deepseek_v4). Shapes: vLLM vllm/model_executor/models/deepseek_v4.py (at 023da1fc828e) /
# transformers src/transformers/models/deepseek_v4/configuration_deepseek_v4.py (at 015c07816415).
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
    # llama.cpp's reference graph (src/models/deepseek4.cpp build_hc_sinkhorn): each of a layer's two
    # hyper-connection blocks (attention, FFN) normalises its mixing matrix with 3 nodes (sum_rows, add, div) per
    # row pass and 4 (cont, sum_rows, add, div) per column pass, hc_sinkhorn_iters - 1 of each after the first
    # column pass: 2 x 7 x iters small nodes per layer (280 for V4's 20 iterations; hc_mult 1: none)
    sinkhorn_nodes = 2 * 7 * int(c.get("hc_sinkhorn_iters", 0)) if hc > 1 else 0
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
                                indexer_flops_per_ctx=2 * idx_heads * idx_dim if ratio == 4 else 0, indexer_ratio=4,
                                extra_kernels=sinkhorn_nodes))
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


# ---------------------------------------------------------------------------------------------
# Hybrid recurrent + attention families. Parameter shapes from the Hugging Face reference implementations:
# transformers models/qwen3_next/modeling_qwen3_next.py (Qwen3NextGatedDeltaNet, gated Qwen3NextAttention; the
# Qwen3.5 modules split in_proj_qkvz into in_proj_qkv + in_proj_z and in_proj_ba into in_proj_a + in_proj_b, same
# sizes), models/nemotron_h/modeling_nemotron_h.py (NemotronHMamba2Mixer, one mixer per block),
# models/granitemoehybrid/modeling_granitemoehybrid.py (mixer + shared MLP + MoE per layer), and Kimi-Linear's
# modeling_kimi.py (KimiDeltaAttention + MLA). State shapes: vLLM 0.33.0
# vllm/model_executor/layers/mamba/mamba_utils.py MambaStateShapeCalculator.
# ---------------------------------------------------------------------------------------------
def _gdn_state(c: _Cfg) -> RecurrentState:
    return RecurrentState(kind="gdn", conv_kernel=c.int("linear_conv_kernel_dim"), heads=c.int("linear_num_value_heads"),
                          head_dim=c.int("linear_value_head_dim"), state_dim=c.int("linear_key_head_dim"),
                          groups=c.int("linear_num_key_heads"), group_dim=c.int("linear_key_head_dim"), chunk=64)


def _gdn_params(d: int, st: RecurrentState) -> tuple[int, int]:
    """(projection params, small fp params) of one Gated DeltaNet mixer."""
    key_dim, value_dim = st.groups * st.group_dim, st.heads * st.head_dim
    proj = d * (2 * key_dim + 2 * value_dim) + d * 2 * st.heads + value_dim * d  # in_proj_qkvz, in_proj_ba, out_proj
    small = st.conv_channels() * st.conv_kernel + 2 * st.heads + st.head_dim  # conv1d (no bias), dt_bias, A_log, norm
    return proj, small


def _mamba2_params(d: int, st: RecurrentState, conv_bias: bool, proj_bias: bool) -> tuple[int, int]:
    """(projection params, small fp params) of one Mamba2 mixer (in_proj -> [z, xBC, dt], conv1d, gated norm)."""
    inner = st.heads * st.head_dim
    conv = st.conv_channels()
    in_out = inner + conv + st.heads
    proj = d * in_out + inner * d + ((in_out + d) if proj_bias else 0)
    small = conv * st.conv_kernel + (conv if conv_bias else 0) + 3 * st.heads + inner  # conv, dt_bias, A_log, D, norm
    return proj, small


def _gated_attention(d: int, H: int, kvh: int, hd: int, gate: bool) -> int:
    return d * H * hd * (2 if gate else 1) + 2 * d * kvh * hd + H * hd * d


def _gqa_dims(c: _Cfg) -> tuple[int, int, int, int, int, int]:
    """(hidden size, layers, attention heads, KV heads, head dim, vocabulary) of a GQA-attention config."""
    d, H = c.int("hidden_size"), c.int("num_attention_heads")
    return (d, c.int("num_hidden_layers"), H, c.int("num_key_value_heads"), c.get("head_dim") or d // H,
            c.int("vocab_size"))


def _qwen_hybrid(c: _Cfg, mt: str) -> ModelSpec:
    """Qwen3.5 / Qwen3.6 (qwen3_5_text, qwen3_5_moe_text) and Qwen3-Next (qwen3_next): Gated DeltaNet layers with a
    gated full-attention layer every `full_attention_interval`, dense MLP or MoE with a gated shared expert."""
    d, L, H, kvh, hd, vocab = _gqa_dims(c)
    st = _gdn_state(c)
    types = _hybrid_types(c, L)
    E = c.get("num_experts", 0) or 0
    k = c.get("num_experts_per_tok", 0) or 0
    moe_inter = c.get("moe_intermediate_size", 0) or 0
    shared_inter = c.get("shared_expert_intermediate_size", 0) or 0
    inter = c.get("intermediate_size", 0) or 0
    mlp_only = set(c.get("mlp_only_layers", []) or [])
    step = c.get("decoder_sparse_step", 1) or 1
    gate = bool(c.get("attn_output_gate", True))
    n_mtp = c.get("mtp_num_hidden_layers", 0) or c.get("num_nextn_predict_layers", 0) or 0
    gdn_proj, gdn_small = _gdn_params(d, st)
    attn = _gated_attention(d, H, kvh, hd, gate)
    expert = 3 * d * moe_inter
    layers: list[LayerSpec] = []
    for i in range(L + n_mtp):
        is_mtp = i >= L
        t = types[i] if i < L else "attention"
        moe = E > 0 and i not in mlp_only and (i + 1) % step == 0 or (is_mtp and E > 0)
        norms = 2 * d
        if t == "attention":
            kv: tuple[KVStream, ...]
            a, kv = attn, (KVStream("kv", width=2 * kvh * hd, kv_heads=kvh),)
            norms += 2 * hd  # q_norm, k_norm
        else:
            a, kv = gdn_proj, ()
            norms += gdn_small
        if is_mtp:
            a += 2 * d * d  # fc: [embedding; hidden] -> hidden
            norms += 3 * d  # pre_fc_norm_embedding, pre_fc_norm_hidden, final norm
        params = _p(attention=a, norms=norms, dense_ffn=0 if moe else 3 * d * inter,
                    routed_experts=E * expert if moe else 0,
                    shared_experts=(3 * d * shared_inter + d) if (moe and shared_inter) else 0,  # + shared_expert_gate
                    router=E * d if moe else 0)
        layers.append(LayerSpec(index=i, params=params, kv=kv, n_routed_experts=E if moe else 0,
                                experts_per_token=k if moe else 0, expert_params=expert if moe else 0, is_mtp=is_mtp,
                                attn_kind="full" if t == "attention" else "gdn",
                                attn_flops_per_ctx=2 * H * 2 * hd if t == "attention" else 0,
                                recurrent=None if t == "attention" else st))
    tied = c.get("tie_word_embeddings", False)
    glob = _p(embed=vocab * d, head=0 if tied else vocab * d, norms=d)
    return ModelSpec(name=c.name, architecture=(c.get("architectures") or [mt])[0], family="qwen3_hybrid",
                     hidden_size=d, vocab_size=vocab, max_context=c.get("max_position_embeddings", 0),
                     layers=tuple(layers), global_params=glob, num_attention_heads=H, model_type=mt,
                     config_ssm_dtype=str(c.get("mamba_ssm_dtype", "")), model_dtype=_dtype(c))


def _dtype(c: _Cfg) -> str:
    v = c.get("torch_dtype") or c.get("dtype") or "bfloat16"
    return v if isinstance(v, str) and len(v) <= 16 else "bfloat16"


def _hybrid_types(c: _Cfg, L: int) -> list[str]:
    """Per layer 'attention' or 'recurrent' from `layer_types` / `layers_block_type` (linear_attention | mamba |
    full_attention | attention) or, without a list, `full_attention_interval` (every n-th layer is attention)."""
    lt = c.get("layer_types") or c.get("layers_block_type")
    if lt:
        if not isinstance(lt, list) or len(lt) < L or not all(isinstance(t, str) for t in lt):
            raise ModelFormatError(f"{c.name}: layer_types must list at least num_hidden_layers={L} names")
        out = []
        for t in lt[:L]:
            if t in ("full_attention", "attention", "sliding_attention"):
                out.append("attention")
            elif t in ("linear_attention", "mamba", "mamba2"):
                out.append("recurrent")
            else:
                raise ModelFormatError(f"{c.name}: unknown layer type '{clip_for_message(t, 40)}' in layer_types")
        return out
    n = c.get("full_attention_interval")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_LAYERS:
        raise ModelFormatError(f"{c.name}: config.json has neither layer_types nor a valid full_attention_interval")
    return ["attention" if (i + 1) % n == 0 else "recurrent" for i in range(L)]


def _mamba2_state(c: _Cfg, heads: str, head_dim: str, groups: str, d_state: str, conv: str) -> RecurrentState:
    return RecurrentState(kind="mamba2", conv_kernel=c.int(conv), heads=c.int(heads), head_dim=c.int(head_dim),
                          state_dim=c.int(d_state), groups=c.int(groups), group_dim=c.int(d_state),
                          chunk=c.get("chunk_size") or c.get("mamba_chunk_size") or 256)


def _nemotron_h(c: _Cfg) -> ModelSpec:
    """Nemotron-H / Nemotron 3 (nemotron_h): `hybrid_override_pattern` has one character per block, each block one
    norm + one mixer: M = Mamba2, * = attention, - = dense MLP (relu2, up + down), E = MoE (optionally latent: routed
    experts work in `moe_latent_size` between fc1/fc2 latent projections). MTP blocks follow
    `mtp_hybrid_override_pattern` (Nemotron-3-Super: '*E')."""
    d = c.int("hidden_size")
    L = c.int("num_hidden_layers")
    pat = c.req("hybrid_override_pattern")
    if not isinstance(pat, str) or len(pat) < L or set(pat) - set("M*-E"):
        raise ModelFormatError(f"{c.name}: hybrid_override_pattern must have num_hidden_layers={L} characters of M*-E")
    n_mtp = c.get("num_nextn_predict_layers", 0) or 0
    mtp_pat = c.get("mtp_hybrid_override_pattern", "*E") if n_mtp else ""
    if not isinstance(mtp_pat, str) or set(mtp_pat) - set("M*-E") or len(mtp_pat) > 16:
        raise ModelFormatError(f"{c.name}: mtp_hybrid_override_pattern must be a short string of M*-E")
    H = c.int("num_attention_heads")
    kvh = c.int("num_key_value_heads")
    hd = c.get("head_dim") or c.get("attention_head_dim") or d // H
    vocab = c.int("vocab_size")
    st = _mamba2_state(c, "mamba_num_heads", "mamba_head_dim", "n_groups", "ssm_state_size", "conv_kernel")
    m_proj, m_small = _mamba2_params(d, st, bool(c.get("use_conv_bias", True)), bool(c.get("use_bias", False)))
    E = c.get("n_routed_experts", 0) or 0
    k = c.get("num_experts_per_tok", 0) or 0
    moe_inter = c.get("moe_intermediate_size", 0) or 0
    latent = c.get("moe_latent_size") or 0
    de = latent or d
    expert = 2 * de * moe_inter
    shared = 2 * d * (c.get("moe_shared_expert_intermediate_size", 0) or 0) * (c.get("n_shared_experts", 1) or 1)
    mlp = 2 * d * (c.get("intermediate_size", 0) or 0)
    chars = list(pat[:L]) + list(mtp_pat) * n_mtp
    layers: list[LayerSpec] = []
    for i, ch in enumerate(chars):
        is_mtp = i >= L
        extra = 0
        norms = d
        if is_mtp and (i - L) % max(1, len(mtp_pat)) == 0:
            extra, norms = 2 * d * d, norms + 3 * d  # eh_proj, enorm, hnorm, final norm of the MTP module
        kw: dict[str, object] = {}
        if ch == "M":
            params = _p(attention=m_proj + extra, norms=norms + m_small)
            kw = {"attn_kind": "mamba2", "recurrent": st}
        elif ch == "*":
            params = _p(attention=_gated_attention(d, H, kvh, hd, False) + extra, norms=norms)
            kw = {"attn_kind": "full", "kv": (KVStream("kv", width=2 * kvh * hd, kv_heads=kvh),),
                  "attn_flops_per_ctx": 2 * H * 2 * hd}
        elif ch == "-":
            params = _p(dense_ffn=mlp, attention=extra, norms=norms)
            kw = {"attn_kind": "none"}
        else:
            params = _p(routed_experts=E * expert, shared_experts=shared, dense_ffn=2 * d * latent if latent else 0,
                        router=E * d + E, attention=extra, norms=norms)  # gate + e_score_correction_bias
            kw = {"attn_kind": "none", "n_routed_experts": E, "experts_per_token": k, "expert_params": expert}
        layers.append(LayerSpec(index=i, params=params, is_mtp=is_mtp, **kw))  # type: ignore[arg-type]
    tied = c.get("tie_word_embeddings", False)
    glob = _p(embed=vocab * d, head=0 if tied else vocab * d, norms=d)
    return ModelSpec(name=c.name, architecture=(c.get("architectures") or ["NemotronHForCausalLM"])[0],
                     family="nemotron_h", hidden_size=d, vocab_size=vocab, max_context=c.get("max_position_embeddings", 0),
                     layers=tuple(layers), global_params=glob, num_attention_heads=H, model_type="nemotron_h",
                     config_ssm_dtype=str(c.get("mamba_ssm_cache_dtype", "")), model_dtype=_dtype(c))


def _granite_hybrid(c: _Cfg) -> ModelSpec:
    """Granite 4.0-H (granitemoehybrid): every layer = Mamba2 or attention mixer + shared MLP (+ MoE when
    num_local_experts > 0); `layer_types` / `layers_block_type` list mamba | attention."""
    d, L, H, kvh, hd, vocab = _gqa_dims(c)
    types = _hybrid_types(c, L)
    st = _mamba2_state(c, "mamba_n_heads", "mamba_d_head", "mamba_n_groups", "mamba_d_state", "mamba_d_conv")
    m_proj, m_small = _mamba2_params(d, st, bool(c.get("mamba_conv_bias", True)), bool(c.get("mamba_proj_bias", False)))
    E = c.get("num_local_experts", 0) or 0
    k = c.get("num_experts_per_tok", 0) or 0
    inter = c.get("intermediate_size", 0) or 0
    shared = 3 * d * (c.get("shared_intermediate_size", 0) or 0)
    expert = 3 * d * inter
    layers: list[LayerSpec] = []
    for i, t in enumerate(types):
        attn = t == "attention"
        params = _p(attention=_gated_attention(d, H, kvh, hd, False) if attn else m_proj,
                    norms=2 * d + (0 if attn else m_small), shared_experts=shared if E else 0,
                    dense_ffn=0 if E else shared, routed_experts=E * expert, router=E * d)
        layers.append(LayerSpec(index=i, params=params, n_routed_experts=E, experts_per_token=k if E else 0,
                                expert_params=expert if E else 0, attn_kind="full" if attn else "mamba2",
                                kv=(KVStream("kv", width=2 * kvh * hd, kv_heads=kvh),) if attn else (),
                                attn_flops_per_ctx=2 * H * 2 * hd if attn else 0, recurrent=None if attn else st))
    tied = c.get("tie_word_embeddings", True)
    glob = _p(embed=vocab * d, head=0 if tied else vocab * d, norms=d)
    return ModelSpec(name=c.name, architecture=(c.get("architectures") or ["GraniteMoeHybridForCausalLM"])[0],
                     family="granite_hybrid", hidden_size=d, vocab_size=vocab,
                     max_context=c.get("max_position_embeddings", 0), layers=tuple(layers), global_params=glob,
                     num_attention_heads=H, model_type="granitemoehybrid", model_dtype=_dtype(c))


def _kimi_linear(c: _Cfg) -> ModelSpec:
    """Kimi-Linear (kimi_linear): KDA layers and MLA layers named 1-based in `linear_attn_config`
    (kda_layers / full_attn_layers), DeepSeek-V3-style MoE after `first_k_dense_replace` dense layers."""
    d = c.int("hidden_size")
    L = c.int("num_hidden_layers")
    H = c.int("num_attention_heads")
    vocab = c.int("vocab_size")
    lac = c.req("linear_attn_config")
    if not isinstance(lac, dict):
        raise ModelFormatError(f"{c.name}: linear_attn_config must be an object")
    la = _Cfg(lac, c.name)
    full = la.req("full_attn_layers")
    if not isinstance(full, list) or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= L
                                             for x in full):
        raise ModelFormatError(f"{c.name}: linear_attn_config.full_attn_layers must list 1-based layer numbers")
    full_set = {x - 1 for x in full}
    kh, kd, kc = la.int("num_heads"), la.int("head_dim"), la.int("short_conv_kernel_size")
    for v in (kh, kd, kc):
        if not 1 <= v <= MAX_DIM:
            raise ModelFormatError(f"{c.name}: linear_attn_config head counts and sizes must be within 1..{MAX_DIM}")
    st = RecurrentState(kind="kda", conv_kernel=kc, heads=kh, head_dim=kd, state_dim=kd, groups=kh, group_dim=kd,
                        chunk=64)
    q_lora = c.get("q_lora_rank") or 0
    kv_lora, nope, rope, v_dim = c.int("kv_lora_rank"), c.int("qk_nope_head_dim"), c.int("qk_rope_head_dim"), \
        c.int("v_head_dim")
    qk = nope + rope
    q = (q_lora * d + q_lora + H * qk * q_lora) if q_lora else H * qk * d
    mla = q + (kv_lora + rope) * d + kv_lora + H * (nope + v_dim) * kv_lora + d * H * v_dim
    hk = kh * kd
    # q/k/v proj, f_a/f_b (low-rank forget gate), b_proj, g_a/g_b (output gate), o_proj
    kda_proj = 3 * d * hk + d * kd + kd * hk + d * kh + d * kd + kd * hk + hk * d
    kda_small = 3 * hk * kc + kh + hk + kd  # q/k/v conv1d, A_log, dt_bias, o_norm
    E = c.get("num_experts", 0) or c.get("n_routed_experts", 0) or 0
    k = c.get("num_experts_per_token", 0) or c.get("num_experts_per_tok", 0) or 0
    moe_inter = c.get("moe_intermediate_size", 0) or 0
    n_shared = c.get("num_shared_experts", 0) or c.get("n_shared_experts", 0) or 0
    first_dense = c.get("first_k_dense_replace", 0) or 0
    freq = c.get("moe_layer_freq", 1) or 1
    inter = c.get("intermediate_size", 0) or 0
    expert = 3 * d * moe_inter
    layers: list[LayerSpec] = []
    for i in range(L):
        is_mla = i in full_set
        moe = E > 0 and i >= first_dense and (i - first_dense) % freq == 0
        params = _p(attention=mla if is_mla else kda_proj, norms=2 * d + (0 if is_mla else kda_small),
                    dense_ffn=0 if moe else 3 * d * inter, shared_experts=n_shared * expert if moe else 0,
                    routed_experts=E * expert if moe else 0, router=(E * d + E) if moe else 0)
        layers.append(LayerSpec(index=i, params=params, n_routed_experts=E if moe else 0,
                                experts_per_token=k if moe else 0, expert_params=expert if moe else 0,
                                attn_kind="mla" if is_mla else "kda",
                                kv=(KVStream("mla", width=kv_lora + rope),) if is_mla else (),
                                attn_flops_per_ctx=2 * H * (kv_lora + rope + kv_lora) if is_mla else 0,
                                recurrent=None if is_mla else st))
    tied = c.get("tie_word_embeddings", False)
    glob = _p(embed=vocab * d, head=0 if tied else vocab * d, norms=d)
    return ModelSpec(name=c.name, architecture=(c.get("architectures") or ["KimiLinearForCausalLM"])[0],
                     family="kimi_linear", hidden_size=d, vocab_size=vocab,
                     max_context=c.get("max_position_embeddings", 0) or c.get("model_max_length", 0) or 0,
                     layers=tuple(layers), global_params=glob, num_attention_heads=H, model_type="kimi_linear",
                     model_dtype=_dtype(c))


def _vision_params(vc: dict[str, Any]) -> int:
    """Rough parameter count of a ViT tower (SigLIP-style): per layer 4h^2 + 2hI, plus patch embedding."""
    if "depth" in vc:
        return _qwen_vl_vision_params(vc)
    try:
        h, inter, n = int(vc["hidden_size"]), int(vc["intermediate_size"]), int(vc["num_hidden_layers"])
        patch = int(vc.get("patch_size", 14))
    except (KeyError, TypeError, ValueError, OverflowError):
        return 0
    if not (0 <= h <= MAX_DIM and 0 <= inter <= MAX_DIM and 0 <= n <= MAX_LAYERS and 0 <= patch <= 1024):
        raise ModelFormatError("vision_config: hidden_size / intermediate_size / num_hidden_layers / patch_size "
                               "out of range")
    return n * (4 * h * h + 2 * h * inter + 9 * h) + 3 * patch * patch * h


def _qwen_vl_vision_params(vc: dict[str, Any]) -> int:
    """Qwen3-VL / Qwen3.5 vision tower (transformers Qwen3VLVisionModel): `depth` blocks of LayerNorm + fused qkv
    + proj + 2-layer MLP (all with biases), a Conv3d patch embedding (in_channels x temporal_patch x patch^2),
    learned position embeddings and the patch merger (LayerNorm, then 4h -> 4h -> out_hidden_size for a 2x2 merge)."""
    try:
        h, inter, n = int(vc["hidden_size"]), int(vc["intermediate_size"]), int(vc["depth"])
        patch, tps = int(vc.get("patch_size", 16)), int(vc.get("temporal_patch_size", 2))
        cin, pos = int(vc.get("in_channels", 3)), int(vc.get("num_position_embeddings", 0))
        out, merge = int(vc.get("out_hidden_size", h)), int(vc.get("spatial_merge_size", 2))
    except (KeyError, TypeError, ValueError, OverflowError):
        return 0
    if not all(0 <= x <= MAX_DIM for x in (h, inter, patch, tps, cin, out, merge)) or not 0 <= n <= MAX_LAYERS \
            or not 0 <= pos <= MAX_POSITIONS:
        raise ModelFormatError("vision_config: sizes out of range")
    block = (3 * h * h + 3 * h) + (h * h + h) + (h * inter + inter) + (inter * h + h) + 4 * h
    m = h * merge * merge
    merger = 2 * h + (m * m + m) + (m * out + out)
    return n * block + cin * tps * patch * patch * h + h + pos * h + merger


_HYBRID_TYPES = {"qwen3_5_text", "qwen3_5_moe_text", "qwen3_next", "nemotron_h", "granitemoehybrid", "kimi_linear"}

_GQA_TYPES = {"llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "minimax_m2", "gpt_oss",
              "gemma3_text", "gemma4_text", "gemma2", "gemma", "mixtral", "phi3", "granite"}

SUPPORTED_MODEL_TYPES = sorted(_GQA_TYPES | _HYBRID_TYPES | {"deepseek_v4", "deepseek_v3", "kimi_k2", "deepseek_v32",
                                                            "deepseek_v2", "gemma3", "gemma4", "qwen3_5",
                                                            "qwen3_5_moe"})


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
    elif mt in ("qwen3_5_text", "qwen3_5_moe_text", "qwen3_next"):
        spec = _qwen_hybrid(c, mt)
    elif mt == "nemotron_h":
        spec = _nemotron_h(c)
    elif mt == "granitemoehybrid":
        spec = _granite_hybrid(c)
    elif mt == "kimi_linear":
        spec = _kimi_linear(c)
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
