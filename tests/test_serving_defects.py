"""Serving-physics defects of issue 21, each pinned by a hand calculation and the engine's code it follows."""

from __future__ import annotations

from functools import cache

import pytest

from optimizer.catalog.devices import node_for
from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.estimate.deployment import (
    Deployment,
    EngineSettings,
    Hardware,
    evaluate,
    running_flag,
    running_per_replica,
)
from optimizer.estimate.serving import Workload
from optimizer.layout import Parallel


@cache
def _h200x8() -> Hardware:
    acc = load_hardware().accelerators["h200-sxm"]
    return Hardware(acc, node_for(acc.key, 8), 1, 8)


def _v4_sglang_dp8(settings: EngineSettings) -> Deployment:
    wl = Workload(isl=1000, osl=1000, concurrency=1024)
    return Deployment(model=resolve_model("deepseek-v4-flash"), quant="native", engine="sglang", hardware=_h200x8(),
                      parallel=Parallel(tp=1, dp=8, ep=True), context=wl.max_len, concurrency=1, workload=wl,
                      settings=settings)


@pytest.mark.parametrize("flag, expect_total", [(None, 256), (512, 512)])
def test_sglang_max_running_requests_is_split_across_attention_dp(flag, expect_total):
    """SGLang's TpModelWorker: max_running_requests = server_args.max_running_requests // dp_size when
    enable_dp_attention (sglang@4f34e24 python/sglang/srt/managers/tp_worker.py). DeepSeek-V4's default 256 over 8
    attention-DP ranks is 32 per rank, 256 in all (rigopt admitted 256 per rank, 2,048 in all); --max-running-requests
    512 is 64 per rank. 1,024 requests in flight with 2,000-token sequences: the cap binds, not the KV pool."""
    ev = evaluate(_v4_sglang_dp8(EngineSettings(max_num_seqs=flag)))
    assert ev.serving is not None
    assert ev.serving.admitted_seqs == expect_total
    assert ev.serving.binding == "kv_capacity"


def test_running_flag_round_trips_and_dense_dp_replicas_keep_their_own_cap():
    """export writes running_flag(per replica); the model reads it back per replica. SGLang --dp-size replicas of a
    dense model are separate schedulers with their own cap (no division); vLLM --max-num-seqs is per engine core."""
    moe, dense = resolve_model("deepseek-v4-flash").spec, resolve_model("llama-3.1-8b").spec
    par = Parallel(tp=1, dp=4, ep=True)
    assert running_flag("sglang", moe, par, 48) == 192
    assert running_per_replica("sglang", moe, par, 192, explicit=True) == 48
    assert running_flag("sglang", dense, Parallel(tp=2, dp=4), 48) == 48
    assert running_per_replica("sglang", dense, Parallel(tp=2, dp=4), 48, explicit=True) == 48
    assert running_per_replica("vllm", moe, par, 48, explicit=True) == 48


def test_prefill_runs_each_part_at_its_own_precision():
    """DeepSeek-V4-Flash native (MXFP4 experts, FP8-block dense) on one B200, 8,192-token prompt, compute bound.
    By hand: dense linear FLOPs at the FP8 peak, attention scores at the BF16 peak, MXFP4 x FP8 experts at the
    FP8 peak (not the whole model at the FP4 peak, as before)."""
    from optimizer.estimate.deployment import device_of, resident_weights
    from optimizer.estimate.speed import _expert_param_share, _prefill_attention_flops, prefill_time
    m = resolve_model("deepseek-v4-flash")
    acc = load_hardware().accelerators["b200"]
    dev = device_of(acc)
    _, w = resident_weights(m, "native", "vllm", include_mtp=False)
    spec, P = m.spec, 8192
    share, active = _expert_param_share(spec), spec.active_params()
    by_hand = (2 * active * (1 - share) * P / acc.fp8_flops + _prefill_attention_flops(spec, P) / acc.bf16_flops
               + 2 * active * share * P / acc.fp8_flops)
    got = prefill_time(spec, w, dev, par=Parallel(), prompt_tokens=P, compute_bits=8.0, dense_bits=8.0)
    assert got.ttft_bound_s == pytest.approx(max(by_hand, w.total / acc.memory_bw_bytes_per_s), rel=1e-9)
    assert by_hand > 2 * active * P / acc.fp4_flops * 1.9  # the old whole-model FP4 bound was about 2x too fast


def test_fp4_experts_on_hopper_state_their_kernel_path():
    """V4-Flash's native MXFP4 experts on H200 (no FP4 tensor cores): the plan says they run through vLLM's
    weight-only FP4 kernels at the BF16 peak (989 TFLOP/s, half of FP8's 1,979), and the prefill bound uses that
    rate; on B200 there is no such note."""
    from optimizer.estimate.speed import expert_kernel_path
    h200 = load_hardware().accelerators["h200-sxm"]
    note = expert_kernel_path("vllm", {"mxfp4"}, h200.native_fp4, h200.bf16_flops, h200.fp8_flops)
    assert note is not None and "Marlin" in note and f"{h200.bf16_flops / 1e12:,.0f} TFLOP/s" in note
    assert expert_kernel_path("vllm", {"mxfp4"}, True, 2.25e15, 4.5e15) is None
    assert expert_kernel_path("vllm", {"fp8-block128"}, False, 9.89e14, 1.979e15) is None
    ev = evaluate(Deployment(model=resolve_model("deepseek-v4-flash"), quant="native", engine="vllm",
                             hardware=_h200x8(), parallel=Parallel(tp=8, ep=True), context=8192, concurrency=1))
    assert any(n.startswith("kernel path: MXFP4 experts") for n in ev.notes)


def test_per_sequence_step_cost_saturates():
    """cost x N_sat x (1 - exp(-n / N_sat)): by hand at c = 0.2 ms, N_sat = 128: n = 1 -> 0.19925 ms (about c),
    n = 128 -> 0.2 x 128 x (1 - 1/e) = 16.18 ms, n -> inf -> 25.6 ms; N_sat = 0 keeps the linear form."""
    import math

    from optimizer.estimate.speed import per_seq_step_s
    assert per_seq_step_s(1, 2e-4, 128) == pytest.approx(2e-4 * 128 * (1 - math.exp(-1 / 128)), rel=1e-12)
    assert per_seq_step_s(1, 2e-4, 128) == pytest.approx(2e-4, rel=0.005)
    assert per_seq_step_s(128, 2e-4, 128) == pytest.approx(16.18e-3, rel=1e-3)
    assert per_seq_step_s(1e6, 2e-4, 128) == pytest.approx(25.6e-3, rel=1e-9)
    assert per_seq_step_s(1000, 2e-4, 0) == pytest.approx(0.2)


def test_decode_step_uses_the_fitted_per_sequence_form():
    """Llama-3.1-8B on one H100 with vLLM at 1,000 sequences: the step's per-sequence term is the fitted form
    per_seq_step_s(1000, cost, N_sat), and with any saturating N_sat it stays below cost x N_sat (the linear form
    gave 1,000 x 0.146 ms = 146 ms)."""
    from optimizer.estimate import factors as F
    from optimizer.estimate.deployment import Evaluator
    from optimizer.estimate.speed import per_seq_step_s
    acc = load_hardware().accelerators["h100-sxm"]
    wl = Workload(isl=1000, osl=1000, concurrency=1)
    d = Deployment(model=resolve_model("llama-3.1-8b"), quant="native", engine="vllm",
                   hardware=Hardware(acc, node_for(acc.key, 1), 1, 1), parallel=Parallel(),
                   context=2000, concurrency=1, workload=wl)
    c, sat = F.engine_factor(F.ENGINE_SEQ_STEP_S, "vllm"), F.engine_factor(F.ENGINE_SEQ_SATURATION, "vllm")
    assert Evaluator(d).token_speed(1000).terms_s["per_seq_overhead"] == pytest.approx(per_seq_step_s(1000, c, sat))
    saved = dict(F.ENGINE_SEQ_SATURATION)
    try:
        F.ENGINE_SEQ_SATURATION["vllm"] = F.Factor(128.0, "test")
        term = Evaluator(d).token_speed(1000).terms_s["per_seq_overhead"]
    finally:
        F.ENGINE_SEQ_SATURATION.clear()
        F.ENGINE_SEQ_SATURATION.update(saved)
    assert term <= c * 128 * (1 + 1e-9) < 1000 * c


def test_dense_gemm_time_follows_the_measured_kernels_from_the_fitted_stream_time():
    """TableCompute by hand: dense_s(M) = 2 x active x M / (peak x eff(M)) scaled so that dense_s(1) is rigopt's
    weight-streaming time (H100 BF16 GEMM table of vLLM, hardware/kernels/h100-sxm.json)."""
    from optimizer.estimate import kernels as K
    from optimizer.estimate.deployment import device_of
    from optimizer.estimate.speed import KernelDtypes, TableCompute
    spec = resolve_model("llama-3.1-8b").spec
    dev = device_of(load_hardware().accelerators["h100-sxm"])
    t = TableCompute.of(spec, dev, "vllm", KernelDtypes("bf16", 16.0), tp=1, stream_s=4.0e-3)
    assert t is not None
    assert t.dense_s(1) == pytest.approx(4.0e-3)
    e1, e256 = (K.gemm_efficiency("h100-sxm", "bf16", m, backend="vllm") for m in (1, 256))
    assert e1 is not None and e256 is not None
    assert t.dense_s(256) == pytest.approx(4.0e-3 * 256 * e1 / e256, rel=1e-9)
    assert TableCompute.of(spec, dev, "llamacpp", KernelDtypes("bf16", 16.0), tp=1, stream_s=4e-3) is None


def test_bench_serving_groups_batch_sweeps():
    """bench/serving.py's sweeps: one source, model, engine, GPU type and isl/osl at 3+ concurrencies, sorted by
    concurrency; a pair of points is not a sweep. On the stored rows: at least 16 sweeps from 6+ sources (issue 21
    asks for published sweeps to fit the batched decode step on), on NVIDIA B200 / H200 / A100 and AMD MI300X /
    MI355X, vLLM and SGLang, with TPOT at 3+ concurrencies in at least 14 of them (MiniMax-M2.7 on MI300X runs from
    1 to 1,024 requests)."""
    from optimizer.fidelity.serving import ServingCase, concurrency_of, run, sweeps

    def case(i: str, c: int, src: str = "u") -> ServingCase:
        return ServingCase(i, "vllm", "m", "8x h100-sxm TP8", f"1000/1000 c{c}", {}, {}, src)
    got = sweeps([case("a", 64), case("b", 1), case("c", 8), case("d", 1, "v"), case("e", 8, "v")])
    assert [[c.id for c in s] for s in got] == [["b", "c", "a"]]
    stored = sweeps(run()[0])
    assert len(stored) >= 16
    assert len({s[0].source.split(" ")[0].split("#")[0] for s in stored}) >= 6
    assert {"b200", "h200-sxm", "a100-80gb-sxm", "mi300x", "mi355x"} <= {s[0].hardware.split(" ")[1] for s in stored}
    assert {s[0].engine for s in stored} == {"vllm", "sglang"}
    assert sum(1 for s in stored if sum(1 for c in s if "tpot_ms" in c.measured) >= 3) >= 14
    assert max(concurrency_of(s[-1]) for s in stored) >= 1024


def test_sglang_v4_pool_follows_the_pool_configurator_by_hand():
    """SGLang 0.5.23 for DeepSeek-V4 (pool_configurator.py DSV4PoolConfigurator; model_overrides/deepseek_v4.py
    sets swa_full_tokens_ratio 0.1, so the pool is sized in "ratio" mode; page 256; CUDA; no speculative decoding):
    every full token costs its compressed rows (C4: 584 / 4 + indexer 132 / 4 on 30 layers; C128: 584 / 128 on 31)
    plus 0.1 of a sliding-window slot (584 B on 61 layers + (8 / 256) x (8,192 + 2,048) B of C4 state rings on 30):
    0.1 x (35,624 + 9,600) = 4,522.4 B. A 64,000-token V4-Pro request: C4 30 x 16,000 x (584 + 132) = 343,680,000
    + C128 31 x 500 x 584 = 9,052,000 + windows 61 x 128 x 584 = 4,559,872 + pool 64,000 x 4,522.4 = 289,433,600
    = 646,725,472 B (rigopt had 376,002,400 B with per-request vLLM-style state rings and no pool share: 1.72x too
    small). Fixed before the pool: the C128 state rings of every request slot, ceil128((n + 1) x 128 + 129) rows x
    4,096 B x 31 layers: n = 256: 33,152 x 126,976 = 4,209,508,352 B; n = 64: 8,576 x 126,976 = 1,088,946,176 B.
    Decode reads are unchanged (the pool share is storage)."""
    from optimizer.estimate.kv import kv_estimate
    from optimizer.estimate.memory import sglang_v4_fixed_bytes
    pro = resolve_model("deepseek-v4-pro").spec
    sg, vl = kv_estimate(pro, "sglang", "fp8"), kv_estimate(pro, "vllm", "fp8")
    assert sg.bytes_at(64000) == pytest.approx(646_725_472)
    assert vl.bytes_at(64000) == pytest.approx(376_002_400)
    assert sg.read_bytes_per_token(64000) == vl.read_bytes_per_token(64000)
    assert sglang_v4_fixed_bytes(pro, 256) == 4_209_508_352
    assert sglang_v4_fixed_bytes(pro, 64) == 1_088_946_176
    assert sglang_v4_fixed_bytes(resolve_model("llama-3.1-8b").spec, 256) == 0.0


def _v4_pro_sglang_tp8(settings: EngineSettings, wl: Workload | None = None) -> Deployment:
    return Deployment(model=resolve_model("deepseek-v4-pro"), quant="native", engine="sglang", hardware=_h200x8(),
                      parallel=Parallel(tp=8, ep=True), context=wl.max_len if wl else 131072,
                      concurrency=wl.concurrency if wl and wl.concurrency else 1, workload=wl, settings=settings)


def test_sglang_v4_pro_admits_what_the_pool_holds_after_the_fixed_state_rings():
    """V4-Pro (FP4 experts) on 8x H200, SGLang TP8, 256 running requests (the hook's default): 4,209,508,352 B of
    C128 state rings come off the pool first, then each 60K + 4K request holds 646,725,472 B."""
    wl = Workload(isl=60000, osl=4000, concurrency=256)
    ev = evaluate(_v4_pro_sglang_tp8(EngineSettings(), wl))
    mem = ev.memory
    assert mem.reserve_per_seq_bytes == pytest.approx(4_209_508_352)
    pool = mem.kv_available_bytes - 4_209_508_352
    admitted = int(pool // 646_725_472)
    assert ev.serving is not None and ev.serving.admitted_seqs == admitted
    # before: no fixed rings and 376,002,400 B per request, 1.8x as many admitted
    assert int((pool + 4_209_508_352) // 376_002_400) >= 1.7 * admitted


@pytest.mark.parametrize("key", ["h20", "gh200-96gb"])
def test_h20_and_gh200_usable_memory_is_the_nvidia_smi_total(key):
    """nvidia-smi prints a total of 97871MiB for an H20 (github.com/NVIDIA/nccl-tests/issues/338, driver 550.54.14)
    and for a GH200 480GB's 96 GB HBM3 GPU (github.com/ubccr/ccr-examples at 7a3887d5, slurm/1_Advanced/GPUs/
    README.md, driver 570.86.15): 97,871 x 2^20 = 102,625,181,696 B, 9.5 GB (8.8 GiB) above the 0.97 x 96 GB
    estimate that stood before."""
    acc = load_hardware().accelerators[key]
    assert acc.memory_usable_bytes == 97_871 * 2**20 == 102_625_181_696
    assert not acc.usable_estimate
    assert "97871MiB" in acc.source


def test_llamacpp_v4_layers_pay_for_their_hyper_connection_nodes():
    """DeepSeek-V4's config (hc_mult 4, hc_sinkhorn_iters 20) gives each layer two hyper-connection blocks whose
    Sinkhorn normalisation llama.cpp builds as 7 small nodes per iteration (src/models/deepseek4.cpp
    build_hc_sinkhorn): 2 x 7 x 20 = 280 per layer, 43 x 280 = 12,040 per V4-Flash step, at 3.35 us each = 40.3 ms
    (factors.LLAMACPP_EXTRA_KERNEL_S, derived from llama.cpp PR #24162: V4-Flash on 8x RTX 3090, build b9842,
    tg128 ~16.7 t/s). vLLM and SGLang pay none; models without hyper-connections pay none."""
    from optimizer.estimate import factors as F
    from optimizer.estimate.speed import llamacpp_extra_kernels_s
    flash = resolve_model("deepseek-v4-flash").spec
    assert {lay.extra_kernels for lay in flash.main_layers} == {280}
    assert F.LLAMACPP_EXTRA_KERNEL_S.value == 3.35e-6
    assert llamacpp_extra_kernels_s(flash, "llamacpp") == pytest.approx(12_040 * 3.35e-6)
    assert llamacpp_extra_kernels_s(flash, "ollama") == llamacpp_extra_kernels_s(flash, "llamacpp")
    assert llamacpp_extra_kernels_s(flash, "vllm") == 0.0
    assert llamacpp_extra_kernels_s(resolve_model("deepseek-v3").spec, "llamacpp") == 0.0


def test_llamacpp_v4_flash_on_8x3090_decode_matches_the_published_build():
    """PR #24162 (yoloyash, 2026-06-30): V4-Flash (Q4_K experts, Q8_0 attention) on 8x RTX 3090, all layers on GPU,
    tg128 ~16.7 t/s. rigopt with all of q4_k_m (fewer bytes than that file's Q8_0/F16 parts) predicted 61.9 t/s
    before the per-node term (3.7x too fast); with it, 1 / (16.2 ms + 40.3 ms) = 17.7 t/s, within 10%."""
    acc = load_hardware().accelerators["rtx-3090"]
    d = Deployment(model=resolve_model("deepseek-v4-flash"), quant="q4_k_m", engine="llamacpp",
                   hardware=Hardware(acc, node_for(acc.key, 8), 1, 8), parallel=Parallel(pp=8), context=4096,
                   concurrency=1)
    tok_s = evaluate(d).decode.tok_s_per_seq
    assert tok_s == pytest.approx(16.7, rel=0.10)


def test_sweep_shape_splits_a_common_error_from_the_growth_by_hand():
    """bench/sweep_shape.py's split of a sweep's TPOT error: measured 10 / 20 / 40 ms at c1 / c8 / c64. Predicted
    15 / 30 / 60 is 50% high everywhere: level +0.5, shape 0 and 0. Predicted 12 / 18 / 30: level 12 / 10 - 1 = +0.2,
    shape (18 / 12) / (20 / 10) - 1 = -0.25 and (30 / 12) / (40 / 10) - 1 = -0.375 (the growth with batch is too
    flat). A point without a measured TPOT is skipped, and two points are not a sweep."""
    from optimizer.fidelity.serving import ServingCase, sweep_shape

    def sweep(pred: tuple[float, ...]) -> list[ServingCase]:
        meas = ({"tpot_ms": 10.0}, {"output_tok_s_per_gpu": 5.0}, {"tpot_ms": 20.0}, {"tpot_ms": 40.0})
        pr = (pred[0], 1.0, pred[1], pred[2])
        return [ServingCase(f"r{i}", "sglang", "m", "8x b200 TP8", f"1000/1000 c{c}", m, {"tpot_ms": p}, "u")
                for i, (c, m, p) in enumerate(zip((1, 4, 8, 64), meas, pr, strict=True))]
    flat = sweep_shape(sweep((15.0, 30.0, 60.0)))
    assert flat is not None and flat.level == pytest.approx(0.5) and flat.shape == pytest.approx((0.0, 0.0))
    s = sweep_shape(sweep((12.0, 18.0, 30.0)))
    assert s is not None and s.level == pytest.approx(0.2) and s.shape == pytest.approx((-0.25, -0.375))
    again = sweep_shape(sweep((1.0, 1.0, 1.0)), {"r0": 12.0, "r2": 18.0, "r3": 30.0})
    assert again == s
    assert sweep_shape(sweep((12.0, 18.0, 30.0))[:3]) is None


def test_served_rows_are_predicted_at_their_mean_request_lengths_by_hand():
    """sglang.bench_serving's random dataset draws each request's lengths uniformly from [max(int(L x ratio), 1), L]
    (ratio 0 by default), so the sgl-cookbook DeepSeek-R1 1000/1000 c16 run served 39,668 input and 40,725 output
    tokens over 80 requests: 495.85 -> 496 and 509.06 -> 509 tokens per request, not 1000 / 1000. A row whose quote
    has no totals keeps its workload's isl / osl; the printed workload stays the nominal one (sweeps group on it)."""
    from optimizer.fidelity.serving import deployment_of, mean_lengths, predict, serving_rows
    rows = {r["id"]: r for r in serving_rows()}
    r = rows["sglang-b200x8-dsr1-fp8-isl1k-osl1k-c16"]
    assert mean_lengths(r) == (496, 509)
    w = deployment_of(r).workload
    assert w is not None and (w.isl, w.osl, w.concurrency) == (496, 509, 16)
    assert predict(r).workload == "1000/1000 c16"
    ix = rows["ix-sglang-b200x4-dsr1-nvfp4-tp4ep4-isl1k-osl1k-c64"]
    assert mean_lengths(ix) == (1024, 1024)
    assert mean_lengths({"workload": {"isl": 8, "osl": 4}, "quote": "Successful requests: 0"}) == (8, 4)
