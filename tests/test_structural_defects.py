"""Each structural defect of the old speed/memory model, pinned by a hand calculation (issue: serving model)."""

from __future__ import annotations

import inspect

import pytest

from optimizer.catalog.hardware import get_accelerator, get_node
from optimizer.estimate.deployment import Deployment, EngineSettings, Hardware, evaluate, resident_weights
from optimizer.estimate.kv import kv_estimate
from optimizer.estimate.memory import Parallel, device_memory
from optimizer.estimate.schemes import get_scheme
from optimizer.estimate.speed import Device, decode_speed, kernel_bits, prefill_time
from optimizer.estimate.weights import weight_breakdown
from optimizer.units import GiB

H100 = Device("h100", mem_bw_bytes_per_s=3.35e12, bf16_flops=989e12, fp8_flops=1979e12)


def test_fp4_weights_on_hopper_run_w4a16():
    """Hopper has FP8 but no FP4 tensor cores: MXFP4/NVFP4 weights run as W4A16 (Marlin), 16-bit math."""
    assert kernel_bits({"mxfp4"}, native_fp8=True, native_fp4=False) == 16.0
    assert kernel_bits({"nvfp4", "fp8"}, native_fp8=True, native_fp4=False) == 16.0
    # Blackwell: NVFP4 (W4A4) at the FP4 rate; MXFP4 has no FP4 x FP4 kernel (W4A16 or MXFP4 x MXFP8, vLLM
    # mxfp4.py get_mxfp4_backend; V4's experts take FP8 activations): the FP8 rate
    assert kernel_bits({"nvfp4"}, native_fp8=True, native_fp4=True) == 4.0
    assert kernel_bits({"mxfp4"}, native_fp8=True, native_fp4=True) == 8.0
    assert kernel_bits({"fp8"}, native_fp8=True, native_fp4=False) == 8.0


def test_pipeline_split_does_not_shorten_one_prompt(spec_of):
    """Llama-3.1-8B BF16, 8192-token prompt on H100s: one prompt passes PP stages one after another, so its
    compute bound is FLOPs / (one GPU's peak) whether PP is 1 or 4; TP4 divides it by 4."""
    m = spec_of("llama-3.1-8b")
    w = weight_breakdown(m.spec, get_scheme("bf16"), include_mtp=False)
    p1 = prefill_time(m.spec, w, H100, par=Parallel(), prompt_tokens=8192)
    pp4 = prefill_time(m.spec, w, H100, par=Parallel(pp=4), prompt_tokens=8192)
    tp4 = prefill_time(m.spec, w, H100, par=Parallel(tp=4), prompt_tokens=8192)
    flops = 2.0 * m.spec.active_params() * 8192  # + attention, the same in all three
    assert p1.ttft_bound_s >= flops / 989e12
    assert pp4.ttft_bound_s == pytest.approx(p1.ttft_bound_s, rel=1e-9)
    assert tp4.ttft_bound_s == pytest.approx(p1.ttft_bound_s / 4, rel=1e-9)
    assert pp4.work_s == pytest.approx(pp4.ttft_s / 4)  # but prompts streaming through overlap the stages


def test_prefill_reads_weights_once_per_chunk(spec_of):
    """A weight-bound prefill reads every weight once per chunk: a 256-token prompt in 4 chunks of 64 tokens on
    an H100 (compute 2 x 8.0e9 x 256 / 989 TFLOPS = 4.2 ms < one weight pass 16 GB / 3.35 TB/s = 4.8 ms) is
    bound by four weight passes."""
    m = spec_of("llama-3.1-8b")
    w = weight_breakdown(m.spec, get_scheme("bf16"), include_mtp=False)
    one = prefill_time(m.spec, w, H100, par=Parallel(), prompt_tokens=256)
    four = prefill_time(m.spec, w, H100, par=Parallel(), prompt_tokens=256, chunk_tokens=64)
    assert four.chunks == 4 and one.chunks == 1
    weights_s = w.dense_bytes / 3.35e12
    assert one.ttft_bound_s == pytest.approx(weights_s, rel=1e-9)
    assert four.ttft_bound_s == pytest.approx(4 * weights_s, rel=1e-9)


def test_sglang_budget_follows_mem_fraction_static(spec_of):
    """SGLang gives weights + KV `mem_fraction_static` of the device; the rest (1 - mfs) is its reserve."""
    m = spec_of("llama-3.1-8b")
    w = weight_breakdown(m.spec, get_scheme("bf16"), include_mtp=False)
    kv = kv_estimate(m.spec, "sglang", "bf16")
    cap = 80 * GiB
    mem = device_memory(m.spec, w, kv, engine="sglang", capacity_bytes=cap, context=8192, concurrency=1,
                        par=Parallel(), mem_fraction_static=0.7)
    assert mem.runtime_bytes == pytest.approx(0.3 * cap)
    assert mem.kv_available_bytes == pytest.approx(0.7 * cap - w.total)
    default = device_memory(m.spec, w, kv, engine="sglang", capacity_bytes=cap, context=8192, concurrency=1,
                            par=Parallel())
    # its default reserve: 512 MiB + 1.5 MiB x chunked_prefill_size (8192 on an 80 GiB GPU) + 1 GiB x tp x pp / 8
    assert default.runtime_bytes == pytest.approx((512 + 1.5 * 8192 + 1024 / 8) * 2**20)


def test_vllm_gpu_memory_utilization_is_an_input(spec_of):
    m = spec_of("llama-3.1-8b")
    acc = get_accelerator("h100-sxm")
    d = Deployment(model=m, quant="bf16", engine="vllm", hardware=Hardware(acc, get_node("hgx-h100-8"), 1, 1),
                   parallel=Parallel(), context=8192, settings=EngineSettings(gpu_memory_utilization=0.8))
    # vLLM multiplies the CUDA total (deviceQuery: 85,045,477,376 B on an H100 80GB HBM3), not nvidia-smi's 81,559 MiB
    assert evaluate(d).memory.budget_bytes == pytest.approx(0.8 * 85045477376)
    d92 = Deployment(model=m, quant="bf16", engine="vllm", hardware=Hardware(acc, get_node("hgx-h100-8"), 1, 1),
                     parallel=Parallel(), context=8192)
    assert evaluate(d92).memory.budget_bytes == pytest.approx(0.92 * 85045477376)


def test_vllm_pads_gpt_oss_mxfp4_experts(spec_of):
    """vLLM rounds gpt-oss's MoE hidden size 2880 up to 3072 for MXFP4 experts: experts x 3072/2880; the rest
    of the weights and llama.cpp's copy are unchanged."""
    m = spec_of("gpt-oss-120b")
    _, plain = resident_weights(m, "native", "llamacpp", include_mtp=False)
    _, padded = resident_weights(m, "native", "vllm", include_mtp=False)
    assert padded.routed_expert_bytes == pytest.approx(plain.routed_expert_bytes * 3072 / 2880)
    assert padded.total - padded.routed_expert_bytes == pytest.approx(plain.total - plain.routed_expert_bytes)


def test_decode_speed_takes_no_unused_node_count():
    """The node count never changed decode speed; the links (from the topology graph) carry node crossings."""
    assert "n_nodes" not in inspect.signature(decode_speed).parameters


def test_dp_attention_multiplies_mla_kv_capacity(spec_of):
    """V4-Flash on 8x B200: the compressed KV is replicated on every TP rank but not across DP ranks, so DP8
    attention holds ~8x the sequences of TP8 (a published run shows 7.7x; the weights per GPU grow)."""
    m = spec_of("deepseek-v4-flash")
    acc = get_accelerator("b200")
    node = get_node("hgx-b200-8")

    def cap(par):
        d = Deployment(model=m, quant="native", engine="sglang", hardware=Hardware(acc, node, 1, 8), parallel=par,
                       context=131072)
        return evaluate(d).max_concurrency
    tp8, dp8 = cap(Parallel(tp=8, ep=True)), cap(Parallel(tp=1, dp=8, ep=True))
    assert 6.0 <= dp8 / tp8 <= 8.5


def test_binding_constraint_is_named_only_near_its_limit():
    from optimizer.solver.search import binding_constraint
    assert binding_constraint({"device memory": 0.67, "decode tok/s": 0.4}).startswith("none within 10%")
    assert binding_constraint({"device memory": 0.67, "decode tok/s": 0.04}) == "decode tok/s"


def _v4pro_mi355x(batch: int, spec: bool) -> float:
    from dataclasses import replace as _replace

    from optimizer.catalog.hardware import load_hardware
    from optimizer.catalog.models import resolve_model
    from optimizer.estimate.deployment import default_spec_decode
    m = resolve_model("deepseek-v4-pro")
    hw = load_hardware()
    node = next(n for n in sorted(hw.nodes.values(), key=lambda n: n.key) if n.accelerator == "mi355x")
    d = Deployment(model=m, quant="native", engine="vllm", hardware=Hardware(hw.accelerators["mi355x"], node, 1, 8),
                   parallel=Parallel(tp=8, ep=True), context=2048, concurrency=batch)
    if spec:
        d = _replace(d, spec_decode=default_spec_decode(m))
    return evaluate(d).decode.tok_s_per_seq


def test_mtp_speedup_at_low_batch_matches_published():
    """DeepSeek-V4-Pro FP4 on 8x MI355X (vLLM ROCm, MTP 2 tokens): +75% per-user speed at concurrency 1 and +38% at 8
    vs no MTP (vllm PR #43385 via SemiAnalysisAI/InferenceX PR #1630). rigopt:
    one target pass verifies 3 tokens, 1.99 emitted on average, plus two one-layer draft passes."""
    gain1 = _v4pro_mi355x(1, True) / _v4pro_mi355x(1, False) - 1
    gain8 = _v4pro_mi355x(8, True) / _v4pro_mi355x(8, False) - 1
    assert gain1 == pytest.approx(0.75, abs=0.10)
    assert gain8 == pytest.approx(0.38, abs=0.15)
    assert gain8 < gain1  # the verification pass costs more as the batch grows


@pytest.mark.xfail(strict=True, reason="known gap: the same source measures -37% at concurrency 32; rigopt's roofline "
                                        "plus draft cost still predicts a gain there (the loss is not a bandwidth or "
                                        "compute effect rigopt models)")
def test_mtp_loses_at_concurrency_32_known_gap():
    assert _v4pro_mi355x(32, True) < _v4pro_mi355x(32, False)
