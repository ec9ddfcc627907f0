"""`cheapest` end to end on real catalogue data: oracle equality, properties, infeasibility, determinism."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.catalog.models import resolve_model
from optimizer.solver.candidates import best_x, enumerate_candidates
from optimizer.solver.oracle import brute_force
from optimizer.solver.query import Owned, Query
from optimizer.solver.search import cheapest
from optimizer.solver.table import limits, to_rows
from optimizer.solver.validate import check
from tests.gguf_files import write_llama_gguf
from tests.hyp import examples

SMALL = ["h100-sxm", "l40s", "rtx-4090", "a100-80gb-sxm"]


def small_query(**kw) -> Query:
    base = dict(model="qwen3-30b-a3b", context=32768, gpus=SMALL, max_nodes=3, top=3, time_limit_s=10)
    base.update(kw)
    return Query(**base)


@pytest.mark.parametrize("kw", [
    dict(),
    pytest.param(dict(tok_s=60), marks=pytest.mark.slow),
    dict(model="llama-3.1-70b", tok_s=15, concurrency=4),
    dict(model="deepseek-v4-flash", context=393216, tok_s=10),
    pytest.param(dict(model="deepseek-v4-flash", context=393216, tok_s=10, objective="hourly"), marks=pytest.mark.slow),
    dict(model="gpt-oss-120b", context=131072, objective="power", ttft_s=60),
    dict(model="deepseek-v4-flash", context=65536, owned=Owned(accelerators={"rtx-4090": 2}, dram_bytes=256 * 10**9),
         tok_s=5),
])
def test_cpsat_matches_oracle_on_small_catalogues(kw):
    q = small_query(**kw)
    r = cheapest(q)
    m = resolve_model(q.model)
    cands = enumerate_candidates(q, m)
    rows = to_rows(cands, q)
    oracle = brute_force(rows, limits(q))
    if oracle is None:
        assert r.plan is None
        return
    idx, x, z, cost = oracle
    assert r.status == "OPTIMAL"
    assert r.plan.candidate_id == cands[idx].id
    assert r.plan.offload.expert_layers_offloaded == x
    assert len(r.plan.offload.nvme_layers) == z
    # float cross-check: no candidate has a cheaper feasible offload level than the chosen cost
    float_best = min(c.total_cost(best_x(c, q)) for c in cands if best_x(c, q) is not None)
    assert r.plan.costs.objective_value <= float_best * 1.0001 + 0.01


@settings(max_examples=examples(12, 2), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctx=st.sampled_from([8192, 32768, 131072]), tok=st.sampled_from([0, 20, 50, 100]),
       conc=st.sampled_from([1, 4, 16]), model=st.sampled_from(["qwen3-30b-a3b", "llama-3.1-8b", "gpt-oss-20b"]))
def test_every_returned_plan_passes_the_independent_check(ctx, tok, conc, model):
    q = small_query(model=model, context=ctx, tok_s=tok, concurrency=conc)
    r = cheapest(q)
    for p in ([r.plan] if r.plan else []) + r.alternatives:
        assert check(p, q) == []


@settings(max_examples=examples(8, 1), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tok=st.sampled_from([10, 30, 60]), ratio=st.floats(0.5, 2.0))
def test_a_budget_binds_exactly_at_the_proven_optimum(tok, ratio):
    """A budget at or above the optimum changes nothing; below it (a budget that binds) nothing is feasible, since
    the optimum is proven: half of the generated budgets bind."""
    q = small_query(tok_s=tok)
    r = cheapest(q)
    if r.plan is None:
        return
    assert r.status == "OPTIMAL"
    capped = cheapest(q.model_copy(update={"max_budget": r.cost * ratio}))
    if ratio >= 1.0:
        assert capped.plan is not None and capped.cost == pytest.approx(r.cost, rel=1e-9, abs=1e-6)
    else:
        assert capped.plan is None and capped.status == "INFEASIBLE"


@settings(max_examples=examples(8, 1), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t1=st.sampled_from([5, 20, 40]), t2=st.sampled_from([60, 90, 150]))
def test_higher_tok_s_never_lowers_cost(t1, t2):
    a = cheapest(small_query(tok_s=t1))
    b = cheapest(small_query(tok_s=t2))
    if b.plan is not None:
        assert a.plan is not None and a.cost <= b.cost + 1e-6


@pytest.mark.parametrize("drop", SMALL)
def test_removing_an_accelerator_never_lowers_cost(drop):
    full = cheapest(small_query(tok_s=30))
    fewer = cheapest(small_query(tok_s=30, gpus=[g for g in SMALL if g != drop]))
    if fewer.plan is not None:
        assert full.plan is not None and full.cost <= fewer.cost + 1e-6


def test_infeasible_on_a_small_catalogue_reports_reasons_and_relaxations():
    r = cheapest(small_query(tok_s=30, max_budget=100, top=1))
    assert r.plan is None and r.status == "INFEASIBLE"
    assert any("budget" in x for x in r.infeasible_reasons)
    no_cap = next(x for x in r.relaxations if x.change == "no budget cap")
    assert no_cap.cost == pytest.approx(cheapest(small_query(tok_s=30, top=1)).cost)


@pytest.mark.slow
def test_infeasible_reports_reasons_and_relaxations():
    q = Query(model="deepseek-v4-pro", context=393216, tok_s=20, max_budget=1000, top=1)
    r = cheapest(q)
    assert r.plan is None and r.status == "INFEASIBLE"
    assert any("budget" in x for x in r.infeasible_reasons)
    assert any(x.change == "no budget cap" and x.cost > 1000 for x in r.relaxations)


def test_quality_floor_above_native_is_infeasible():
    # V4 routed experts are stored at 4.25 bits (MXFP4); asking for 8-bit experts cannot be met by re-quantizing
    r = cheapest(Query(model="deepseek-v4-flash", context=32768, min_expert_bits=8, gpus=["h200"], top=1))
    assert r.plan is None
    assert any(x.change == "no quality floor" for x in r.relaxations)


def test_deterministic_on_a_small_catalogue():
    q = small_query(tok_s=30, top=3)
    a, b = cheapest(q), cheapest(q)
    assert a.plan.model_dump_json() == b.plan.model_dump_json()
    assert [p.candidate_id for p in a.alternatives] == [p.candidate_id for p in b.alternatives]
    assert len(a.alternatives) == 2 and all(p.costs.objective_value >= a.cost for p in a.alternatives)


@pytest.mark.slow
def test_deterministic():
    q = Query(model="deepseek-v4-pro", context=393216, tok_s=20, top=3)
    a, b = cheapest(q), cheapest(q)
    assert a.plan.model_dump_json() == b.plan.model_dump_json()
    assert [p.candidate_id for p in a.alternatives] == [p.candidate_id for p in b.alternatives]


@pytest.mark.slow
def test_v4_pro_one_h200_node_fits_with_vllm_accounting():
    # rented: H200s come as whole 8-GPU instances (bought, a partly filled server streaming experts is cheaper)
    r = cheapest(Query(model="deepseek-v4-pro", context=393216, gpus=["h200"], engines=["vllm"], top=1,
                       objective="hourly"))
    p = r.plan
    assert p.hardware.node == "hgx-h200-8" and p.hardware.n_nodes == 1 and p.quant == "native"
    assert p.hardware.gpus_per_node == 8 and p.offload.mode == "none"
    # engines load the main model only (the MTP layer is read only for speculative decoding): 864.7 GB - MTP
    from optimizer.estimate.schemes import get_scheme
    from optimizer.estimate.weights import weight_breakdown
    m = resolve_model("deepseek-v4-pro")
    main = weight_breakdown(m.spec, get_scheme("native", m.storage), include_mtp=False).total
    assert 845e9 < main < 855e9
    assert p.memory.weights_bytes == pytest.approx(main / 8, rel=1e-6)
    assert p.memory.headroom_bytes > 0 and "fits" in p.notes[0]


@pytest.mark.slow
def test_v4_pro_1m_context_fits_where_weights_fit():
    a = cheapest(Query(model="deepseek-v4-pro", context=393216, gpus=["h200"], engines=["vllm"], top=1))
    b = cheapest(Query(model="deepseek-v4-pro", context=1048576, gpus=["h200"], engines=["vllm"], top=1))
    assert b.plan.hardware == a.plan.hardware
    assert b.plan.memory.kv_bytes - a.plan.memory.kv_bytes < 5 * 2**30


def test_owned_workstation_offloads_experts():
    q = Query(model="deepseek-v4-flash", context=393216, owned=Owned.parse("2x rtx-4090, 256GB ddr5"), top=1)
    r = cheapest(q)
    p = r.plan
    assert p.hardware.owned and p.costs.capex_usd == 0
    assert p.offload.mode == "cpu" and p.offload.expert_layers_offloaded > 0
    assert p.memory.host_used_bytes <= 256e9
    assert p.speed.tok_s_per_seq > 0


def test_owned_parse_errors():
    from optimizer.errors import CatalogError, InputError
    with pytest.raises(InputError):
        Owned.parse("256GB ddr5")
    with pytest.raises(CatalogError):
        Owned.parse("2x rtx-4099")


def test_cli_cheapest_json_and_out(tmp_path):
    from typer.testing import CliRunner

    from optimizer.cli import app
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(app, ["cheapest", "qwen3-30b-a3b", "-c", "32K", "--tok-s", "30", "--gpus", "rtx-4090,l40s",
                                   "--json", "--out", str(out), "--top", "2"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["schema_id"] == "rigopt.cheapest/1" and d["status"] == "OPTIMAL"
    plan = json.loads(out.read_text())
    assert plan["schema_id"] == "rigopt.plan/1" and plan["context"] == 32768
    assert plan == d["plan"]


def test_cli_infeasible_exit_code_in_process():
    from typer.testing import CliRunner

    from optimizer.cli import app
    res = CliRunner().invoke(app, ["cheapest", "qwen3-30b-a3b", "-c", "32K", "--tok-s", "30",
                                   "--gpus", ",".join(SMALL), "--max-budget", "100", "--top", "1"])
    assert res.exit_code == 3, res.output
    assert "relax" in res.output.lower()


@pytest.mark.slow
def test_cli_infeasible_exit_code():
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "optimizer", "cheapest", "deepseek-v4-pro", "--tok-s", "20",
                        "--max-budget", "100", "--top", "1"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 3
    assert "relax" in p.stdout.lower()
    p = subprocess.run([sys.executable, "-m", "optimizer", "cheapest", "deepseek-v4-pro", "--tok-s", "-3"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "tok-s" in p.stderr and "Traceback" not in p.stderr
    for bad, needle in ((["--quant", "q7_z"], "unknown quantization"), (["--kv-dtype", "fp7"], "unknown KV dtype")):
        p = subprocess.run([sys.executable, "-m", "optimizer", "cheapest", "deepseek-v4-pro", *bad],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_engine_kernel_support_rules():
    from optimizer.catalog.hardware import load_hardware
    from optimizer.catalog.models import resolve_model
    from optimizer.solver.support import unsupported
    v4, v32, dense = (resolve_model(k).spec for k in ("deepseek-v4-flash", "deepseek-v3.2", "llama-3.1-8b"))
    assert all(a.arch for a in load_hardware().accelerators.values())
    assert unsupported("vllm", v4, "sm80") and unsupported("sglang", v32, "sm86")
    assert unsupported("vllm", v4, "sm90") is None and unsupported("sglang", v4, "gfx942") is None
    assert unsupported("llamacpp", v4, "sm86") is None and unsupported("vllm", dense, "sm80") is None
    # KTransformers V4-Flash on an RTX 5090 (doc/en/DeepSeek-V4-Flash.md), with its MXFP4 experts only
    assert unsupported("sglang", v4, "sm120", {"mxfp4"}, kt=True, expert_formats={"mxfp4"}) is None
    assert "mxfp4" in (unsupported("sglang", v4, "sm120", kt=True, expert_formats={"int4-g128"}) or "")
    assert unsupported("sglang", v4, "sm120") is not None


def test_v4_on_ampere_workstation_is_llamacpp():
    # vLLM/SGLang have no DeepSeek-V4 sparse-attention kernels for sm86 (RTX 3090); llama.cpp runs it, and so does
    # SGLang through KTransformers' build (doc/en/DeepSeek-V4-Flash.md validates SM_86), only with experts on the
    # CPU in their native MXFP4 format
    r = cheapest(Query(model="deepseek-v4-flash", context=393216, owned=Owned.parse("4x rtx-3090, 512GB ddr5"),
                       tok_s=10, top=3))
    assert r.plan is not None
    for p in [r.plan, *r.alternatives]:
        assert p.engine == "llamacpp" or (p.engine == "sglang" and p.quant == "native" and p.offload.mode == "cpu"
                                          and p.offload.expert_layers_offloaded >= 1), p



def test_own_gguf_file_is_planned_as_is(tmp_path):
    """A GGUF file is served by llama.cpp in its own format, with its exact tensor bytes."""
    path = tmp_path / "tiny.gguf"
    write_llama_gguf(path, blocks=2, d=256, kv_dim=128, ff=512, vocab=1000, ctx=4096, output=True)
    tensors = {"token_embd.weight": (1000, 256), "output.weight": (1000, 256)}
    for i in range(2):
        tensors.update({f"blk.{i}.attn_q.weight": (256, 256), f"blk.{i}.attn_k.weight": (128, 256),
                        f"blk.{i}.attn_v.weight": (128, 256), f"blk.{i}.attn_output.weight": (256, 256),
                        f"blk.{i}.ffn_up.weight": (512, 256), f"blk.{i}.ffn_gate.weight": (512, 256),
                        f"blk.{i}.ffn_down.weight": (256, 512)})
    r = cheapest(Query(model=str(path), context=4096, gpus=["rtx-4090"], top=1))
    p = r.plan
    assert p is not None and p.engine == "llamacpp" and p.quant == "native"
    exact = sum(a * b for a, b in tensors.values()) * 2 + 5 * 256 * 4
    assert p.memory.weights_bytes == pytest.approx(exact)
    assert check(p, Query(model=str(path), context=4096, gpus=["rtx-4090"], top=1)) == []
