"""Speed and memory physics against hand calculations; expected never exceeds the roofline bound."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.estimate import factors as F
from optimizer.estimate.kv import kv_estimate
from optimizer.estimate.memory import Parallel, device_memory, max_context, weights_per_device
from optimizer.estimate.schemes import get_scheme
from optimizer.estimate.speed import Device, ExpertTiers, Links, decode_speed, distinct_experts, prefill_time
from optimizer.estimate.weights import weight_breakdown
from tests.hyp import examples

H100 = Device("h100", mem_bw_bytes_per_s=3.35e12, bf16_flops=989e12, fp8_flops=1979e12)


def test_dense_decode_bound_by_hand(spec_of):
    """Llama-3.1-8B BF16, batch 1, 4096 tokens, one H100: bound = (weights read + KV read) / 3.35 TB/s."""
    m = spec_of("llama-3.1-8b")
    w = weight_breakdown(m.spec, get_scheme("bf16"))
    kv = kv_estimate(m.spec, "vllm", "bf16")
    s = decode_speed(m.spec, w, kv, H100, par=Parallel(), context=4096, batch=1)
    embed_row = 4096 * 2
    read = (16_060_522_496 - 128256 * 4096 * 2 + embed_row) + 4096 * 131072
    assert s.bound_step_time_s == pytest.approx(read / 3.35e12, rel=1e-6)
    assert s.tok_s_per_seq < s.tok_s_bound_per_seq
    assert s.binding == "gpu_memory"


def test_distinct_experts():
    assert distinct_experts(256, 8, 1) == pytest.approx(8)
    assert distinct_experts(256, 8, 10_000) == pytest.approx(256, rel=1e-6)
    assert distinct_experts(0, 0, 5) == 0


def test_cpu_offload_slower_and_bounded(spec_of):
    m = spec_of("deepseek-v4-flash")
    w = weight_breakdown(m.spec, get_scheme("q4_k_m"))
    kv = kv_estimate(m.spec, "llamacpp", "f16")
    dev = Device("rtx-4090", 1.008e12, 165e12)
    links = Links(host_dram_bw=89.6e9, host_link_bw=32e9)  # no host row: a generic 2-channel desktop
    all_gpu = decode_speed(m.spec, w, kv, dev, par=Parallel(), context=32768, links=links)
    half = decode_speed(m.spec, w, kv, dev, par=Parallel(), context=32768, links=links,
                        tiers=ExpertTiers(gpu=0.5, cpu=0.5))
    assert half.tok_s_per_seq < all_gpu.tok_s_per_seq
    assert half.binding == "cpu_experts"
    # hand figure for the CPU part: half of 6 experts x 43 layers read from DRAM at 89.6 GB/s x llama.cpp's
    # efficiency on a desktop host (llama.cpp runs them after the GPU work: all of it is exposed)
    eb = w.per_layer_experts[0] / 256
    eff = F.cpu_expert_bw_efficiency("llamacpp", "desktop").value
    assert half.terms_s["cpu_experts"] == pytest.approx(0.5 * 6 * eb * 43 / 89.6e9 / eff, rel=0.01)


@settings(max_examples=examples(40, 10), deadline=None)
@given(batch=st.integers(1, 256), ctx=st.integers(1, 1_048_576), tp=st.sampled_from([1, 2, 4, 8]),
       gpu_frac=st.floats(0.0, 1.0))
def test_expected_never_exceeds_bound(spec_of, batch, ctx, tp, gpu_frac):
    m = spec_of("deepseek-v4-pro")
    w = weight_breakdown(m.spec, get_scheme("native", m.storage))
    kv = kv_estimate(m.spec, "vllm", "fp8", tp=tp)
    s = decode_speed(m.spec, w, kv, H100, par=Parallel(tp=tp, ep=tp > 1), context=ctx, batch=batch,
                     links=Links(host_dram_bw=400e9, host_link_bw=64e9),
                     tiers=ExpertTiers(gpu=gpu_frac, cpu=1 - gpu_frac))
    assert 0 <= s.tok_s_per_seq <= s.tok_s_bound_per_seq + 1e-9
    p = prefill_time(m.spec, w, H100, par=Parallel(tp=tp), prompt_tokens=min(ctx, 65536))
    assert p.ttft_s >= p.ttft_bound_s > 0


def test_vllm_budget_is_fraction_of_total(spec_of):
    m = spec_of("llama-3.1-70b")
    w = weight_breakdown(m.spec, get_scheme("bf16"))
    kv = kv_estimate(m.spec, "vllm", "bf16", tp=4)
    cap = 81559 * 2**20
    mem = device_memory(m.spec, w, kv, engine="vllm", capacity_bytes=cap, context=8192, concurrency=4,
                        par=Parallel(tp=4))
    assert mem.budget_bytes == pytest.approx(0.92 * cap)
    assert mem.weights_bytes == pytest.approx(w.total / 4)
    # K+V x 2 of 8 kv heads per rank x head_dim 128 x 2 B x 80 layers, for 4 sequences of 8192 tokens
    assert mem.kv_bytes == pytest.approx(4 * 8192 * (2 * 2 * 128 * 2) * 80)
    assert mem.fits


def test_weights_per_device_ep_vs_tp(spec_of):
    m = spec_of("deepseek-v4-pro")
    w = weight_breakdown(m.spec, get_scheme("native", m.storage))
    tp8 = weights_per_device(w, Parallel(tp=8, ep=True))
    dp2 = weights_per_device(w, Parallel(tp=8, dp=2, ep=True))
    assert tp8 == pytest.approx(w.total / 8)
    # hand calculation, TP8 x DP2 with EP16: experts / 16 + dense / 8 ≈ 56 GB
    assert dp2 / 1e9 == pytest.approx(w.routed_expert_bytes / 16e9 + w.dense_bytes / 8e9)
    assert 52 < dp2 / 1e9 < 60


def test_max_context_monotone_and_exact(spec_of):
    kv = kv_estimate(spec_of("llama-3.1-8b").spec, "vllm", "bf16")
    assert max_context(kv, 131072 * 1000, 1) == 1000
    assert max_context(kv, 131072 * 1000, 2) == 500
    assert max_context(kv, 100, 1) == 0
