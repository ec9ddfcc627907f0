"""Per-layer physics (optimizer/estimate/layers.py) summed over one device equals evaluate() for that deployment."""

import pytest

from optimizer.catalog.hardware import get_accelerator
from optimizer.catalog.models import resolve_model
from optimizer.estimate.cpu_experts import generic_host, host_bandwidth
from optimizer.estimate.deployment import Deployment, Hardware, Offload, evaluate
from optimizer.estimate.layers import device_rates, host_expert_time_s, model_layers, nvme_expert_time_s, stage_figures
from optimizer.hetero.inventory import parse_inventory
from optimizer.hetero.plan import Stage
from optimizer.hetero.validate import check_plan
from optimizer.layout import Links, Parallel

DRAM_BW, NVME_BW = 89.6e9, 7.45e9


@pytest.mark.parametrize(
    "model,quant,acc,ctx,conc,x,z",
    [
        ("deepseek-v4-flash", "q4_k_m-moe", "rtx-pro-6000", 131072, 1, 10, 5),
        ("deepseek-v4-flash", "q3_k_m", "rtx-4090", 393216, 1, 38, 0),
        ("deepseek-v3", "q2_k", "rtx-a6000", 32768, 3, 40, 10),
        ("qwen3-30b-a3b", "q8_0", "rtx-5090", 65536, 2, 0, 0),
        ("gpt-oss-120b", "native", "rtx-3090", 131072, 1, 30, 0),
    ],
)
def test_layer_sums_equal_evaluate(model, quant, acc, ctx, conc, x, z):
    m, a = resolve_model(model), get_accelerator(acc)
    ml = model_layers(m, quant, "llamacpp", ctx, conc)
    links = Links(host_dram_bw=DRAM_BW, nvme_bw=NVME_BW)  # no host row: cpu_experts.generic_host(DRAM_BW)
    off = Offload(mode="cpu" if x + z else "none", dram_layers=x, nvme_layers=z)
    ev = evaluate(
        Deployment(
            model=m,
            quant=quant,
            engine="llamacpp",
            hardware=Hardware(a, None, links=links),
            parallel=Parallel(),
            context=ctx,
            concurrency=conc,
            offload=off,
        )
    )
    moe = ml.moe_indices
    gpu, cpu, nv = moe[: len(moe) - x - z], moe[len(moe) - x - z : len(moe) - z], moe[len(moe) - z :]
    r = device_rates(a, ml, m.spec.vocab_size, m.spec.hidden_size)
    f = stage_figures(ml, r, 0, ml.n, set(gpu), holds_globals=True)
    assert f.weights_bytes == pytest.approx(ev.memory.weights_bytes, rel=1e-12)
    assert f.kv_bytes == pytest.approx(ev.memory.kv_bytes, rel=1e-12)
    assert f.runtime_bytes == pytest.approx(ev.memory.runtime_bytes, rel=1e-12)
    assert r.budget_bytes == pytest.approx(ev.memory.budget_bytes, rel=1e-12)
    step = (
        f.time_s
        + sum(host_expert_time_s(ml, l, host_bandwidth(generic_host(DRAM_BW), "llamacpp").bytes_per_s) for l in cpu)
        + sum(nvme_expert_time_s(ml, l, NVME_BW) for l in nv)
        + ml.fixed_overhead_s
    )
    assert step == pytest.approx(ev.decode.step_time_s, rel=1e-9)


def test_split_over_two_devices_conserves_bytes():
    """Moving the cut between two stages moves bytes, never creates or loses them."""
    m, a = resolve_model("deepseek-v4-flash"), get_accelerator("rtx-4090")
    ml = model_layers(m, "q3_k_m", "llamacpp", 131072, 1)
    r = device_rates(a, ml, m.spec.vocab_size, m.spec.hidden_size)
    whole = stage_figures(ml, r, 0, ml.n, set(ml.moe_indices), True)
    for cut in (1, 7, 30):
        p = stage_figures(ml, r, 0, cut, set(ml.moe_indices), False)
        q = stage_figures(ml, r, cut, ml.n, set(ml.moe_indices), True)
        assert p.weights_bytes + q.weights_bytes == pytest.approx(whole.weights_bytes, rel=1e-12)
        assert p.read_bytes + q.read_bytes == pytest.approx(whole.read_bytes, rel=1e-12)
        assert p.kv_bytes + q.kv_bytes == pytest.approx(whole.kv_bytes, rel=1e-12)


def test_checker_one_stage_agrees_with_evaluate_and_flags_overflow():
    m = resolve_model("deepseek-v4-flash")
    inv = parse_inventory("1x rtx-4090, 128GB ddr5")
    ml = model_layers(m, "q3_k_m", "llamacpp", 393216, 1)
    moe = ml.moe_indices
    good = Stage("box0/cuda0", 0, "rtx-4090", True, 0, ml.n, moe[:5], moe[5:], ())
    chk = check_plan(m, ml, inv, (good,), (0,))
    assert chk.ok, chk.violations  # includes the evaluate() cross-check of a one-device plan
    too_many = Stage("box0/cuda0", 0, "rtx-4090", True, 0, ml.n, moe[:20], moe[20:], ())
    chk = check_plan(m, ml, inv, (too_many,), (0,))
    assert any("budget" in v for v in chk.violations)
    no_dram = Stage("box0/cuda0", 0, "rtx-4090", True, 0, ml.n, (), moe, ())
    chk = check_plan(m, ml, parse_inventory("1x rtx-4090, 64GB ddr5"), (no_dram,), (0,))
    assert any("host DRAM" in v for v in chk.violations)


@pytest.mark.parametrize(
    "model,quant,acc,ctx,conc",
    [
        ("qwen3-30b-a3b", "native", "rtx-pro-6000", 32768, 4),
        ("deepseek-v4-flash", "native", "b200", 131072, 2),  # V4: per-layer in-flight reservation
        ("deepseek-v3", "fp8", "b300", 8192, 1),
    ],
)
def test_layer_sums_equal_evaluate_vllm(model, quant, acc, ctx, conc):
    from optimizer.estimate.deployment import EngineSettings

    m, a = resolve_model(model), get_accelerator(acc)
    ml = model_layers(m, quant, "vllm", ctx, conc)
    ev = evaluate(
        Deployment(
            model=m,
            quant=quant,
            engine="vllm",
            hardware=Hardware(a, None, links=Links()),
            parallel=Parallel(),
            context=ctx,
            concurrency=conc,
            settings=EngineSettings(max_num_seqs=conc),
        )
    )
    r = device_rates(a, ml, m.spec.vocab_size, m.spec.hidden_size)
    f = stage_figures(ml, r, 0, ml.n, set(ml.moe_indices), holds_globals=True)
    assert f.weights_bytes == pytest.approx(ev.memory.weights_bytes, rel=1e-12)
    assert f.kv_bytes == pytest.approx(ev.memory.kv_bytes, rel=1e-12)
    assert f.runtime_bytes == pytest.approx(ev.memory.runtime_bytes, rel=1e-12)
    assert r.budget_bytes == pytest.approx(ev.memory.budget_bytes, rel=1e-12)
    assert f.time_s + ml.fixed_overhead_s == pytest.approx(ev.decode.step_time_s, rel=1e-9)
    if m.spec.family == "deepseek_v4":
        assert ev.memory.reserve_per_seq_bytes > 0  # the reservation is really part of what is compared
