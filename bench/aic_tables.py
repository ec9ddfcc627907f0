"""Derive rigopt's kernel efficiency tables from NVIDIA's AIConfigurator performance database.

    python bench/aic_tables.py [--out DIR] [--date YYYY-MM-DD]     # write hardware/kernels/<system>.json
    python bench/aic_tables.py --summary                           # print the shipped tables (no package needed)

Generation needs `aiconfigurator-core==0.12.0` (Apache-2.0, PyPI) installed in the running interpreter, with its
own dependencies (pandas, pyarrow); rigopt never imports it at run time. The package is found with importlib;
only derived numbers are written, each file with the package's name, version, paths and license notice.

What the package's loader says about its data (aiconfigurator_core/sdk/operations/*.py, perf_database.py,
performance_result.py; the parquet parsing itself lives in the package's compiled engine):
- `latency` is milliseconds per call of one op on one GPU (performance_result.py: "latency: milliseconds").
- GEMM rows are (m, n, k) = (tokens, output features, input features) of one linear layer shard.
- attention rows: `num_heads`/`num_key_value_heads` are per GPU; for generation the KV length is `isl + step`
  (the package's generation-attention loader: `s = s + step`); context rows have step 0 and `isl` tokens each.
- MoE rows: `num_tokens` tokens enter the layer, each routed to `topk` of `num_experts` experts; the GPU holds
  num_experts / moe_ep_size experts, each with inter_size / moe_tp_size intermediate columns.
- communication `message_size` is an element count (perf_database.py factors it "into x * per_token_elements";
  models pass tokens x hidden); bytes = elements x dtype size (half/bfloat16 2 B, int8 1 B).

Peaks (FLOP/s per dtype, HBM bytes/s) are rigopt's own, from hardware/accelerators.yaml, so that
efficiency x rigopt peak reproduces the measured time; the package's system spec peaks are recorded beside them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DEFAULT = ROOT / "hardware" / "kernels"
PACKAGE = "aiconfigurator-core"
PACKAGE_VERSION = "0.12.0"
FORMAT = "rigopt.kernel-tables/1"

# AIConfigurator system folder -> rigopt accelerator key
SYSTEMS = {
    "h100_sxm": "h100-sxm",
    "h200_sxm": "h200-sxm",
    "b200_sxm": "b200",
    "b300_sxm": "b300",
    "gb200": "gb200",
    "gb300": "gb300",
    "l40s": "l40s",
    "rtx_pro_6000_server": "rtx-pro-6000",
    "a100_sxm": "a100-80gb-sxm",
}
PREFERRED = ("vllm", "sglang")  # engine backends kept when present; trtllm only when neither has the table
FALLBACK = ("trtllm",)

NOTICE = ("Derived from the performance database of NVIDIA AIConfigurator (PyPI package aiconfigurator-core "
          "0.12.0, folder aiconfigurator_core/systems/). Copyright (c) 2025-2026 NVIDIA CORPORATION & AFFILIATES. "
          "All rights reserved. SPDX-License-Identifier: Apache-2.0 (package metadata License-Expression: "
          "Apache-2.0; SPDX headers of the package's files). Licensed under the Apache License, Version 2.0, "
          "http://www.apache.org/licenses/LICENSE-2.0. Modified: raw per-op latencies were reduced to efficiency "
          "and bandwidth tables by rigopt's bench/aic_tables.py; no code or raw table of the package is included.")

# GEMM dtypes: AIC name -> (rigopt name, peak field, bytes per weight incl. scales)
GEMM_DTYPES = {
    "bfloat16": ("bf16", "bf16_flops_per_s", 2.0),
    "fp8": ("fp8", "fp8_flops_per_s", 1.0),              # per-tensor scale
    "fp8_block": ("fp8_block", "fp8_flops_per_s", 1.0 + 4.0 / (128 * 128)),  # fp32 scale per 128x128 block
    "nvfp4": ("nvfp4", "fp4_flops_per_s", 0.5 + 1.0 / 16),  # e2m1 + one fp8 scale per 16
}
# MoE dtypes: AIC name -> (rigopt name, peak field (math precision), bytes per expert weight incl. scales)
MOE_DTYPES = {
    "bfloat16": ("bf16", "bf16_flops_per_s", 2.0),
    "fp8": ("fp8", "fp8_flops_per_s", 1.0),
    "fp8_block": ("fp8_block", "fp8_flops_per_s", 1.0 + 4.0 / (128 * 128)),
    "nvfp4": ("nvfp4", "fp4_flops_per_s", 0.5 + 1.0 / 16),
    "w4a16_mxfp4": ("mxfp4_w4a16", "bf16_flops_per_s", 0.5 + 1.0 / 32),  # e8m0 scale per 32, 16-bit math
    "int4_wo": ("int4_w4a16", "bf16_flops_per_s", 0.5 + 2.0 / 128),     # fp16 scale per group of 128
    "w4a8_mxfp4_mxfp8": ("mxfp4_w4a8", "fp8_flops_per_s", 0.5 + 1.0 / 32),
}
KV_BYTES = {"bfloat16": 2.0, "fp8": 1.0}
KV_NAMES = {"bfloat16": "bf16", "fp8": "fp8"}
COMM_BYTES = {"half": 2.0, "bfloat16": 2.0, "int8": 1.0}

# Representative shape bands
GEMM_NK_RANGE = (2048, 16384)      # N and K of the aggregated GEMM curve (per-GPU shards of 4K-16K-wide models)
GEMM_BW_M_MAX = 16                 # weight-streaming (bandwidth) regime of the per-weight-size table
HEAD_DIM = 128                     # decode/context attention: head_dim 128, no sliding window
GQA_MAX = 8                        # decode attention: query heads per KV head <= 8
CTX_MIN_HEADS = 8                  # context attention: at least 8 query heads per GPU
MLA_KV_DIM = 512 + 64              # DeepSeek MLA latent cache per token: kv_lora_rank 512 + rope 64
MLA_HEADS = (16, 32, 64, 128)      # per-GPU heads kept (DeepSeek-V3 at TP8, TP4, TP2, TP1)
MOE_TPE_GRID = [2.0 ** e for e in range(-6, 15)]  # tokens per expert, 1/64 .. 16384
MOE_MIN_CONFIGS = 3
MOE_NON_GATED = {(2688, 1856)}     # (hidden, inter) of relu^2 (non-gated) experts: 2 matrices, excluded
A2A_SHAPE = (7168, 8, 256)
READ_DEFAULTS = {"window_size": 0, "beam_width": 1, "step": 0}  # the package loader's defaults for absent columns
# bandwidth efficiencies above HBM peak (L2-resident working sets) are capped; DeepEP tables kept for a
# DeepSeek-V3-like shape (hidden, topk, experts)
EFF_CAP = 1.0


def sig(x: float, digits: int = 4) -> float:
    """Round to `digits` significant digits (deterministic text; the tables are not more precise than that)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def _version_key(v: str):
    from packaging.version import InvalidVersion, Version
    try:
        return (1, Version(v))
    except InvalidVersion:
        return (0, v)


# ---------------------------------------------------------------- package access

def package_root() -> Path:
    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"error: {PACKAGE} is not installed in this interpreter "
                         f"(pip install {PACKAGE}=={PACKAGE_VERSION})")
    root = Path(list(spec.submodule_search_locations)[0])
    from importlib.metadata import version
    v = version(PACKAGE)
    if v != PACKAGE_VERSION:
        raise SystemExit(f"error: {PACKAGE} {v} is installed; these tables are pinned to {PACKAGE_VERSION}")
    return root


class Pkg:
    def __init__(self, root: Path):
        self.root = root
        self.systems = root / "systems"

    def rel(self, p: Path) -> str:
        return "aiconfigurator_core/" + p.relative_to(self.root).as_posix()

    def latest(self, system: str, family: str, table: str, backends) -> list[tuple[str, str, Path]]:
        """(backend, version, path) of the newest version of each backend that ships `table`."""
        out = []
        for be in backends:
            d = self.systems / "data" / system / family / be
            if not d.is_dir():
                continue
            vers = sorted((p.name for p in d.iterdir() if (p / f"{table}.parquet").is_file()), key=_version_key)
            if vers:
                out.append((be, vers[-1], d / vers[-1] / f"{table}.parquet"))
        return out

    def pick(self, system: str, family: str, table: str):
        got = self.latest(system, family, table, PREFERRED)
        return got or self.latest(system, family, table, FALLBACK)

    def status(self, path: Path) -> str:
        import yaml
        meta = path.parent / "collection_meta.yaml"
        if not meta.is_file():
            return "unknown"
        doc = yaml.safe_load(meta.read_text(encoding="utf-8")) or {}
        t = (doc.get("tables") or {}).get(path.stem) or {}
        return str(t.get("status", doc.get("status", "unknown")))

    def read(self, path: Path, columns: list[str]):
        """Read `columns`; older tables lack some (A100: no window_size/beam_width): filled with their defaults."""
        import pandas as pd
        import pyarrow.parquet as pq
        have = set(pq.read_schema(path).names)
        df = pd.read_parquet(path, columns=[c for c in columns if c in have])
        for c in columns:
            if c not in have:
                if c not in READ_DEFAULTS:
                    raise KeyError(f"{path}: column {c} missing")
                df[c] = READ_DEFAULTS[c]
        return df


def _head(pkg: Pkg, backend: str, version: str, path: Path) -> dict:
    return {"backend": backend, "backend_version": version, "path": pkg.rel(path), "status": pkg.status(path)}


def _interp_loglin(xs: list[float], ys: list[float], x: float) -> float | None:
    """Linear in log(x) inside [xs[0], xs[-1]]; None outside (no extrapolation while aggregating)."""
    if x < xs[0] * (1 - 1e-9) or x > xs[-1] * (1 + 1e-9):
        return None
    for i in range(len(xs) - 1):
        if xs[i] <= x <= xs[i + 1]:
            if xs[i + 1] == xs[i]:
                return ys[i]
            t = (math.log(x) - math.log(xs[i])) / (math.log(xs[i + 1]) - math.log(xs[i]))
            return ys[i] + t * (ys[i + 1] - ys[i])
    return ys[-1] if abs(x - xs[-1]) <= xs[-1] * 1e-9 else ys[0]


def _quantile(vals: list[float], q: float) -> float:
    import numpy as np
    return float(np.quantile(np.asarray(vals, dtype=float), q))


# ---------------------------------------------------------------- per-row formulas (scalars or pandas Series)

def gemm_flop_efficiency(m, n, k, latency_ms, peak_flops_per_s):
    """2*M*N*K FLOPs in `latency_ms` as a fraction of the dtype's peak."""
    return 2.0 * m * n * k / (latency_ms * 1e-3) / peak_flops_per_s


def gemm_bw_efficiency(m, n, k, latency_ms, weight_bytes_per_param, hbm_bw_bytes_per_s):
    """Weights (N*K at the dtype's bytes per param) plus bf16 activations in and out, as a fraction of HBM peak."""
    return (n * k * weight_bytes_per_param + 2.0 * m * k + 2.0 * m * n) / (latency_ms * 1e-3) / hbm_bw_bytes_per_s


GEMM_ANCHOR = (4096, 8192, 8192)   # (M, N, K) of the raw row each GEMM table quotes, for traceability


# ---------------------------------------------------------------- tables

def gemm_tables(pkg: Pkg, system: str, peaks: dict) -> tuple[list, list]:
    curves, bw_tables = [], []
    for be, ver, path in pkg.pick(system, "gemm", "gemm_perf"):
        df = pkg.read(path, ["kernel_source", "gemm_dtype", "m", "n", "k", "latency"])
        for aic_dtype, (name, peak_key, bpw) in GEMM_DTYPES.items():
            d = df[df.gemm_dtype == aic_dtype]
            peak = peaks.get(peak_key)
            if d.empty or not peak:
                continue
            kernels = sorted(d.kernel_source.unique().tolist())
            best = d.sort_values("latency", kind="stable").groupby(["m", "n", "k"], as_index=False).first()
            d = best  # best kernel per shape
            d = d.assign(eff=gemm_flop_efficiency(d.m, d.n, d.k, d.latency, peak),
                         bw=gemm_bw_efficiency(d.m, d.n, d.k, d.latency, bpw, peaks["hbm_bw_bytes_per_s"]))
            am, an, ak = GEMM_ANCHOR
            arow = d[(d.m == am) & (d.n == an) & (d.k == ak)]
            anchor = None
            if len(arow) == 1:
                r = arow.iloc[0]
                anchor = {"m_tokens": am, "n": an, "k": ak, "kernel": str(r.kernel_source),
                          "latency_us": sig(float(r.latency) * 1e3, 8),
                          "flop_efficiency": sig(float(r.eff)), "bw_efficiency": sig(float(r.bw))}
            lo, hi = GEMM_NK_RANGE
            rep = d[(d.n >= lo) & (d.n <= hi) & (d.k >= lo) & (d.k <= hi)]
            if rep.empty:
                continue
            g = rep.groupby("m")
            ms = sorted(int(m) for m in g.groups)
            n_shapes = int(rep.groupby(["n", "k"]).ngroups)
            effs = {m: rep.eff[rep.m == m].tolist() for m in ms}
            bws = {m: rep.bw[rep.m == m].tolist() for m in ms}
            curves.append({**_head(pkg, be, ver, path), "dtype": name, "aic_dtype": aic_dtype, "peak": peak_key,
                           "weight_bytes_per_param": sig(bpw, 6), "kernels": kernels,
                           "shapes": f"N and K in {lo}..{hi}: {n_shapes} (N, K) shapes; best kernel per shape",
                           "m_tokens": ms,
                           "flop_efficiency_median": [sig(_quantile(effs[m], 0.5)) for m in ms],
                           "flop_efficiency_p25": [sig(_quantile(effs[m], 0.25)) for m in ms],
                           "flop_efficiency_p75": [sig(_quantile(effs[m], 0.75)) for m in ms],
                           "bw_efficiency_median": [sig(_quantile(bws[m], 0.5)) for m in ms],
                           "anchor": anchor})
            # weight-streaming efficiency vs weight size (all shapes, M <= GEMM_BW_M_MAX)
            small = d[d.m <= GEMM_BW_M_MAX]
            wb = (small.n * small.k * bpw).map(lambda b: int(round(math.log2(b))))
            rows = []
            for e in sorted(set(wb.tolist())):
                vals = small.bw[wb == e].tolist()
                if len(vals) >= 8:
                    rows.append((2.0 ** e, _quantile(vals, 0.5), len(vals)))
            if len(rows) >= 2:
                bw_tables.append({**_head(pkg, be, ver, path), "dtype": name, "aic_dtype": aic_dtype,
                                  "m_tokens_max": GEMM_BW_M_MAX,
                                  "weight_bytes": [sig(r[0], 6) for r in rows],
                                  "bw_efficiency_median": [sig(r[1]) for r in rows],
                                  "n_points": [r[2] for r in rows]})
    return curves, bw_tables


def _rows_by(d, row_key: str, x_key: str, v_key: str, agg_min_points: int = 1):
    """Ragged grid: one row per value of `row_key`, each with its own increasing x grid (median of v)."""
    out = []
    for r in sorted(d[row_key].unique().tolist()):
        sub = d[d[row_key] == r]
        xs, vs, ns = [], [], []
        for x in sorted(sub[x_key].unique().tolist()):
            vals = sub[v_key][sub[x_key] == x].tolist()
            if len(vals) >= agg_min_points:
                xs.append(int(x))
                vs.append(sig(_quantile(vals, 0.5)))
                ns.append(len(vals))
        if len(xs) >= 2:
            out.append((int(r), xs, vs, ns))
    return out


def decode_attention_tables(pkg: Pkg, system: str, peaks: dict) -> list:
    out = []
    cols = ["kernel_source", "batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "beam_width",
            "attn_dtype", "kv_cache_dtype", "step", "window_size", "latency"]
    for be, ver, path in pkg.pick(system, "attention", "generation_attention_perf"):
        df = pkg.read(path, cols)
        df = df[(df.head_dim == HEAD_DIM) & (df.window_size == 0) & (df.beam_width == 1)
                & (df.attn_dtype == "bfloat16")
                & (df.num_heads >= df.num_key_value_heads)
                & (df.num_heads <= GQA_MAX * df.num_key_value_heads)]
        for kv in ("bfloat16", "fp8"):
            d = df[df.kv_cache_dtype == kv]
            if d.empty:
                continue
            kernels = sorted(d.kernel_source.unique().tolist())
            d = d.assign(kv_len=d.isl + d.step)
            d = d.groupby(["batch_size", "kv_len", "num_heads", "num_key_value_heads"], as_index=False).latency.min()
            heads = sorted({(int(a), int(b)) for a, b in zip(d.num_heads, d.num_key_value_heads, strict=True)})
            kv_bytes = d.batch_size * d.kv_len * 2.0 * d.num_key_value_heads * HEAD_DIM * KV_BYTES[kv]
            d = d.assign(bw=kv_bytes / (d.latency * 1e-3) / peaks["hbm_bw_bytes_per_s"])
            rows = _rows_by(d, "batch_size", "kv_len", "bw")
            out.append({**_head(pkg, be, ver, path), "kv_dtype": KV_NAMES[kv], "kernels": kernels,
                        "head_dim": HEAD_DIM, "window": 0,
                        "heads": f"median over {len(heads)} (query heads, KV heads) per GPU with "
                                 f"1 <= q/kv <= {GQA_MAX}",
                        "rows": [{"batch": b, "kv_len_tokens": xs, "bw_efficiency_median": vs}
                                 for b, xs, vs, _ in rows]})
    return out


def context_attention_tables(pkg: Pkg, system: str, peaks: dict) -> list:
    out = []
    cols = ["kernel_source", "batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "beam_width",
            "attn_dtype", "kv_cache_dtype", "step", "window_size", "latency"]
    for be, ver, path in pkg.pick(system, "attention", "context_attention_perf"):
        df = pkg.read(path, cols)
        d = df[(df.head_dim == HEAD_DIM) & (df.window_size == 0) & (df.beam_width == 1)
               & (df.attn_dtype == "bfloat16") & (df.kv_cache_dtype == "bfloat16") & (df.step == 0)
               & (df.num_heads >= CTX_MIN_HEADS) & (df.isl >= 16)]
        if d.empty:
            continue
        kernels = sorted(d.kernel_source.unique().tolist())
        d = d.groupby(["batch_size", "isl", "num_heads", "num_key_value_heads"], as_index=False).latency.min()
        flops = 2.0 * d.batch_size * d.num_heads * HEAD_DIM * d.isl.astype(float) ** 2  # causal QK^T + PV
        d = d.assign(eff=flops / (d.latency * 1e-3) / peaks["bf16_flops_per_s"])
        rows = _rows_by(d, "batch_size", "isl", "eff")
        out.append({**_head(pkg, be, ver, path), "kv_dtype": "bf16", "kernels": kernels, "head_dim": HEAD_DIM,
                    "window": 0, "peak": "bf16_flops_per_s",
                    "heads": f"median over (query heads, KV heads) per GPU with >= {CTX_MIN_HEADS} query heads",
                    "rows": [{"batch": b, "isl_tokens": xs, "flop_efficiency_median": vs} for b, xs, vs, _ in rows]})
    return out


def mla_tables(pkg: Pkg, system: str, peaks: dict) -> tuple[list, list]:
    dec, ctx = [], []
    cols = ["kernel_source", "mla_dtype", "kv_cache_dtype", "num_heads", "batch_size", "isl", "step", "latency"]
    for be, ver, path in pkg.pick(system, "mla", "generation_mla_perf"):
        df = pkg.read(path, cols)
        df = df[(df.mla_dtype == "bfloat16") & df.num_heads.isin(MLA_HEADS)]
        for kv in ("bfloat16", "fp8"):
            d0 = df[df.kv_cache_dtype == kv]
            for h in MLA_HEADS:
                d = d0[d0.num_heads == h]
                if d.empty:
                    continue
                d = d.assign(kv_len=d.isl + d.step)
                d = d.groupby(["batch_size", "kv_len"], as_index=False).latency.min()
                t = d.latency * 1e-3
                d = d.assign(bw=d.batch_size * d.kv_len * MLA_KV_DIM * KV_BYTES[kv] / t / peaks["hbm_bw_bytes_per_s"])
                rb = _rows_by(d, "batch_size", "kv_len", "bw")
                dec.append({**_head(pkg, be, ver, path), "kv_dtype": KV_NAMES[kv], "num_heads_per_gpu": h,
                            "kernels": sorted(df.kernel_source.unique().tolist()),
                            "rows": [{"batch": b, "kv_len_tokens": xs, "bw_efficiency_median": vs}
                                     for b, xs, vs, _ in rb]})
    for be, ver, path in pkg.pick(system, "mla", "context_mla_perf"):
        df = pkg.read(path, cols)
        df = df[(df.mla_dtype == "bfloat16") & (df.kv_cache_dtype == "bfloat16") & df.num_heads.isin(MLA_HEADS)
                & (df.isl >= 16)]
        for h in MLA_HEADS:
            d = df[df.num_heads == h]
            if d.empty:
                continue
            d = d.groupby(["batch_size", "isl"], as_index=False).latency.min()
            flops = d.batch_size * h * d.isl.astype(float) ** 2 * (192 + 128)  # causal; qk head 192, v head 128
            d = d.assign(eff=flops / (d.latency * 1e-3) / peaks["bf16_flops_per_s"])
            rows = _rows_by(d, "batch_size", "isl", "eff")
            ctx.append({**_head(pkg, be, ver, path), "kv_dtype": "bf16", "num_heads_per_gpu": h,
                        "kernels": sorted(df.kernel_source.unique().tolist()), "peak": "bf16_flops_per_s",
                        "rows": [{"batch": b, "isl_tokens": xs, "flop_efficiency_median": vs}
                                 for b, xs, vs, _ in rows]})
    return dec, ctx


def moe_tables(pkg: Pkg, system: str, peaks: dict) -> list:
    out = []
    cols = ["kernel_source", "moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk", "num_experts",
            "moe_tp_size", "moe_ep_size", "distribution", "latency"]
    for be, ver, path in pkg.pick(system, "moe", "moe_perf"):
        df = pkg.read(path, cols)
        df = df[df.distribution == "balanced"]
        for aic_dtype, (name, peak_key, bpw) in MOE_DTYPES.items():
            peak = peaks.get(peak_key)
            d = df[df.moe_dtype == aic_dtype]
            if d.empty or not peak:
                continue
            kernels = sorted(d.kernel_source.unique().tolist())
            keys = ["hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size", "moe_ep_size"]
            d = d.groupby(keys + ["num_tokens"], as_index=False).latency.min()
            per_cfg_f: list[tuple[list, list]] = []
            per_cfg_b: list[tuple[list, list]] = []
            for cfg, sub in d.groupby(keys):
                h, inter, k, E, tp, ep = (int(x) for x in cfg)
                if (h, inter) in MOE_NON_GATED or inter % tp or E % ep:
                    continue
                sub = sub.sort_values("num_tokens")
                T = sub.num_tokens.astype(float)
                t = sub.latency * 1e-3
                il, el = inter / tp, E / ep
                flops = 2.0 * (T * k / ep) * 3.0 * h * il
                touched = (T * k / ep).clip(lower=1.0).clip(upper=el)  # balanced routing
                wbytes = touched * 3.0 * h * il * bpw
                tpe = (T * k / E).tolist()
                if len(tpe) < 2:
                    continue
                per_cfg_f.append((tpe, (flops / t / peak).tolist()))
                per_cfg_b.append((tpe, (wbytes / t / peaks["hbm_bw_bytes_per_s"]).tolist()))
            grid, fe, be_, nc = [], [], [], []
            for x in MOE_TPE_GRID:
                fv = [v for xs, ys in per_cfg_f if (v := _interp_loglin(xs, ys, x)) is not None]
                bv = [v for xs, ys in per_cfg_b if (v := _interp_loglin(xs, ys, x)) is not None]
                if len(fv) >= MOE_MIN_CONFIGS:
                    grid.append(x)
                    fe.append(sig(_quantile(fv, 0.5)))
                    be_.append(sig(_quantile(bv, 0.5)))
                    nc.append(len(fv))
            if len(grid) >= 2:
                out.append({**_head(pkg, be, ver, path), "dtype": name, "aic_dtype": aic_dtype, "peak": peak_key,
                            "weight_bytes_per_param": sig(bpw, 6), "kernels": kernels,
                            "configs": f"{len(per_cfg_f)} balanced-routing (hidden, inter, topk, experts, TP, EP) "
                                       "configs, gated experts (3 matrices); best kernel per point",
                            "tokens_per_expert": [sig(x, 6) for x in grid],
                            "flop_efficiency_median": fe, "bw_efficiency_median": be_, "n_configs": nc})
    return out


def _comm_rows(d, size_bytes: float, bus_factor):
    """One row per GPU count. Latency is made nondecreasing in message size (suffix minimum: a message is never
    slower than a larger one can be sent), which removes single-point spikes; the row counts how many it lowered."""
    rows = []
    for n in sorted(d.num_gpus.unique().tolist()):
        sub = d[d.num_gpus == n].groupby("message_size", as_index=False).latency.min().sort_values("message_size")
        b = (sub.message_size * size_bytes).tolist()
        raw = sub.latency.tolist()
        if len(b) < 2:
            continue
        lat, lo = [], math.inf
        for x in reversed(raw):
            lo = min(lo, x)
            lat.append(lo)
        lat.reverse()
        rows.append({"n_gpus": int(n), "message_bytes": [int(x) for x in b],
                     "latency_us": [sig(x * 1e3) for x in lat],
                     "bus_bw_bytes_per_s": [sig(bus_factor(n) * x / (y * 1e-3)) for x, y in zip(b, lat, strict=True)],
                     "lowered_points": sum(1 for x, y in zip(raw, lat, strict=True) if y < x)})
    return rows


def comm_tables(pkg: Pkg, system: str, spec: dict) -> tuple[list, list, list]:
    ar, a2a, ep = [], [], []
    ar_bus = lambda n: 2.0 * (n - 1) / n  # noqa: E731  nccl-tests bus bandwidth factors
    a2a_bus = lambda n: (n - 1) / n  # noqa: E731
    for be, ver, path in pkg.pick(system, "comm", "custom_allreduce_perf"):
        df = pkg.read(path, ["kernel_source", "allreduce_dtype", "num_gpus", "message_size", "latency"])
        d = df[df.kernel_source.str.contains("graph", case=False) & (df.allreduce_dtype == "bfloat16")]
        if d.empty:
            continue
        ar.append({**_head(pkg, be, ver, path), "impl": "custom", "kernels": sorted(d.kernel_source.unique().tolist()),
                   "dtype": "bf16", "rows": _comm_rows(d, 2.0, ar_bus)})
    nv = str((spec.get("misc") or {}).get("nccl_version") or "")
    nccl_dir = pkg.systems / "data" / system / "comm" / "nccl"
    path = nccl_dir / nv / "nccl_perf.parquet"
    if not path.is_file() and nccl_dir.is_dir():  # spec names no (or a missing) version: newest
        vers = sorted((p.name for p in nccl_dir.iterdir() if (p / "nccl_perf.parquet").is_file()), key=_version_key)
        path = nccl_dir / vers[-1] / "nccl_perf.parquet" if vers else path
    if path.is_file():
        df = pkg.read(path, ["version", "op_name", "nccl_dtype", "num_gpus", "message_size", "latency"])
        df = df[df.nccl_dtype == "half"]
        head = {**_head(pkg, "nccl", path.parent.name, path), "impl": "nccl", "dtype": "bf16",
                "rows_version": ",".join(sorted(df.version.unique().tolist())),
                "chosen": "nccl_version of the package's system spec" if path.parent.name == nv else "newest"}
        d = df[df.op_name == "all_reduce"]
        if not d.empty:
            ar.append({**head, "rows": _comm_rows(d, 2.0, ar_bus)})
        d = df[df.op_name == "alltoall"]
        if not d.empty:
            a2a.append({**head, "rows": _comm_rows(d, 2.0, a2a_bus)})
    for be, ver, path in pkg.pick(system, "comm", "moe_a2a_perf"):
        df = pkg.read(path, ["comm_backend", "phase", "ep_size", "node_num", "hidden_size", "topk", "num_experts",
                             "num_tokens", "sms", "latency"])
        h, k, E = A2A_SHAPE
        df = df[(df.hidden_size == h) & (df.topk == k) & (df.num_experts == E)]
        for (cb, ph, eps, nn), sub in df.groupby(["comm_backend", "phase", "ep_size", "node_num"]):
            sub = sub.groupby("num_tokens", as_index=False).latency.min().sort_values("num_tokens")
            if len(sub) < 2:
                continue
            ep.append({**_head(pkg, be, ver, path), "comm_backend": str(cb), "phase": str(ph), "ep_size": int(eps),
                       "nodes": int(nn), "hidden": h, "topk": k, "experts": E,
                       "num_tokens": [int(x) for x in sub.num_tokens],
                       "latency_us": [sig(x) for x in sub.latency]})  # moe_a2a latency column is microseconds
    return ar, a2a, ep


# ---------------------------------------------------------------- driver

def load_peaks(key: str, spec: dict) -> dict:
    import yaml
    accs = {a["key"]: a for a in yaml.safe_load((ROOT / "hardware" / "accelerators.yaml").read_text(encoding="utf-8"))}
    a = accs[key]
    g = spec.get("gpu") or {}
    f = lambda v: float(v) if v else None  # noqa: E731
    return {"source": f"hardware/accelerators.yaml (key {key}); aic_spec_*: the package's system spec",
            "bf16_flops_per_s": f(a["bf16_flops"]), "fp8_flops_per_s": f(a.get("fp8_flops")),
            "fp4_flops_per_s": f(a.get("fp4_flops")), "hbm_bw_bytes_per_s": f(a["memory_bw_bytes_per_s"]),
            "aic_spec_bf16_flops_per_s": f(g.get("bfloat16_tc_flops")),
            "aic_spec_fp8_flops_per_s": f(g.get("fp8_tc_flops")),
            "aic_spec_fp4_flops_per_s": f(g.get("fp4_tc_flops")),
            "aic_spec_hbm_bw_bytes_per_s": f(g.get("mem_bw"))}


CONVENTIONS = {
    "latency": "AIC latency is ms per op call on one GPU; latency_us fields are microseconds",
    "gemm.flop_efficiency": "2*M*N*K / latency / peak FLOP/s of the dtype (peaks.*)",
    "gemm.anchor": "one raw row of the package (M, N, K, fastest kernel, latency) and its efficiencies, for tracing",
    "gemm.bw_efficiency": "(N*K*weight_bytes_per_param + 2*M*K + 2*M*N) / latency / peaks.hbm_bw_bytes_per_s",
    "gemm_weight_bw": "median bw_efficiency over all shapes with M <= m_tokens_max, binned by weight bytes (N*K*bytes "
                      "per param, nearest power of 2)",
    "decode_attention.bw_efficiency": "batch*kv_len*2*kv_heads*head_dim*kv_bytes / latency / hbm bw; kv_len = isl+step",
    "context_attention.flop_efficiency": "2*batch*q_heads*head_dim*isl^2 (causal QK^T and PV) / latency / bf16 peak",
    "mla_decode.bw_efficiency": f"batch*kv_len*{MLA_KV_DIM}*kv_bytes / latency / hbm bw (DeepSeek latent cache); the "
                                "FLOP efficiency of the same call (absorbed MLA, heads*2*(576+512) FLOPs per KV row) "
                                "is "
                                "bw_eff * hbm_bw * heads*2*(576+512) / (576*kv_bytes) / bf16 peak",
    "mla_context.flop_efficiency": "batch*heads*isl^2*(192+128) (causal, qk head 192, v head 128) / latency / "
                                   "bf16 peak",
    "moe.flop_efficiency": "2*(tokens*topk/EP)*3*hidden*(inter/TP) / latency / peak of the math dtype",
    "moe.bw_efficiency": "touched local experts (balanced: min(experts/EP, max(1, tokens*topk/EP))) * "
                         "3*hidden*(inter/TP)"
                         "*weight_bytes_per_param / latency / hbm bw",
    "moe.tokens_per_expert": "tokens*topk/experts; each config interpolated (log-linear) onto the grid, then median",
    "allreduce.bus_bw": "2*(n-1)/n * message_bytes / latency (nccl-tests convention); custom = engine custom "
                        "all-reduce under CUDA graphs",
    "alltoall.bus_bw": "(n-1)/n * message_bytes / latency",
    "ep_a2a": "DeepEP dispatch/combine latency (us) vs tokens per rank, fastest SM setting",
    "aggregation": "median over shapes/configs; for several kernels of one point the fastest is kept",
    "suspect": "true where a table contradicts a sibling table of the same system (see its notes); lookups skip it "
               "unless its backend is asked for",
    "lowered_points": "collective latencies made nondecreasing in message size (suffix minimum); count lowered",
    "capped_points": "efficiency values above 1.0 (L2-resident working sets measured faster than HBM peak) capped "
                     "at 1.0; raw_max_efficiency is the largest value before capping",
}


def _cap_efficiencies(table: dict) -> dict:
    """Cap efficiency values at EFF_CAP and record how many were capped and the largest raw value.

    The collector re-runs one op on the same buffers, so a working set that fits in L2 (L40S 96 MB, RTX PRO 6000
    128 MB) is read from cache and can exceed HBM peak; in serving, weights and KV of all layers stream from HBM."""
    n, raw = 0, 0.0

    def walk(o):
        nonlocal n, raw
        if isinstance(o, dict):
            for k, v in o.items():
                if "efficiency" in k and isinstance(v, list):
                    raw = max([raw] + v)
                    n += sum(1 for x in v if x > EFF_CAP)
                    o[k] = [min(x, EFF_CAP) for x in v]
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(table)
    if raw:
        table["capped_points"] = n
        table["raw_max_efficiency"] = sig(raw)
    return table


def _flag_suspects(doc: dict) -> None:
    """Mark tables whose numbers contradict a sibling table of the same system (suspect: true, with a note); the
    lookups in optimizer/estimate/kernels.py skip suspect tables unless asked for that backend."""
    def at(xs, ys, x):
        return ys[min(range(len(xs)), key=lambda i: abs(xs[i] - x))]

    for g in doc["gemm"]:  # small-M floor far above another engine's for the same dtype
        others = [o for o in doc["gemm"] if o["dtype"] == g["dtype"] and o is not g]
        for o in others:
            a, b = at(g["m_tokens"], g["flop_efficiency_median"], 1), at(o["m_tokens"], o["flop_efficiency_median"], 1)
            if a < 0.25 * b:
                g["suspect"] = True
                g["notes"] = (f"M=1 efficiency {a:.3g} is {b / a:.0f}x below {o['backend']} {o['backend_version']}'s "
                              f"{b:.3g}: a fixed latency floor of this backend's kernel path as collected")
    for t in doc["moe"]:  # per-tensor FP8 experts far below block-scaled FP8 experts of the same backend
        for o in doc["moe"]:
            if t["dtype"] == "fp8" and o["dtype"] == "fp8_block" and o["backend"] == t["backend"]:
                a, b = max(t["bw_efficiency_median"]), max(o["bw_efficiency_median"])
                if a < 0.4 * b:
                    t["suspect"] = True
                    t["notes"] = (f"best bandwidth efficiency {a:.3g} vs {b:.3g} for fp8_block experts of the same "
                                  f"backend ({', '.join(t['kernels'])}): this per-tensor FP8 MoE path as collected")
    for t in doc["mla_decode"]:  # fp8 KV far slower than bf16 KV of the same backend and heads
        for o in doc["mla_decode"]:
            if (t["kv_dtype"] == "fp8" and o["kv_dtype"] == "bf16" and o["backend"] == t["backend"]
                    and o["num_heads_per_gpu"] == t["num_heads_per_gpu"]):
                a = max(max(r["bw_efficiency_median"]) for r in t["rows"])
                b = max(max(r["bw_efficiency_median"]) for r in o["rows"])
                if a < 0.25 * b:
                    t["suspect"] = True
                    t["notes"] = (f"best fp8-KV bandwidth efficiency {a:.3g} vs {b:.3g} with bf16 KV: this backend's "
                                  "fp8 MLA decode path is far slower than its bf16 one as collected")


def build(pkg: Pkg, system: str, key: str, date: str) -> dict:
    import yaml
    spec_path = pkg.systems / f"{system}.yaml"
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    peaks = load_peaks(key, spec)
    gemm, gemm_bw = gemm_tables(pkg, system, peaks)
    mla_dec, mla_ctx = mla_tables(pkg, system, peaks)
    ar, a2a, ep = comm_tables(pkg, system, spec)
    device = None
    for _, _, p in pkg.pick(system, "gemm", "gemm_perf"):
        device = str(pkg.read(p, ["device"]).device.iloc[0])
        break
    doc = {
        "format": FORMAT,
        "system": key,
        "aic_system": system,
        "device": device,
        "source": {"package": PACKAGE, "version": PACKAGE_VERSION,
                   "url": f"https://pypi.org/project/{PACKAGE}/{PACKAGE_VERSION}/",
                   "path": f"aiconfigurator_core/systems/data/{system}",
                   "system_spec": pkg.rel(spec_path)},
        "license": "Apache-2.0",
        "notice": NOTICE,
        "generated_by": "bench/aic_tables.py",
        "date": date,
        "peaks": peaks,
        "conventions": CONVENTIONS,
        "gemm": [_cap_efficiencies(t) for t in gemm],
        "gemm_weight_bw": [_cap_efficiencies(t) for t in gemm_bw],
        "decode_attention": [_cap_efficiencies(t) for t in decode_attention_tables(pkg, system, peaks)],
        "context_attention": [_cap_efficiencies(t) for t in context_attention_tables(pkg, system, peaks)],
        "mla_decode": [_cap_efficiencies(t) for t in mla_dec],
        "mla_context": [_cap_efficiencies(t) for t in mla_ctx],
        "moe": [_cap_efficiencies(t) for t in moe_tables(pkg, system, peaks)],
        "allreduce": ar,
        "alltoall": a2a,
        "ep_a2a": ep,
    }
    _flag_suspects(doc)
    return doc


def _emit(obj, ind: str) -> str:
    """Lists of numbers and small objects inline, everything else one item per line: compact and diff-friendly."""
    compact = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    scalar = lambda v: not isinstance(v, (dict, list))  # noqa: E731
    if scalar(obj) or (isinstance(obj, list) and all(scalar(v) for v in obj)):
        return compact
    if isinstance(obj, dict) and len(compact) <= 120 and all(
            scalar(v) or (isinstance(v, list) and all(scalar(x) for x in v)) for v in obj.values()):
        return compact
    inner = ind + " "
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}:{_emit(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + ind + "}"
    return "[\n" + ",\n".join(inner + _emit(v, inner) for v in obj) + "\n" + ind + "]"


def dumps(doc: dict) -> str:
    """Stable JSON text (the test compares it byte for byte with a fresh run)."""
    return _emit(doc, "") + "\n"


def generate(out: Path, date: str, systems: list[str]) -> list[Path]:
    pkg = Pkg(package_root())
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for s in systems:
        doc = build(pkg, s, SYSTEMS[s], date)
        p = out / f"{SYSTEMS[s]}.json"
        p.write_text(dumps(doc), encoding="utf-8")
        written.append(p)
        print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)", file=sys.stderr)
    return written


# ---------------------------------------------------------------- summary (reads the shipped files only)

def summary() -> str:
    sys.path.insert(0, str(ROOT))
    from optimizer.estimate import kernels as K

    lines = []
    for key in SYSTEMS.values():
        t = K.tables(key)
        if t is None:
            lines.append(f"{key}: no kernel tables")
            continue
        lines.append(f"== {key} ({t.device}; {t.source.package} {t.source.version})")
        ms = (1, 8, 64, 512, 4096)
        lines.append("  GEMM flop eff  M=" + "".join(f"{m:>7}" for m in ms) + "   bw eff M=1")
        for dtype in ("bf16", "fp8", "fp8_block", "nvfp4"):
            for g in [g for g in t.gemm if g.dtype == dtype]:
                vals = "".join(f"{K.gemm_efficiency(key, dtype, m, backend=g.backend):7.3f}" for m in ms)
                bw = K.gemm_bw_efficiency(key, dtype, 1, backend=g.backend)
                lines.append(f"  {dtype:9s} {g.backend:6s}   {vals}   {bw:6.3f}")
        kvs = (1024, 8192, 32768, 131072)
        for a in t.decode_attention:
            if a.kv_dtype != "bf16":
                continue
            vals = "  ".join(
                f"b{b}:" + "/".join(f"{v:.2f}" if (v := K.decode_attention_bw_efficiency(key, kv, b, backend=a.backend))
                                    is not None else "-" for kv in kvs) for b in (1, 64))
            lines.append(f"  decode attn bw eff (bf16 KV, {a.backend}) kv={'/'.join(str(k) for k in kvs)}: {vals}")
        moe = []
        for dtype in ("bf16", "fp8_block", "nvfp4"):
            bw = [K.moe_bw_efficiency(key, dtype, x) for x in (0.25, 1.0)]
            fl = [K.moe_efficiency(key, dtype, x) for x in (64.0, 1024.0)]
            if bw[0] is not None:
                moe.append(f"{dtype} bw {bw[0]:.2f}/{bw[1]:.2f} flop {fl[0]:.2f}/{fl[1]:.2f}")
        if moe:
            lines.append("  MoE (bw eff at tokens/expert 0.25/1, flop eff at 64/1024): " + "; ".join(moe))
        for impl in ("custom", "nccl"):
            parts = []
            for n in (8, 4):
                v1 = K.allreduce_time_s(key, 16 * 1024, n, impl=impl)
                v2 = K.allreduce_time_s(key, 1024 * 1024, n, impl=impl)
                if v1 is not None:
                    parts.append(f"{n} GPUs: 16KB {v1 * 1e6:.1f} us, 1MB {v2 * 1e6:.1f} us")
                    break
            lines.append(f"  all-reduce {impl:6s}: " + (parts[0] if parts else "no data"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT_DEFAULT)
    ap.add_argument("--date", default=None, help="date written into the files (default today, UTC)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="AIC system folders, comma-separated")
    ap.add_argument("--summary", action="store_true", help="print the shipped tables and exit")
    a = ap.parse_args(argv)
    if a.summary:
        print(summary())
        return 0
    date = a.date or _dt.datetime.now(_dt.UTC).date().isoformat()
    systems = [s for s in a.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"error: unknown system(s) {unknown}; known: {list(SYSTEMS)}")
    generate(a.out, date, systems)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
