"""KV-cache bytes per sequence, by attention kind and engine layout.

Row sizes per engine (engine source files named on each line):
- vLLM / SGLang GQA: 2 x kv_heads x head_dim x dtype, kv heads divided by TP (vllm/config/model.py get_num_kv_heads).
- MLA (V3/R1/Kimi): one 576-wide latent row, not sharded by TP: 1152 B bf16, 576 B fp8 (vLLM MLAAttentionSpec).
- V3.2 sparse MLA with fp8: 656 B (512 FP8 + 16 B scales + 128 B BF16 rope) + 132 B indexer (vLLM, SGLang).
- V4: 584 B per KV row in vLLM and SGLang (448 FP8 nope + 128 B BF16 rope + 8 B scales/pad), indexer 132 B
  (FP8 + fp32 scale; SGLang's FP4 indexer option 68 B), fp32 compressor states.
- llama.cpp: MLA caches K only (576 x type bytes, PR #19067); V4 uses 512-wide K-only rows at type_k for the window,
  the compressed caches and a 128-wide indexer, each compressed cache padded to 256 cells (llama-kv-cache-dsv4.cpp).
  Ollama and LM Studio's llama.cpp engine allocate exactly as llama.cpp (they launch llama-server).
- MLX (mlx-lm 0.32.0 mlx_lm/models/cache.py): `KVCache` holds K and V as [B, kv_heads, n, head_dim] in the
  model's float dtype and grows in steps of 256 tokens (`step = 256`: n = ceil(T / 256) * 256); sliding-window
  layers use a `RotatingKVCache` of the window (models' make_cache). `QuantizedKVCache` (--kv-bits, group 64)
  stores b-bit values plus a fp16 scale and bias per 64 values (dtypes mlx_q8, mlx_q4), also in 256-token steps.
  The export passes `--quantized-kv-start 0` (the server's default 5000 keeps the first 5000 tokens in full
  precision, generate.py maybe_quantize_kv_cache), so the whole cache is quantized as planned; with --kv-bits the
  server serves one request at a time (server.py _is_batchable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from optimizer.arch.formats import kv_elem_bytes
from optimizer.arch.spec import KVStream, ModelSpec
from optimizer.cache import BoundedCache
from optimizer.engines import ENGINES as _ENGINES
from optimizer.engines import engine_key, is_llamacpp
from optimizer.errors import InputError

Engine = Literal["vllm", "sglang", "llamacpp", "ik_llama", "ollama", "lmstudio", "mlx"]
ENGINES: tuple[str, ...] = _ENGINES
MLX_KV_STEP = 256               # mlx_lm/models/cache.py KVCache.step
MLX_KV_DTYPES = ("bf16", "fp16", "f16", "mlx_q8", "mlx_q4")

V4_ROW_BYTES_FP8 = 584          # vLLM deepseek_v4 attention: nope + rope*2 + nope//64 + 1
V4_ROW_BYTES_BF16_SGLANG = 1024  # SGLang unified-KV BF16 row
# SGLang 0.5.23 sizes DeepSeek-V4's sliding-window pool as swa_full_tokens_ratio (0.1, set by
# arg_groups/model_overrides/deepseek_v4.py, which makes the pool configurator's "ratio" mode apply) of the full
# pool: every full token pays 0.1 x (one KV row on every layer + the C4 compressor and indexer-compressor state
# rings priced per SWA slot: (8 ring rows / 256-token page) x (4 x 512 + 4 x 128) x 4 B per C4 layer)
# (model_executor/pool_configurator.py DSV4PoolConfigurator._get_bytes_per_swa_token / _get_bytes_per_full_token)
SGLANG_V4_SWA_RATIO = 0.1
SGLANG_V4_C4_STATE_PER_SWA_SLOT = 8 / 256 * (4 * 512 + 4 * 128) * 4   # 320 B
DSA_ROW_BYTES_FP8 = 656         # vLLM/SGLang fp8_ds_mla for V3.2
INDEXER_ROW_BYTES_FP8 = 132     # 128 FP8 + 4 B fp32 scale
INDEXER_ROW_BYTES_FP4 = 68      # SGLang --enable-deepseek-v4-fp4-indexer
LLAMACPP_PAD = 256


def default_kv_dtype(spec: ModelSpec, engine: str) -> str:
    if is_llamacpp(engine):
        return "f16"   # llama.cpp -ctk/-ctv default; Ollama's OLLAMA_KV_CACHE_TYPE "(default: f16)" (envconfig)
    if engine == "mlx":
        return "bf16"  # the activations' dtype (bf16/fp16 checkpoints: 2 bytes either way)
    if spec.family in ("deepseek_v4", "deepseek_v32"):
        return "fp8"  # V4 accepts only FP8 layouts in vLLM; SGLang defaults V4 to fp8_e4m3; V3.2 defaults to fp8
    return "bf16"


def check_engine(engine: str) -> str:
    e = engine_key(engine)
    if e is None:
        raise InputError(f"unknown engine '{engine[:40]}' (use {', '.join(ENGINES)})")
    return e


@dataclass(frozen=True)
class KVLayout:
    """Bytes of one stored row, and how many rows a sequence of T tokens keeps, for one stream."""
    row_bytes: float
    stream: KVStream
    engine: str

    def rows(self, tokens: int) -> int:
        s = self.stream
        if s.kind == "state":
            return 0
        n = tokens if s.window is None else min(tokens, s.window)
        if self.engine == "mlx" and s.window is None:
            n = math.ceil(n / MLX_KV_STEP) * MLX_KV_STEP  # KVCache grows in 256-token steps
        if s.ratio > 1:
            n = tokens // s.ratio
            if is_llamacpp(self.engine):
                n = math.ceil(math.ceil(tokens / s.ratio) / LLAMACPP_PAD) * LLAMACPP_PAD
        return n

    def bytes_at(self, tokens: int) -> float:
        if self.stream.kind == "state":
            return float(self.stream.fixed_bytes)
        return self.rows(tokens) * self.row_bytes


def _row_bytes(s: KVStream, engine: str, kv_dtype: str, tp: int, fp4_indexer: bool) -> float:
    e = kv_elem_bytes(kv_dtype)
    is_fp8 = kv_dtype.lower().startswith("fp8")
    if s.kind == "state":
        return 0.0
    if s.kind == "kv":
        if is_llamacpp(engine) or engine == "mlx":
            return s.width * e  # layers are split across devices, heads are not
        per_rank = max(1, s.kv_heads // tp) if tp > 1 else s.kv_heads
        return s.width * e * per_rank / s.kv_heads
    if s.kind == "mla":
        return s.width * e
    if s.kind == "dsa_kv":
        if engine in ("vllm", "sglang") and is_fp8:
            return DSA_ROW_BYTES_FP8
        return s.width * e
    if s.kind == "v4_kv":
        if is_llamacpp(engine) or engine == "mlx":
            return s.width * e
        if engine == "sglang" and not is_fp8:
            return V4_ROW_BYTES_BF16_SGLANG
        return V4_ROW_BYTES_FP8
    if s.kind == "indexer":
        if is_llamacpp(engine) or engine == "mlx":
            return s.width * e
        if fp4_indexer and engine == "sglang":
            return INDEXER_ROW_BYTES_FP4
        return INDEXER_ROW_BYTES_FP8  # vLLM's FP4 indexer option still allocates 132 B
    raise InputError(f"unknown KV stream kind {s.kind}")


@dataclass(frozen=True)
class KVEstimate:
    engine: str
    kv_dtype: str
    layouts: tuple[tuple[int, KVLayout], ...]  # (layer index, layout)
    index_topk: int | None
    _memo: dict[tuple[str, int], float] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def bytes_at(self, tokens: int) -> float:
        """Cache bytes one sequence of `tokens` tokens holds (per GPU of a TP group)."""
        k = ("b", tokens)
        if k not in self._memo:
            self._memo[k] = sum(l.bytes_at(tokens) for _, l in self.layouts)
        return self._memo[k]

    def fixed_bytes(self) -> float:
        """Part that does not grow with context: states plus full sliding windows."""
        out = 0.0
        for _, l in self.layouts:
            s = l.stream
            if s.kind == "state":
                out += s.fixed_bytes
            elif s.window is not None:
                out += s.window * l.row_bytes
        return out

    def growth_bytes_per_token(self) -> float:
        """Bytes added per extra token of context (long-context slope)."""
        return sum(l.row_bytes / l.stream.ratio for _, l in self.layouts
                   if l.stream.kind != "state" and l.stream.window is None)

    def read_bytes_per_token(self, tokens: int) -> float:
        """Cache bytes read to decode one token of a sequence at context `tokens`."""
        k = ("r", tokens)
        if k not in self._memo:
            self._memo[k] = self._read(tokens)
        return self._memo[k]

    def _read(self, tokens: int) -> float:
        total = 0.0
        for _, l in self.layouts:
            s = l.stream
            if s.kind in ("state", "pool"):
                continue  # a pool share is storage, not rows attention reads
            rows = l.rows(tokens)
            if s.kind in ("v4_kv", "dsa_kv") and s.window is None and self.index_topk and s.ratio in (1, 4):
                rows = min(rows, self.index_topk)  # top-k sparse attention reads only the selected rows
            total += rows * l.row_bytes
        return total


_KV_CACHE: BoundedCache[tuple[object, ...], KVEstimate] = BoundedCache("estimate.kv", 1024)


def kv_estimate(spec: ModelSpec, engine: str = "vllm", kv_dtype: str | None = None, tp: int = 1,
                include_mtp: bool = False, fp4_indexer: bool = False) -> KVEstimate:
    """The KV layout of a model for an engine (memoized by the architecture's content key, never by id())."""
    key = (spec.content_key, engine, kv_dtype, tp, include_mtp, fp4_indexer)
    return _KV_CACHE.get_or_compute(key, lambda: _kv_estimate(spec, engine, kv_dtype, tp, include_mtp, fp4_indexer))


def _kv_estimate(spec: ModelSpec, engine: str, kv_dtype: str | None, tp: int, include_mtp: bool,
                 fp4_indexer: bool) -> KVEstimate:
    engine = check_engine(engine)
    kv_dtype = (kv_dtype or default_kv_dtype(spec, engine)).lower()
    kv_elem_bytes(kv_dtype)  # validate
    if engine == "vllm" and spec.family == "deepseek_v4" and not kv_dtype.startswith("fp8"):
        raise InputError("vLLM runs DeepSeek-V4 only with an FP8 KV cache (fp8_ds_mla); use --kv-dtype fp8")
    if is_llamacpp(engine) and (kv_dtype.startswith("fp8") or kv_dtype.startswith("mlx_")):
        raise InputError(f"{engine} (llama.cpp) has no {kv_dtype} KV cache; use f16, bf16, q8_0, q4_0, ...")
    if engine == "mlx" and kv_dtype not in MLX_KV_DTYPES:
        raise InputError(f"mlx-lm has no {kv_dtype} KV cache; use bf16 (the model dtype), mlx_q8 or mlx_q4 "
                         "(mlx_lm.server --kv-bits 8/4)")
    if engine != "mlx" and kv_dtype.startswith("mlx_"):
        raise InputError(f"{kv_dtype} is an MLX KV cache type (mlx engine only)")
    layouts = []
    sglang_v4 = engine == "sglang" and spec.family == "deepseek_v4"
    for layer in spec.layers:
        if layer.is_mtp and not include_mtp:
            continue
        for s in layer.kv:
            if sglang_v4 and s.kind == "state":
                continue  # SGLang: C4 state priced per SWA slot (below), C128 state per request slot (memory.py)
            layouts.append((layer.index, KVLayout(_row_bytes(s, engine, kv_dtype, tp, fp4_indexer), s, engine)))
        if sglang_v4:
            window = next(s for s in layer.kv if s.kind == "v4_kv" and s.window is not None)
            per_slot = _row_bytes(window, engine, kv_dtype, tp, fp4_indexer) + (
                SGLANG_V4_C4_STATE_PER_SWA_SLOT if layer.attn_kind == "v4-csa" else 0.0)
            layouts.append((layer.index, KVLayout(SGLANG_V4_SWA_RATIO * per_slot, KVStream("pool"), engine)))
    return KVEstimate(engine=engine, kv_dtype=kv_dtype, layouts=tuple(layouts), index_topk=spec.index_topk)
