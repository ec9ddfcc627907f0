"""Measured kernel efficiencies and collective times, interpolated from `hardware/kernels/*.json`.

Pure functions over the tables that `bench/aic_tables.py` derives from NVIDIA AIConfigurator's measured
per-op latencies (aiconfigurator-core 0.12.0, Apache-2.0). No solver, no numpy.

- Efficiencies are fractions of the peaks in the file (rigopt's own peaks, hardware/accelerators.yaml), so
  `time = work / (peak x efficiency)` reproduces the measured latency at grid points.
- Interpolation is linear in the efficiency and in log(x) (log(M), log(KV length), log(batch), ...), clamped at
  the ends of each grid. Two-dimensional tables (decode attention: KV length x batch) interpolate within each
  batch row, then between rows in log(batch).
- Collective times interpolate log(time) over log(bytes); below the smallest message the time is the smallest
  message's (the latency floor), above the largest it grows at the largest message's bandwidth. GPU counts
  between measured ones interpolate in log(n); outside the measured counts there is no answer (None).
- Every function returns None for a system (rigopt accelerator key) without a table of that kind.
- `backend=None` takes the first of vLLM, SGLang, TRT-LLM that has the table and is not marked `suspect`
  (then a suspect one if that is all there is); naming a backend returns exactly that backend's table.

Dtype names are the tables' own: bf16, fp8 (per-tensor / per-channel scaled FP8), fp8_block (128x128 block
scales: rigopt's `fp8` quantization), nvfp4; MoE also mxfp4_w4a16, int4_w4a16, mxfp4_w4a8. A few aliases are
accepted (see DTYPE_ALIASES).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from optimizer.catalog.kernel_tables import KernelTables, load_kernel_tables

BACKEND_ORDER = ("vllm", "sglang", "trtllm")
DTYPE_ALIASES = {
    "bfloat16": "bf16", "fp16": "bf16", "float16": "bf16",
    "fp8-block128": "fp8_block", "fp8-block": "fp8_block", "fp8-channel": "fp8", "fp8-tensor": "fp8",
    "fp4": "nvfp4", "mxfp4": "mxfp4_w4a16", "int4": "int4_w4a16", "awq": "int4_w4a16", "gptq": "int4_w4a16",
}
T = TypeVar("T")


def tables(system: str) -> KernelTables | None:
    """All kernel tables of one accelerator key (None without a file)."""
    return load_kernel_tables(system)


def _dtype(d: str) -> str:
    d = d.lower()
    return DTYPE_ALIASES.get(d, d)


# ---------------------------------------------------------------- interpolation primitives

def interp_loglin(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """y at x, linear in y and log(x) between grid points, clamped to the end values outside the grid."""
    if x <= xs[0]:
        return float(ys[0])
    if x >= xs[-1]:
        return float(ys[-1])
    i = bisect.bisect_right(xs, x) - 1
    x0, x1 = xs[i], xs[i + 1]
    t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return float(ys[i] + t * (ys[i + 1] - ys[i]))


def interp_loglog_time(xs: Sequence[float], ts: Sequence[float], x: float) -> float:
    """Time at size x: log-log between grid points, the first time below the grid, constant bandwidth above."""
    if x <= xs[0]:
        return float(ts[0])
    if x >= xs[-1]:
        return float(ts[-1]) * x / xs[-1]
    i = bisect.bisect_right(xs, x) - 1
    x0, x1 = xs[i], xs[i + 1]
    t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return float(math.exp(math.log(ts[i]) + t * (math.log(ts[i + 1]) - math.log(ts[i]))))


def _between(keys: Sequence[float], value_at: Callable[[int], float], k: float) -> float:
    """Interpolate over a list of rows keyed by `keys` (increasing) in log(k), clamped at both ends."""
    if len(keys) == 1 or k <= keys[0]:
        return value_at(0)
    if k >= keys[-1]:
        return value_at(len(keys) - 1)
    i = bisect.bisect_right(keys, k) - 1
    t = (math.log(k) - math.log(keys[i])) / (math.log(keys[i + 1]) - math.log(keys[i]))
    return value_at(i) + t * (value_at(i + 1) - value_at(i))


def _pick(candidates: list[T], backend: str | None) -> T | None:
    """The table of `backend`, or by BACKEND_ORDER (non-suspect first) when backend is None."""
    if backend is not None:
        return next((c for c in candidates if c.backend == backend), None)  # type: ignore[attr-defined]
    ranked = sorted(candidates, key=lambda c: (c.suspect, BACKEND_ORDER.index(c.backend)  # type: ignore[attr-defined]
                                               if c.backend in BACKEND_ORDER else 99))  # type: ignore[attr-defined]
    return ranked[0] if ranked else None


# ---------------------------------------------------------------- GEMM

def _gemm(system: str, dtype: str, backend: str | None) -> Any:
    t = tables(system)
    if t is None:
        return None
    return _pick([g for g in t.gemm if g.dtype == _dtype(dtype)], backend)


def gemm_efficiency(system: str, dtype: str, m_tokens: float, *, backend: str | None = None,
                    stat: str = "median") -> float | None:
    """Achieved fraction of the dtype's peak FLOP/s of one linear layer at M tokens per step (median, p25 or p75
    over representative N, K)."""
    g = _gemm(system, dtype, backend)
    if g is None:
        return None
    ys = {"median": g.flop_efficiency_median, "p25": g.flop_efficiency_p25, "p75": g.flop_efficiency_p75}[stat]
    return interp_loglin(g.m_tokens, ys, max(m_tokens, 1e-9))


def gemm_bw_efficiency(system: str, dtype: str, m_tokens: float, *, backend: str | None = None) -> float | None:
    """Achieved fraction of HBM peak (weights + activations bytes / latency) of the same GEMMs at M tokens."""
    g = _gemm(system, dtype, backend)
    if g is None:
        return None
    return interp_loglin(g.m_tokens, g.bw_efficiency_median, max(m_tokens, 1e-9))


def gemm_weight_bw_efficiency(system: str, dtype: str, weight_bytes: float, *,
                              backend: str | None = None) -> float | None:
    """HBM efficiency of weight-streaming GEMMs (M <= 16) as a function of one matrix's weight bytes: small
    shards are latency bound."""
    t = tables(system)
    if t is None:
        return None
    g = _pick([g for g in t.gemm_weight_bw if g.dtype == _dtype(dtype)], backend)
    if g is None:
        return None
    return interp_loglin(g.weight_bytes, g.bw_efficiency_median, max(weight_bytes, 1.0))


# ---------------------------------------------------------------- attention

def _kv_rows(table: Any, kv_len: float, batch: float) -> float:
    rows = table.rows
    return _between([r.batch for r in rows],
                    lambda i: interp_loglin(rows[i].kv_len_tokens, rows[i].bw_efficiency_median, max(kv_len, 1.0)),
                    max(batch, 1.0))


def _isl_rows(table: Any, isl: float, batch: float) -> float:
    rows = table.rows
    return _between([r.batch for r in rows],
                    lambda i: interp_loglin(rows[i].isl_tokens, rows[i].flop_efficiency_median, max(isl, 1.0)),
                    max(batch, 1.0))


def decode_attention_bw_efficiency(system: str, kv_len: float, batch: float = 1, *, kv_dtype: str = "bf16",
                                   backend: str | None = None) -> float | None:
    """Decode (generation) attention: KV bytes read / latency / HBM peak, at KV length `kv_len` tokens per
    sequence and `batch` sequences (GQA, head_dim 128)."""
    t = tables(system)
    if t is None:
        return None
    a = _pick([a for a in t.decode_attention if a.kv_dtype == _dtype(kv_dtype)], backend)
    return None if a is None else _kv_rows(a, kv_len, batch)


def context_attention_efficiency(system: str, isl: float, batch: float = 1, *,
                                 backend: str | None = None) -> float | None:
    """Prefill (context) attention: causal attention FLOPs / latency / bf16 peak at `isl` prompt tokens."""
    t = tables(system)
    if t is None:
        return None
    a = _pick(list(t.context_attention), backend)
    return None if a is None else _isl_rows(a, isl, batch)


def _by_heads(items: list[Any], heads: float, fn: Callable[[Any], float]) -> float:
    items = sorted(items, key=lambda x: x.num_heads_per_gpu)
    return _between([x.num_heads_per_gpu for x in items], lambda i: fn(items[i]), max(heads, 1.0))


def mla_decode_bw_efficiency(system: str, kv_len: float, batch: float = 1, *, num_heads_per_gpu: float = 16,
                             kv_dtype: str = "bf16", backend: str | None = None) -> float | None:
    """MLA decode attention (DeepSeek latent cache, 576 values per token): KV bytes / latency / HBM peak."""
    t = tables(system)
    if t is None:
        return None
    cands = [m for m in t.mla_decode if m.kv_dtype == _dtype(kv_dtype)]
    chosen = _pick(cands, backend)
    if chosen is None:
        return None
    same = [m for m in cands if m.backend == chosen.backend]
    return _by_heads(same, num_heads_per_gpu, lambda m: _kv_rows(m, kv_len, batch))


def mla_context_efficiency(system: str, isl: float, batch: float = 1, *, num_heads_per_gpu: float = 16,
                           backend: str | None = None) -> float | None:
    """MLA prefill attention: causal FLOPs (qk head 192, v head 128) / latency / bf16 peak."""
    t = tables(system)
    if t is None:
        return None
    chosen = _pick(list(t.mla_context), backend)
    if chosen is None:
        return None
    same = [m for m in t.mla_context if m.backend == chosen.backend]
    return _by_heads(same, num_heads_per_gpu, lambda m: _isl_rows(m, isl, batch))


# ---------------------------------------------------------------- MoE

def _moe(system: str, dtype: str, backend: str | None) -> Any:
    t = tables(system)
    if t is None:
        return None
    return _pick([m for m in t.moe if m.dtype == _dtype(dtype)], backend)


def moe_efficiency(system: str, dtype: str, tokens_per_expert: float, *,
                   backend: str | None = None) -> float | None:
    """Grouped expert GEMM FLOP efficiency (peak of the math dtype) at `tokens_per_expert` = tokens x top-k /
    experts (balanced routing)."""
    m = _moe(system, dtype, backend)
    return None if m is None else interp_loglin(m.tokens_per_expert, m.flop_efficiency_median,
                                                max(tokens_per_expert, 1e-9))


def moe_bw_efficiency(system: str, dtype: str, tokens_per_expert: float, *,
                      backend: str | None = None) -> float | None:
    """Grouped expert GEMM HBM efficiency (touched expert weights / latency / HBM peak)."""
    m = _moe(system, dtype, backend)
    return None if m is None else interp_loglin(m.tokens_per_expert, m.bw_efficiency_median,
                                                max(tokens_per_expert, 1e-9))


# ---------------------------------------------------------------- collectives

def _comm_time(table: Any, nbytes: float, n_gpus: int) -> float | None:
    rows = table.rows
    ns = [r.n_gpus for r in rows]
    if n_gpus < ns[0] or n_gpus > ns[-1]:
        return None
    def at(i: int) -> float:
        return float(interp_loglog_time(rows[i].message_bytes, rows[i].latency_us, nbytes)) * 1e-6
    if n_gpus in ns:
        return at(ns.index(n_gpus))
    i = bisect.bisect_right(ns, n_gpus) - 1
    t = (math.log(n_gpus) - math.log(ns[i])) / (math.log(ns[i + 1]) - math.log(ns[i]))
    return math.exp(math.log(at(i)) + t * (math.log(at(i + 1)) - math.log(at(i))))


def allreduce_time_s(system: str, nbytes: float, n_gpus: int, *, impl: str | None = None,
                     backend: str | None = None) -> float | None:
    """Seconds for one all-reduce of `nbytes` (bf16) over `n_gpus` GPUs. impl "custom" (the engine's custom
    all-reduce under CUDA graphs; default when present) or "nccl". 0 for one GPU; None without data for that
    GPU count."""
    if n_gpus <= 1:
        return 0.0
    t = tables(system)
    if t is None:
        return None
    impls = [impl] if impl else ["custom", "nccl"]
    for im in impls:
        cands = [c for c in t.allreduce if c.impl == im]
        if im == "nccl":
            c = cands[0] if cands else None
        else:
            c = _pick(cands, backend)
        if c is not None:
            v = _comm_time(c, nbytes, n_gpus)
            if v is not None:
                return v
    return None


def alltoall_time_s(system: str, nbytes: float, n_gpus: int) -> float | None:
    """Seconds for one NCCL all-to-all of `nbytes` per GPU over `n_gpus` GPUs (0 for one GPU)."""
    if n_gpus <= 1:
        return 0.0
    t = tables(system)
    if t is None or not t.alltoall:
        return None
    return _comm_time(t.alltoall[0], nbytes, n_gpus)


def ep_a2a_time_s(system: str, num_tokens: float, phase: str, *, comm_backend: str = "deepep_ll",
                  backend: str | None = None) -> float | None:
    """Seconds for one DeepEP dispatch or combine at `num_tokens` tokens per rank (EP8 inside a node, hidden
    7168, top-8 of 256 experts as measured); log-log in tokens, clamped below, constant rate above."""
    t = tables(system)
    if t is None:
        return None
    e = _pick([e for e in t.ep_a2a if e.phase == phase and e.comm_backend == comm_backend], backend)
    if e is None:
        return None
    return interp_loglog_time(e.num_tokens, e.latency_us, max(num_tokens, 1.0)) * 1e-6
