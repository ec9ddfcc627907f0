"""KV-cache bytes against hand calculations from the engines' KV specs (vLLM vllm/v1/kv_cache_interface.py, SGLang
mem_cache/deepseek_v4_memory_pool.py, llama.cpp llama-kv-cache-dsv4.cpp)."""

import pytest

from optimizer.errors import InputError
from optimizer.estimate.kv import kv_estimate

GiB = 2**30


@pytest.mark.parametrize("key,per_token", [("llama-3.1-8b", 2 * 8 * 128 * 32 * 2),
                                            ("llama-3.1-70b", 2 * 8 * 128 * 80 * 2),
                                            ("llama-3.1-405b", 2 * 8 * 128 * 126 * 2),
                                            ("qwen3-235b-a22b", 2 * 4 * 128 * 94 * 2)])
def test_gqa_bf16(spec_of, key, per_token):
    kv = kv_estimate(spec_of(key).spec, "vllm", "bf16")
    assert kv.growth_bytes_per_token() == per_token
    assert kv.bytes_at(1000) == 1000 * per_token


def test_gqa_tp_shards_heads_in_vllm_not_llamacpp(spec_of):
    s = spec_of("llama-3.1-70b").spec
    assert kv_estimate(s, "vllm", "bf16", tp=8).growth_bytes_per_token() == 2 * 1 * 128 * 80 * 2
    # 8 kv heads over TP16: each rank still holds one head (max(1, 8 // 16))
    assert kv_estimate(s, "vllm", "bf16", tp=16).growth_bytes_per_token() == 2 * 1 * 128 * 80 * 2
    assert kv_estimate(s, "llamacpp", "f16", tp=8).growth_bytes_per_token() == 2 * 8 * 128 * 80 * 2


def test_mla_576_not_sharded(spec_of):
    s = spec_of("deepseek-v3").spec
    assert kv_estimate(s, "vllm", "bf16").growth_bytes_per_token() == 576 * 2 * 61
    assert kv_estimate(s, "vllm", "fp8", tp=8).growth_bytes_per_token() == 576 * 61
    # llama.cpp V-less MLA cache (PR #19067): K only, 576 x 2 B; q8_0 = 34 B per 32 values
    assert kv_estimate(s, "llamacpp", "f16").growth_bytes_per_token() == 1152 * 61
    assert kv_estimate(s, "llamacpp", "q8_0").growth_bytes_per_token() == pytest.approx(576 * 34 / 32 * 61)


def test_v32_dsa(spec_of):
    kv = kv_estimate(spec_of("deepseek-v3.2").spec, "vllm", "fp8")
    assert kv.growth_bytes_per_token() == 61 * (656 + 132)  # 48,068 B


@pytest.mark.parametrize("key,growth,gib384,gib1m", [("deepseek-v4-flash", 3850.25, 1.42, 3.77),
                                                     ("deepseek-v4-pro", 5511.4375, 2.04, 5.40)])
def test_v4_vllm_layout(spec_of, key, growth, gib384, gib1m):
    # vLLM / SGLang V4 layout: 584-B rows, 132-B FP8 indexer rows, 128-token window, fp32 compressor states
    kv = kv_estimate(spec_of(key).spec, "vllm", "fp8")
    assert kv.growth_bytes_per_token() == pytest.approx(growth)
    assert kv.bytes_at(393216) / GiB == pytest.approx(gib384, abs=0.01)
    assert kv.bytes_at(1048576) / GiB == pytest.approx(gib1m, abs=0.01)


def test_v4_pro_by_hand(spec_of):
    """V4-Pro at T=393216: 30 C4 + 31 C128 layers, window 128 in all 61 (vLLM 584-B rows)."""
    T = 393216
    kv = kv_estimate(spec_of("deepseek-v4-pro").spec, "vllm", "fp8")
    window = 61 * 128 * 584
    c4 = 30 * (T // 4) * (584 + 132)
    c128 = 31 * (T // 128) * 584
    states = 30 * (2 * 4 * 2 * 2 * 512 * 4 + 2 * 4 * 2 * 2 * 128 * 4) + 31 * (128 * 2 * 512 * 4)
    assert kv.bytes_at(T) == window + c4 + c128 + states


def test_v4_decode_reads(spec_of):
    # hand calculation of read(T): Flash 0.318 GB, Pro 0.467 GB at 384K
    for key, gb in (("deepseek-v4-flash", 0.318), ("deepseek-v4-pro", 0.467)):
        kv = kv_estimate(spec_of(key).spec, "vllm", "fp8")
        assert kv.read_bytes_per_token(393216) / 1e9 == pytest.approx(gb, abs=0.002)


def test_sliding_window_fixed(spec_of):
    # gpt-oss-120b: 18 sliding layers x 128 x (2*8*64*2 B) = 4.5 MiB fixed; 18 full layers grow 36,864 B/token
    kv = kv_estimate(spec_of("gpt-oss-120b").spec, "vllm", "bf16")
    assert kv.fixed_bytes() == 18 * 128 * 2048
    assert kv.growth_bytes_per_token() == 36864
    # gemma-3-27b: 52 local layers x 1024 x 8192 B = 416 MiB; 10 global layers 81,920 B/token
    kv = kv_estimate(spec_of("gemma-3-27b").spec, "vllm", "bf16")
    assert kv.fixed_bytes() == 416 * 2**20
    assert kv.growth_bytes_per_token() == 81920


def test_longer_context_never_less(spec_of):
    kv = kv_estimate(spec_of("deepseek-v4-pro").spec, "llamacpp", "f16")
    prev = 0.0
    for t in (1, 100, 4096, 65536, 393216, 1048576):
        cur = kv.bytes_at(t)
        assert cur >= prev
        prev = cur


def test_engine_rules(spec_of):
    with pytest.raises(InputError):
        kv_estimate(spec_of("deepseek-v4-pro").spec, "vllm", "bf16")
    with pytest.raises(InputError):
        kv_estimate(spec_of("llama-3.1-8b").spec, "llamacpp", "fp8")
    with pytest.raises(InputError):
        kv_estimate(spec_of("llama-3.1-8b").spec, "tensorrt", "fp8")
