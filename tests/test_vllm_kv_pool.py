"""vLLM's KV pool ("Available KV cache memory") for gpt-oss-120b on one H100 80GB (issue 21, Memory defect).

vLLM 0.33.0 (the pinned version) computes, per GPU (vllm/v1/worker/gpu_worker.py determine_available_memory,
vllm/v1/worker/utils.py request_memory, vllm/utils/mem_utils.py memory_profiling):

    available = ceil(total x gpu_memory_utilization) - (weights + non-torch + profile-run peak) - CUDA-graph estimate

- total: torch.cuda.mem_get_info()[1], the CUDA total (deviceQuery 85,045,477,376 B on an H100 80GB HBM3), not
  nvidia-smi's 81,559 MiB (the driver reserves 454 MiB);
- profile-run peak: the larger of the model pass at max_num_batched_tokens and the dummy sampler run over
  min(max_num_seqs, max_num_batched_tokens) requests (gpu_model_runner.py _dummy_run / _dummy_sampler_run), whose
  (request x vocab) tensors alive together are BF16 logits 2 B + FP32 logits 4 B + probs 4 B + noise 4 B = 14 B;
- weights: the Triton MXFP4 MoE path 0.33.0 picks on Hopper (fused_moe/oracle/mxfp4.py
  _get_priority_backends_for_gpt_oss: TRITON before MARLIN), measured at 64.38 GiB (vLLM issue #33155, v0.14.1,
  '[mxfp4.py:165] Using Triton backend').

The published log this pins (vLLM issue #27508, matheusfvesco 2025-10-31, vLLM 0.11.0 with torch 2.8.0, H100 80GB
HBM3, `vllm serve openai/gpt-oss-120b --gpu-memory-utilization 0.95 --max-num-batched-tokens 1024`):
"Available KV cache memory: 1.71 GiB". Three terms of 0.11.0 differ from 0.33.0, each read from 0.11.0's code:
- no CUDA-graph estimate: available = requested - non_kv_cache_memory (gpu_worker.py; utils memory_profiling);
- the dummy sampler ran the PyTorch top-k/top-p: flashinfer was only the optional extra `vllm[flashinfer]` of the
  0.11.0 wheel, and without it TopKTopPSampler takes forward_native (v1/sample/ops/topk_topp_sampler.py): sort
  values 4 B + int64 indices 8 B + top-k mask 1 B + probs_sort 4 B + top-p mask 1 B + the scattered copy 4 B beside
  the BF16 2 B and FP32 4 B logits = 28 B per entry (torch's own sort workspace not counted);
- MXFP4 experts through Marlin: the 0.11.0 wheel ships no triton_kernels, and without it get_mxfp4_backend
  (quantization/mxfp4.py) picks Marlin on Hopper; those weights measured 65.9651 GiB on an H100 (vLLM issue
  #23278, v0.10.1, whose log shows the Marlin warning).
That the #27508 environment had neither optional package is an assumption (its pip list is not quoted in full);
it is the one under which both logs below come out within 0.2 GiB.
The same terms reproduce #23278's "Available KV cache memory: -2.14 GiB" (default gpu_memory_utilization 0.9,
max_num_batched_tokens 8192, max_num_seqs 1024).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from optimizer.catalog.hardware import get_accelerator, get_node
from optimizer.catalog.hardware_schema import Accelerator
from optimizer.estimate import factors as F
from optimizer.estimate.deployment import Deployment, EngineSettings, Hardware, evaluate
from optimizer.estimate.memory import Parallel
from optimizer.units import GiB, MiB

H100_CUDA_TOTAL = 85_045_477_376        # deviceQuery "Total amount of global memory", H100 80GB HBM3
GPT_OSS_VOCAB = 201_088                 # openai/gpt-oss-120b config.json vocab_size
CONTEXT = 131_072                       # the log's max_model_len (gpt-oss-120b's own)
SAMPLER_B_0330 = 2 + 4 + 4 + 4          # vLLM 0.33.0 dummy sampler, bytes per (request x vocab entry)
SAMPLER_B_0110 = 2 + 4 + (4 + 8 + 1 + 4 + 1 + 4)  # vLLM 0.11.0 native top-k/top-p at its scatter
MARLIN_WEIGHTS = 65.9651 * GiB          # vLLM #23278 "Model loading took 65.9651 GiB" (Marlin)
TRITON_WEIGHTS = 64.38 * GiB            # vLLM #33155 "Model loading took 64.38 GiB memory" (Triton)


def _mem(spec_of, gmu: float, mnbt: int, max_num_seqs: int = 1024):
    acc = get_accelerator("h100-sxm")
    d = Deployment(model=spec_of("gpt-oss-120b"), quant="native", engine="vllm",
                   hardware=Hardware(acc, get_node("hgx-h100-8"), 1, 1), parallel=Parallel(), context=CONTEXT,
                   settings=EngineSettings(gpu_memory_utilization=gmu, max_num_batched_tokens=mnbt,
                                           max_num_seqs=max_num_seqs))
    return evaluate(d).memory


def test_h100_cuda_total_is_nvidia_smi_total_less_the_driver_reserve():
    """Two figures of one published machine (thamada/nvidia-smi, driver 565.57.01): deviceQuery's total global memory
    is nvidia-smi's FB total 81,559 MiB less its 454 MiB 'Reserved' (to the MiB deviceQuery rounds to)."""
    a = get_accelerator("h100-sxm")
    assert a.cuda_total_bytes == H100_CUDA_TOTAL
    assert a.memory_usable_bytes == 81_559 * MiB
    assert abs(a.cuda_total_bytes / MiB - (81_559 - 454)) <= 1
    # a card without a published CUDA total falls back to its usable figure
    assert get_accelerator("h200-sxm").cuda_total_bytes == get_accelerator("h200-sxm").memory_usable_bytes


def test_cuda_total_needs_its_source_and_lies_just_below_the_usable_total():
    good = get_accelerator("h100-sxm").model_dump()
    assert Accelerator.model_validate(good).cuda_total_bytes == H100_CUDA_TOTAL
    for bad in ({"memory_cuda_total_source": None},                                   # a number without a source
                {"memory_cuda_total_bytes": good["memory_usable_bytes"] + 1},         # above nvidia-smi's total
                {"memory_cuda_total_bytes": int(0.9 * good["memory_usable_bytes"])}):  # a GB/GiB-sized slip
        with pytest.raises(ValidationError):
            Accelerator.model_validate({**good, **bad})


def test_gpt_oss_120b_h100_kv_pool_hand_calculation(spec_of):
    """The issue's settings (gpu_memory_utilization 0.95, max_num_batched_tokens 1024, max_num_seqs 1024 by default
    on an 80 GB card) at vLLM 0.33.0, by hand. Was 6.13 GiB: nvidia-smi's total and an 8 B/entry sampler."""
    mem = _mem(spec_of, 0.95, 1024)
    # weights: rigopt's MXFP4 expert padding (3072/2880) against the Triton-path log
    assert mem.weights_bytes == pytest.approx(TRITON_WEIGHTS, rel=0.005)
    sampler = min(1024, 1024) * GPT_OSS_VOCAB * SAMPLER_B_0330          # 2,882,797,568 B = 2.685 GiB
    assert sampler == 2_882_797_568
    act = 1024 * 2880 * F.ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN.value   # model pass at 1024 tokens: smaller
    assert act < sampler
    expected = 0.95 * H100_CUDA_TOTAL - mem.weights_bytes - (
        sampler + F.VLLM_NON_TORCH_BYTES.value + F.VLLM_CUDAGRAPH_BYTES.value)
    assert mem.budget_bytes == pytest.approx(0.95 * H100_CUDA_TOTAL, abs=1.0)
    assert mem.kv_available_bytes == pytest.approx(expected, abs=1 * MiB)
    # 75.24 - 64.50 - (2.68 + 2.0 + 1.5) = 4.56 GiB: one 131,072-token sequence (4.50 GiB of KV) still fits
    assert mem.kv_available_bytes / GiB == pytest.approx(4.56, abs=0.01)


def test_dummy_sampler_requests_are_capped_by_the_token_budget(spec_of):
    """_dummy_run(max_num_tokens) makes min(num_tokens, max_num_seqs) requests: raising max_num_seqs above
    max_num_batched_tokens leaves the profile run, and the pool, unchanged; lowering it below shrinks the sampler."""
    base = _mem(spec_of, 0.95, 1024, max_num_seqs=1024).kv_available_bytes
    assert _mem(spec_of, 0.95, 1024, max_num_seqs=4096).kv_available_bytes == pytest.approx(base, abs=1.0)
    fewer = _mem(spec_of, 0.95, 1024, max_num_seqs=256).kv_available_bytes
    assert fewer - base == pytest.approx((1024 - 256) * GPT_OSS_VOCAB * SAMPLER_B_0330, abs=1.0)


@pytest.mark.parametrize("gmu, mnbt, logged_gib", [
    (0.95, 1024, 1.71),    # vLLM #27508 (v0.11.0): "Available KV cache memory: 1.71 GiB"
    (0.90, 8192, -2.14),   # vLLM #23278 (v0.10.1): "Available KV cache memory: -2.14 GiB"
])
def test_published_logs_differ_from_the_pinned_version_by_three_code_terms(spec_of, gmu, mnbt, logged_gib):
    """rigopt's 0.33.0 figure, with the three terms the logs' older vLLM had instead (module docstring: Marlin
    weights, the sort-based sampler, no CUDA-graph estimate), lands on the published figure within 0.25 GiB.
    The rest of the accounting (CUDA total, non-torch) is the same in both."""
    mem = _mem(spec_of, gmu, mnbt)
    reqs = min(1024, mnbt)
    older = (mem.kv_available_bytes
             - (MARLIN_WEIGHTS - mem.weights_bytes)
             - reqs * GPT_OSS_VOCAB * (SAMPLER_B_0110 - SAMPLER_B_0330)
             + F.VLLM_CUDAGRAPH_BYTES.value)
    assert older / GiB == pytest.approx(logged_gib, abs=0.25)
    # and the pinned-version figure is the larger one by those terms (about 2.8 GiB): not a missing reserve
    assert mem.kv_available_bytes / GiB - logged_gib == pytest.approx(2.8, abs=0.3)
