"""Architecture dataclasses: pure data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from optimizer.cache import fingerprint

# Tensor classes a quantization scheme can address separately.
TENSOR_CLASSES: tuple[str, ...] = (
    "embed",           # token embedding table (a lookup: one row read per token)
    "head",            # output projection / lm_head
    "attention",       # q/k/v/o projections (incl. MLA low-rank, V4 grouped output)
    "indexer",         # DSA / V4 lightning-indexer projections
    "compressor",      # V4 KV compressor projections
    "dense_ffn",       # dense MLP (dense layers, or a dense block beside the MoE)
    "shared_experts",  # always-active shared experts
    "routed_experts",  # routed experts (the bulk of an MoE)
    "router",          # expert gate weights and biases
    "norms",           # norms, sinks, mHC mixing params and other small fp tensors
    "lookup",          # integer lookup tables (V4 hash-routing tid2eid)
    "vision",          # vision / audio towers of multimodal checkpoints
)

KVKind = Literal["kv", "mla", "dsa_kv", "v4_kv", "indexer", "state", "pool"]


@dataclass(frozen=True)
class KVStream:
    """One cache stream of one layer.

    kind:
      kv      standard K+V rows (GQA/MHA): width = (k_heads*k_dim + v_heads*v_dim) elements per token
      mla     one latent row per token (kv_lora_rank + qk_rope_head_dim), K and V shared
      dsa_kv  DeepSeek-V3.2 sparse-MLA latent row (same width as mla; engines pack it differently)
      v4_kv   DeepSeek-V4 KV row (head_dim wide, K = V), one row per `ratio` tokens
      indexer lightning-indexer key row (index_head_dim wide), one per `ratio` tokens
      state   fixed per-sequence compressor state (bytes in `fixed_bytes`)
      pool    storage an engine charges per token of context that attention does not read as KV rows (SGLang's
              DeepSeek-V4 sliding-window pool, sized as a share of the full pool; estimate/kv.py only)
    """

    kind: KVKind
    width: int = 0            # elements per stored row
    ratio: int = 1            # tokens per stored row (compression); 1 = one row per token
    window: int | None = None  # rows only for the last `window` tokens (sliding window); None = whole context
    kv_heads: int = 1         # heads a tensor-parallel split can divide the row by (GQA); 1 = not shardable
    fixed_bytes: int = 0      # for kind == "state": bytes per sequence, independent of context


RecurrentKind = Literal["gdn", "mamba2", "kda"]


@dataclass(frozen=True)
class RecurrentState:
    """The fixed-size per-sequence state of one recurrent (linear-attention / SSM) layer.

    All three kinds keep a short causal-conv window and a matrix state per head (shapes as in vLLM
    `MambaStateShapeCalculator`, vllm/model_executor/layers/mamba/mamba_utils.py; SGLang configs/mamba_utils.py and
    llama.cpp src/llama-hparams.cpp at 0c1e57098 agree):

      conv channels   = heads*head_dim + 2*groups*group_dim   (GDN: v + q,k; Mamba2: x + B,C; KDA: v + q,k)
      conv state      = conv channels x (conv_kernel - 1)      elements
      matrix state    = heads x head_dim x state_dim           elements

    gdn     Gated DeltaNet (Qwen3.5/3.6, Qwen3-Next): heads = linear value heads, head_dim = value head dim,
            state_dim = key head dim, groups = key heads, group_dim = key head dim.
    mamba2  Mamba2 SSD (Nemotron-H, Granite 4.0-H): heads = mamba heads, head_dim = mamba head dim, state_dim =
            d_state, groups = n_groups (padded up to TP by vLLM/SGLang), group_dim = d_state.
    kda     Kimi Delta Attention: heads x head_dim for q, k and v alike; state_dim = head_dim.
    """

    kind: RecurrentKind
    conv_kernel: int
    heads: int
    head_dim: int
    state_dim: int
    groups: int
    group_dim: int
    chunk: int = 64           # prefill scan chunk (FLA chunked delta rule: 64; Mamba2 SSD: config chunk_size)

    def conv_channels(self, tp: int = 1) -> int:
        """Conv channels one TP rank holds (vLLM `extra_groups_for_head_shards` pads Mamba2 groups up to TP)."""
        g = self.groups
        if self.kind == "mamba2" and tp > 1 and g % tp:
            g = tp  # vLLM extra_groups_for_head_shards: n_groups + (tp - n_groups) when n_groups % tp != 0
        return -(-(self.heads * self.head_dim + 2 * g * self.group_dim) // tp)

    def conv_elements(self, tp: int = 1, num_spec: int = 0) -> int:
        return self.conv_channels(tp) * (self.conv_kernel - 1 + num_spec)

    def ssm_elements(self, tp: int = 1) -> int:
        return -(-self.heads // tp) * self.head_dim * self.state_dim

    def decode_flops(self) -> int:
        """FLOPs of one token's state update and readout (estimate: ~6 multiply-adds per state element, i.e. the
        decay, the delta-rule / SSM update and the readout, plus the short conv)."""
        return 6 * self.heads * self.head_dim * self.state_dim + 2 * self.conv_channels() * self.conv_kernel

    def prefill_flops(self) -> int:
        """FLOPs per prompt token of the chunked scan (estimate): the per-token state work plus the intra-chunk
        causal products, q.k and scores.v over half a chunk on average: heads x chunk x (state_dim + head_dim)."""
        return self.decode_flops() + self.heads * self.chunk * (self.state_dim + self.head_dim)


@dataclass(frozen=True)
class LayerSpec:
    index: int
    params: dict[str, int]            # tensor class -> parameter count in this layer (all experts included)
    kv: tuple[KVStream, ...] = ()
    n_routed_experts: int = 0
    experts_per_token: int = 0
    expert_params: int = 0            # parameters of ONE routed expert
    is_mtp: bool = False              # multi-token-prediction (draft) layer
    attn_kind: str = "full"           # full | swa | mla | dsa | v4-csa | v4-hca | v4-swa | gdn | mamba2 | kda | none
    # attention FLOPs per new token per attended context position (2 * heads * (qk_dim + v_dim))
    attn_flops_per_ctx: int = 0
    attended_topk: int | None = None  # sparse attention: max compressed rows attended (V3.2/V4 top-k)
    indexer_flops_per_ctx: int = 0    # lightning-indexer scoring FLOPs per new token per indexed row
    indexer_ratio: int = 1            # tokens per indexed row
    recurrent: RecurrentState | None = None  # linear-attention / SSM mixer (no attention KV in this layer)
    # small graph nodes per decode step beyond a DeepSeek-V3-class layer, counted from the config (V4's
    # hyper-connection Sinkhorn normalisations); llama.cpp pays a launch cost for each (estimate/speed.py)
    extra_kernels: int = 0

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0


@dataclass(frozen=True)
class ModelSpec:
    name: str
    architecture: str                 # e.g. DeepseekV4ForCausalLM
    family: str                       # deepseek_v4 | deepseek_v3 | deepseek_v32 | gqa | gpt_oss | gemma
    hidden_size: int
    vocab_size: int
    max_context: int
    layers: tuple[LayerSpec, ...]
    global_params: dict[str, int] = field(default_factory=dict)  # embed, head, final norms, vision
    num_attention_heads: int = 0
    index_topk: int | None = None
    source: str = ""                  # where the architecture was read from
    model_type: str = ""              # config model_type (text part): engine rules for recurrent-state dtypes key on it
    config_ssm_dtype: str = ""        # config mamba_ssm_dtype / mamba_ssm_cache_dtype ("" = not set)
    model_dtype: str = "bfloat16"     # config torch_dtype / dtype: vLLM's `auto` conv-state dtype

    # ----- derived counts -------------------------------------------------
    @cached_property
    def main_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(l for l in self.layers if not l.is_mtp)

    @cached_property
    def mtp_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(l for l in self.layers if l.is_mtp)

    def params_by_class(self, include_mtp: bool = True) -> dict[str, int]:
        out = {c: 0 for c in TENSOR_CLASSES}
        for c, n in self.global_params.items():
            out[c] += n
        for layer in self.layers:
            if layer.is_mtp and not include_mtp:
                continue
            for c, n in layer.params.items():
                out[c] += n
        return out

    def total_params(self, include_mtp: bool = False, include_vision: bool = False) -> int:
        by = self.params_by_class(include_mtp)
        return sum(n for c, n in by.items() if c not in ("lookup",) and (include_vision or c != "vision"))

    def active_params(self, include_embed: bool = False) -> int:
        """Parameters touched per token at batch 1 (main layers; routed experts at top-k)."""
        return self._active_with_embed if include_embed else self._active_without_embed

    @cached_property
    def _active_with_embed(self) -> int:
        return self._active_params(True)

    @cached_property
    def _active_without_embed(self) -> int:
        return self._active_params(False)

    @cached_property
    def content_key(self) -> str:
        """A digest of the whole architecture: what memoized figures derived from it are keyed by."""
        return fingerprint(self)

    def _active_params(self, include_embed: bool) -> int:
        total = 0
        for c, n in self.global_params.items():
            if c == "vision" or c == "lookup":
                continue
            if c == "embed" and not include_embed:
                continue
            total += n
        for layer in self.main_layers:
            for c, n in layer.params.items():
                if c == "lookup":
                    continue
                if c == "routed_experts":
                    total += layer.experts_per_token * layer.expert_params
                else:
                    total += n
        return total

    @cached_property
    def recurrent_layers(self) -> tuple[LayerSpec, ...]:
        """Main layers with a recurrent mixer (their state is per sequence and does not grow with context)."""
        return tuple(l for l in self.main_layers if l.recurrent is not None)

    @cached_property
    def is_hybrid(self) -> bool:
        return bool(self.recurrent_layers)

    @cached_property
    def is_moe(self) -> bool:
        return any(l.is_moe for l in self.layers)

    @cached_property
    def moe_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(l for l in self.main_layers if l.is_moe)
