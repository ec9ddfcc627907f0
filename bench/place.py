"""Benchmarks for `rigopt place` (prints figures; run: python bench/place.py).

1. DeepSeek-V4-Pro, 384 experts x 61 MoE layers on 64 H200 (8x HGX-8, EP64), Zipf(1.0) loads, 32 redundant
   slots per layer: wall time (CP-SAT limited to 2 workers), max-load imbalance of the greedy EPLB-style
   baseline, rigopt and the lower bound; rigopt <= greedy on every layer; rigopt within 2% of the bound.
2. DeepSeek-V4-Flash on 2x RTX 4090 + 256 GB DDR5 (an SGLang+KTransformers hybrid input built by hand, as
   KTransformers' fork runs DeepSeek sparse attention on Ada (sm89); `cheapest` plans it the same way:
   SGLang/KTransformers, 7 of 43 expert layers' worth of GPU memory), Zipf(1.0) loads: expected decode tok/s
   with load-aware tiering vs the load-blind layer-range split; also the llama.cpp (per-layer) granularity.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from optimizer.place.inputs import PlaceInput  # noqa: E402
from optimizer.place.loads import generate  # noqa: E402
from optimizer.place.report import place  # noqa: E402


def bench_ep() -> bool:
    inp = PlaceInput(model="deepseek-v4-pro", node="hgx-h200-8", n_nodes=8, n_gpus=64, tp=8, dp=8, ep_size=64,
                     context=393216, concurrency=64, kv_dtype="fp8", headroom_bytes=10e9)
    moe = inp.resolved.spec.moe_layers
    loads = generate("zipf:1.0", len(moe), moe[0].n_routed_experts, seed=0)
    t = time.perf_counter()
    r = place(inp, loads, redundant=32, time_limit=8.0, workers=2)
    wall = time.perf_counter() - t
    e = r.ep
    worse = [x.layer for x in e.layers if x.imbalance > x.greedy_imbalance * (1 + 1e-12)]
    print(f"[EP] DeepSeek-V4-Pro 384 experts x {len(moe)} layers on 64 GPUs, Zipf(1.0), "
          f"{e.redundant_per_layer} redundant/layer, slots per GPU {min(e.slots_per_rank)}-{max(e.slots_per_rank)}")
    print(f"  placement wall time {wall:.2f} s (solver {e.solve_s:.2f} s, CP-SAT workers 2, "
          f"{os.cpu_count()} CPUs visible)")
    print(f"  max-load imbalance (max/mean, mean over layers): greedy {e.greedy_imbalance:.4f}  "
          f"rigopt {e.imbalance:.4f}  lower bound {e.bound_imbalance:.4f}")
    print(f"  rigopt gap to bound (total) {e.gap_to_bound:.4%}; layers where rigopt > greedy: {len(worse)}; "
          f"layers at bound: {sum(x.at_bound for x in e.layers)}/{len(e.layers)}")
    print(f"  worst layer greedy {max(x.greedy_imbalance for x in e.layers):.4f}, "
          f"rigopt {max(x.imbalance for x in e.layers):.4f}")
    print("  decode tok/s per sequence (plan speed model, batch 64): "
          + ", ".join(f"{k} {v:.2f}" for k, v in e.tok_s.items()))
    ok = wall < 10 and not worse and e.gap_to_bound <= 0.02
    print(f"  checks (< 10 s, rigopt <= greedy on every layer, within 2% of bound): {'PASS' if ok else 'FAIL'}")
    return ok


def bench_offload() -> bool:
    base = dict(model="deepseek-v4-flash", quant="native", kv_dtype="fp8", context=393216, concurrency=1,
                node="ws-rtx-4090-2", n_nodes=1, n_gpus=2, tp=2, ep_size=2, offload_mode="cpu",
                gpu_expert_layers=7, offloaded_layers=list(range(7, 43)), host_expert_bytes=256e9 - 17.18e9)
    ok = True
    for seed_kind in ("zipf:1.0", "zipf:0.6"):
        inp = PlaceInput(engine="sglang", **base)
        moe = inp.resolved.spec.moe_layers
        loads = generate(seed_kind, len(moe), moe[0].n_routed_experts, seed=0)
        r = place(inp, loads)
        tr = r.tiers
        print(f"[offload] DeepSeek-V4-Flash, 2x RTX 4090 + 256 GB DDR5, {seed_kind} loads, SGLang+KTransformers "
              f"(granularity {r.granularity}: {tr.gpu_experts_per_layer} GPU experts per layer)")
        print(f"  GPU serves {tr.share['gpu']:.1%} of activations with {tr.byte_fraction['gpu']:.1%} of expert bytes "
              f"(layer-range split: {tr.reference_share_gpu:.1%})")
        print(f"  decode tok/s: load-aware {tr.tok_s['load-aware']:.2f}  vs  uniform layer-range split "
              f"{tr.tok_s['layer-range split']:.2f}  (x{tr.tok_s['load-aware'] / tr.tok_s['layer-range split']:.2f})")
        ok &= tr.tok_s["load-aware"] >= tr.tok_s["layer-range split"]
    inp = PlaceInput(engine="llamacpp", **{**base, "kv_dtype": "f16"})
    r = place(inp, loads)
    tr = r.tiers
    print(f"[offload] same with llama.cpp (granularity {r.granularity}): GPU share {tr.share['gpu']:.1%}, "
          f"tok/s load-aware {tr.tok_s['load-aware']:.2f} vs layer-range {tr.tok_s['layer-range split']:.2f} "
          f"(batch 1: whole layers tie)")
    print(f"  export: {' '.join(r.exports.get('llamacpp_ot', []))[:120]}...")
    return ok


if __name__ == "__main__":
    a = bench_ep()
    b = bench_offload()
    sys.exit(0 if a and b else 1)
