"""Recurrent (linear-attention / SSM) state per sequence, as each engine allocates it.

Hybrid models (Qwen3.5/3.6 and Qwen3-Next: Gated DeltaNet; Nemotron-H / Nemotron 3 and Granite 4.0-H: Mamba2;
Kimi-Linear: KDA) keep, per recurrent layer and per sequence, a conv window and a matrix state whose size does not
depend on the context length (shapes: optimizer.arch.spec.RecurrentState). Only their attention layers have a KV
cache that grows with context. This module gives the state bytes per engine, reported apart from the KV cache.
Sources: the engines' code in vllm==0.33.0 (vllm/model_executor/layers/mamba/mamba_utils.py,
layers/mamba/abstract.py), sglang==0.5.23 and llama.cpp 0c1e57098 (src/llama-hparams.cpp). Checked against
engine source text found in the code index (versions not pinned there): vLLM
`MambaModelConfig.verify_and_update_config` (prefix caching on -> `mamba_cache_mode` "align"; a newer variant
picks "all" for models that support Mamba prefix caching, not modelled), `NemotronHForCausalLMConfig`
(float32 default), the page-alignment formula with kernel_block_alignment_size = max(backend minimum, block_size)
(reproduces the block sizes of vllm-project/vllm issue #41037), the group-size rule of
`_get_kv_cache_groups_uniform_page_size` (min layer count, or max when max < 1.5 x min); SGLang
`_handle_max_mamba_cache` (budget = rest x r / (1 + r)), `_resolve_max_num_reqs` (running requests <= state
slots // ratio) and `_calculate_mamba_ratio` (1 without the radix cache, 3 with it, more with extra buffers).

vLLM 0.33
  dtypes   conv: `--mamba-cache-dtype` (auto = model dtype); SSM: `--mamba-ssm-cache-dtype` (auto = conv dtype),
           except Qwen3.5/3.6 (config `mamba_ssm_dtype`, Qwen3_5ForConditionalGenerationConfig), NemotronH (config
           `mamba_ssm_cache_dtype`, default float32, NemotronHForCausalLMConfig) and KDA (auto -> float32,
           `kda_state_dtype`); an explicit flag wins.
  page     one layer's state (conv rows = kernel - 1 + num_spec) is padded up to a whole attention page:
           `Platform._align_hybrid_block_size` (vllm/platforms/interface.py) sets the attention block size to
           align x ceil(state page / (align x attention bytes per token per layer)), align =
           max(the backend's smallest kernel block: 16, 128 for MLA; --block-size), and
           `mamba_page_size_padded` = block size x attention bytes per token per layer.
  groups   `_get_kv_cache_groups_uniform_page_size` (vllm/v1/core/kv_cache_planning.py) splits each layer type
           into groups of `group_size` layers (the smallest type's count, or the largest when max < 1.5 x min),
           padding the last group with dummy layers; every group aliases one pool of pages.
  copies   a running request pins 1 + num_spec state pages per recurrent group slot with prefix caching off,
           2 + num_spec in "align" mode (prefix caching on, vLLM's default), `MambaSpec.max_memory_usage_bytes`.
SGLang 0.5.23
  dtypes   conv bf16; SSM float32 by default, overridden by config `mamba_ssm_dtype` or `--mamba-ssm-dtype`
           (configs/mamba_utils.py `mamba2_state_dtype`).
  pool     a separate state pool beside the token KV pool: without --max-mamba-cache-size it gets
           r / (1 + r) of the cache memory, r = `--mamba-full-memory-ratio` 0.9, and holds
           (budget - one slot) // slot states (mem_cache/kv_cache_configurator.py); with the radix cache on (the
           default) a running request needs 3 state slots (MAMBA_CACHE_SIZE_MAX_RUNNING_REQUESTS_RATIO).
llama.cpp 0c1e57098
  dtypes   F32 conv and state, hard-coded (`recurrent_type_r/s`, src/llama-model.cpp create_memory); -ctk/-ctv
           do not apply.
  rows     `llama_memory_recurrent` keeps max(1, n_seq_max) x (1 + n_rs_seq) state rows per layer
           (src/llama-memory-recurrent.cpp), n_rs_seq = draft n_max for archs that support state rollback
           (Qwen3.5/3.6, Nemotron-H), else 0; conv row (d_conv - 1) x channels, state row d_state x d_inner
           (src/llama-hparams.cpp n_embd_r / n_embd_s). Nothing depends on -c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimizer.arch.spec import ModelSpec
from optimizer.cache import BoundedCache
from optimizer.errors import InputError

STATE_DTYPES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}
_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "fp16": "float16", "f16": "float16",
            "half": "float16", "float": "float32"}

VLLM_KERNEL_BLOCK_ALIGN = 16       # attention backends' minimum kernel block (reference §4 assumption)
VLLM_MLA_BLOCK_ALIGN = 128         # forced >= 128 for MLA (Platform._align_hybrid_block_size)
SGLANG_MAMBA_FULL_MEMORY_RATIO = 0.9   # --mamba-full-memory-ratio default
SGLANG_RADIX_SLOTS_PER_REQUEST = 3     # MAMBA_CACHE_SIZE_MAX_RUNNING_REQUESTS_RATIO
# llama.cpp archs whose recurrent state supports rollback, so speculative drafts add n_rs_seq state rows
LLAMACPP_RS_ROLLBACK_TYPES = frozenset({"qwen3_5_text", "qwen3_5_moe_text", "nemotron_h"})


def state_dtype(name: str, flag: str = "--mamba-ssm-cache-dtype") -> str:
    """Canonical recurrent-state dtype name; `auto` passes through."""
    n = name.strip().lower()
    n = _ALIASES.get(n, n)
    if n == "auto" or n in STATE_DTYPES:
        return n
    raise InputError(f"{flag} must be auto, float32, bfloat16 or float16, got {name!r}")


@dataclass(frozen=True)
class RecurrentEstimate:
    """State bytes of ONE sequence on one rank of a TP group, for one engine. Zero layers = not a hybrid model."""
    engine: str
    layers: int                   # recurrent layers (main model)
    conv_dtype: str
    ssm_dtype: str
    conv_bytes_per_layer: int     # conv window of one layer (spec-decode rows included)
    ssm_bytes_per_layer: int      # matrix state of one layer
    set_bytes: int                # one state set of one sequence over all recurrent layers (no engine padding)
    copies: float                 # state sets a running sequence pins (engine copies / prefix-cache / drafts)
    per_seq_bytes: float          # bytes a running sequence pins (padding, groups and copies included)
    vllm_block_size: int | None = None        # attention block size vLLM forces (tokens)
    vllm_padded_page_bytes: int | None = None  # one layer's state padded to an attention page
    vllm_group_size: int | None = None
    vllm_padding_layers: int = 0              # dummy recurrent layers of the last group
    vllm_attention_padding_layers: int = 0    # dummy attention layers (when the attention count is not a multiple)
    separate_pool_share: float | None = None  # SGLang: share of the cache memory the state pool takes
    sources: tuple[str, ...] = ()

    @property
    def is_hybrid(self) -> bool:
        return self.layers > 0


_NONE = RecurrentEstimate(engine="", layers=0, conv_dtype="", ssm_dtype="", conv_bytes_per_layer=0,
                          ssm_bytes_per_layer=0, set_bytes=0, copies=0.0, per_seq_bytes=0.0)

_CACHE: BoundedCache[tuple[object, ...], RecurrentEstimate] = BoundedCache("estimate.recurrent", 1024)


def _vllm_ssm_auto(spec: ModelSpec, conv: str) -> tuple[str, str]:
    mt = spec.model_type
    if mt in ("qwen3_5_text", "qwen3_5_moe_text") and spec.config_ssm_dtype:
        return state_dtype(spec.config_ssm_dtype), "vLLM Qwen3_5ForConditionalGenerationConfig: config mamba_ssm_dtype"
    if mt == "nemotron_h":
        return (state_dtype(spec.config_ssm_dtype or "float32"),
                "vLLM NemotronHForCausalLMConfig: config mamba_ssm_cache_dtype, default float32")
    if mt == "kimi_linear":
        return "float32", "vLLM kda_state_dtype: auto -> float32"
    return conv, "vLLM mamba2_state_dtype / gated_delta_net_state_dtype: auto = conv dtype (model dtype)"


def recurrent_estimate(spec: ModelSpec, engine: str, *, attn_token_bytes: float = 0.0, tp: int = 1,
                       num_spec: int = 0, ssm_dtype: str | None = None, conv_dtype: str | None = None,
                       prefix_caching: bool = True, is_mla: bool = False,
                       block_size: int | None = None) -> RecurrentEstimate:
    """The recurrent state one running sequence pins on one rank. `attn_token_bytes` = attention KV bytes of one
    token in one attention layer on this rank (vLLM pads each state page to a whole attention block of them);
    `num_spec` = speculative tokens; `ssm_dtype` / `conv_dtype` = the engine flags (None / auto = its default);
    `block_size` = vLLM --block-size, which only raises the alignment base (kernel_block_alignment_size =
    max(backend minimum, block_size)), the block itself is still sized to the state page."""
    if not spec.recurrent_layers:
        return _NONE
    key = (spec.content_key, engine, attn_token_bytes, tp, num_spec, ssm_dtype, conv_dtype, prefix_caching, is_mla,
           block_size)
    return _CACHE.get_or_compute(key, lambda: _estimate(spec, engine, attn_token_bytes, tp, num_spec, ssm_dtype,
                                                        conv_dtype, prefix_caching, is_mla, block_size))


def _estimate(spec: ModelSpec, engine: str, attn_token_bytes: float, tp: int, num_spec: int, ssm_flag: str | None,
              conv_flag: str | None, prefix_caching: bool, is_mla: bool, block_size: int | None) -> RecurrentEstimate:
    rec = spec.recurrent_layers
    n = len(rec)
    st = rec[0].recurrent
    assert st is not None
    model_dt = state_dtype(spec.model_dtype) if spec.model_dtype in STATE_DTYPES or spec.model_dtype in _ALIASES \
        else "bfloat16"
    sources: list[str] = []
    ssm_flag = state_dtype(ssm_flag) if ssm_flag else "auto"
    conv_flag = state_dtype(conv_flag, "--mamba-cache-dtype") if conv_flag else "auto"
    if engine == "llamacpp":
        conv, ssm = "float32", "float32"
        tp_eff, spec_rows = 1, 0   # llama.cpp splits layers across devices, not heads; no extra conv rows
        sources.append("llama.cpp src/llama-model.cpp create_memory: recurrent_type_r/s = F32")
    elif engine == "sglang":
        conv = "bfloat16" if conv_flag == "auto" else conv_flag
        cfg = spec.config_ssm_dtype if spec.model_type != "nemotron_h" else ""
        ssm = ssm_flag if ssm_flag != "auto" else (state_dtype(cfg) if cfg else "float32")
        tp_eff, spec_rows = tp, num_spec
        sources.append("SGLang configs/mamba_utils.py mamba2_state_dtype: conv bf16, SSM float32 -> config "
                       "mamba_ssm_dtype -> --mamba-ssm-dtype")
    else:
        conv = model_dt if conv_flag == "auto" else conv_flag
        if ssm_flag != "auto":
            ssm = ssm_flag
            sources.append("--mamba-ssm-cache-dtype given")
        else:
            ssm, why = _vllm_ssm_auto(spec, conv)
            sources.append(why)
        if spec.model_type == "kimi_linear" and ssm not in ("float32", "bfloat16"):
            raise InputError("vLLM's KDA state accepts only float32 or bfloat16 (--mamba-ssm-cache-dtype)")
        tp_eff, spec_rows = tp, num_spec
    conv_b = st.conv_elements(tp_eff, spec_rows) * STATE_DTYPES[conv]
    ssm_b = st.ssm_elements(tp_eff) * STATE_DTYPES[ssm]
    page = conv_b + ssm_b
    set_bytes = page * n
    if engine == "llamacpp":
        copies = 1.0 + (num_spec if spec.model_type in LLAMACPP_RS_ROLLBACK_TYPES else 0)
        sources.append("llama.cpp llama_memory_recurrent: n_seq_max x (1 + n_rs_seq) rows per layer")
        return RecurrentEstimate(engine=engine, layers=n, conv_dtype=conv, ssm_dtype=ssm, conv_bytes_per_layer=conv_b,
                                 ssm_bytes_per_layer=ssm_b, set_bytes=set_bytes, copies=copies,
                                 per_seq_bytes=set_bytes * copies, sources=tuple(sources))
    if engine == "sglang":
        copies = float(SGLANG_RADIX_SLOTS_PER_REQUEST) + num_spec
        sources.append("SGLang kv_cache_configurator.py: separate state pool, mamba_full_memory_ratio 0.9; radix cache "
                       "on: 3 state slots per running request; drafts add num_draft_tokens intermediate states")
        share = SGLANG_MAMBA_FULL_MEMORY_RATIO / (1.0 + SGLANG_MAMBA_FULL_MEMORY_RATIO)
        return RecurrentEstimate(engine=engine, layers=n, conv_dtype=conv, ssm_dtype=ssm, conv_bytes_per_layer=conv_b,
                                 ssm_bytes_per_layer=ssm_b, set_bytes=set_bytes, copies=copies,
                                 per_seq_bytes=set_bytes * copies, separate_pool_share=share, sources=tuple(sources))
    # vLLM: page alignment to the attention block, uniform-page groups with padding layers, copies per request
    align = max(VLLM_MLA_BLOCK_ALIGN if is_mla else VLLM_KERNEL_BLOCK_ALIGN, block_size or 0)
    block = padded = None
    if attn_token_bytes > 0:
        block = align * math.ceil(page / (align * attn_token_bytes))
        padded = int(round(block * attn_token_bytes))
    n_attn = sum(1 for l in spec.main_layers if l.kv)
    lo, hi = (min(n, n_attn), max(n, n_attn)) if n_attn else (n, n)
    group = hi if hi < 1.5 * lo else lo
    slots = math.ceil(n / group) * group
    attn_slots = math.ceil(n_attn / group) * group if n_attn else 0
    copies = float((2 if prefix_caching else 1) + num_spec)
    per_seq = slots * (padded or page) * copies
    sources.append("vLLM Platform._align_hybrid_block_size (page padded to an attention block), "
                   "kv_cache_planning._get_kv_cache_groups_uniform_page_size (groups, padding layers), "
                   "MambaSpec.max_memory_usage_bytes (1 + num_spec pages; 2 + num_spec in 'align' prefix-caching mode)")
    return RecurrentEstimate(engine=engine, layers=n, conv_dtype=conv, ssm_dtype=ssm, conv_bytes_per_layer=conv_b,
                             ssm_bytes_per_layer=ssm_b, set_bytes=set_bytes, copies=copies, per_seq_bytes=per_seq,
                             vllm_block_size=block, vllm_padded_page_bytes=padded, vllm_group_size=group,
                             vllm_padding_layers=slots - n, vllm_attention_padding_layers=attn_slots - n_attn,
                             sources=tuple(sources))
