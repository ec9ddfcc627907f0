"""KTransformers done right (issue 20): --kt-method from the host CPU's ISA, the model x expert format x GPU
architecture support matrix (hardware/ktransformers.yaml, read from kvcache-ai/ktransformers at a pinned commit),
and ONE support rule (optimizer/solver/support.py) that estimate, cheapest, the checker and export all call: no
command chooses a plan another warns about."""

from __future__ import annotations

import pytest

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.ktransformers import load_kt_matrix
from optimizer.catalog.models import resolve_model
from optimizer.errors import CatalogError
from optimizer.export import export_plan
from optimizer.export.common import ExportError
from optimizer.layout import Parallel
from optimizer.report.estimate import estimate
from optimizer.solver.query import Owned, Query
from optimizer.solver.search import cheapest
from optimizer.solver.support import kt_method, plan_unsupported, unsupported
from optimizer.solver.validate import check

HOSTS = load_hardware().hosts


def spec(key: str):
    return resolve_model(key).spec


# ----------------------------------------------------------------------------------------------- kt-method per CPU

def test_amx_only_on_intel_sapphire_rapids_or_newer():
    """AMX is Intel-only, from Sapphire Rapids (4th-gen Xeon) on: every host row claiming it is such a Xeon, and
    every AMD host has none (the headline's EPYC host got AMXINT4 before)."""
    amx = {k for k, h in HOSTS.items() if "amx" in h.isa}
    assert amx == {"xeon-spr-8ch-ddr5-4800", "xeon-6900p-12ch-ddr5-6400", "xeon-6900p-12ch-mrdimm-8800",
                   "xeon-6700p-8ch-ddr5-6400"}
    for k, h in HOSTS.items():
        if "AMD" in h.name:
            assert "amx" not in h.isa, k
        if h.isa and "neon" not in h.isa:
            assert "avx2" in h.isa and "isa:" in h.source, k  # every x86 server/desktop CPU here has AVX2
    assert HOSTS["grace"].isa == ("neon",) and HOSTS["apple-m3-ultra"].isa == ("neon",)  # Arm: no x86 kernels


@pytest.mark.parametrize("host, v3_int4, qwen_int4, v3_fp8, v4_mxfp4", [
    # Intel Xeon with AMX: the AMX INT4 kernel (kt-kernel README "AMXINT4/INT8 | AMX | Sapphire Rapids (2023+)")
    ("xeon-spr-8ch-ddr5-4800", "AMXINT4", "AMXINT4", "FP8", "MXFP4"),
    ("xeon-6900p-12ch-ddr5-6400", "AMXINT4", "AMXINT4", "FP8", "MXFP4"),
    # AMD Zen 4/5 (AVX-512, no AMX): no AMX methods; Qwen3's GPTQ int4 runs on the AVX2 kernel (AVX2-Tutorial.md),
    # DeepSeek-V3's docs list no non-AMX int4 method
    ("epyc-9004-12ch-ddr5-4800", None, "GPTQ_INT4", "FP8", "MXFP4"),
    ("epyc-9005-12ch-ddr5-6000", None, "GPTQ_INT4", "FP8", "MXFP4"),
    ("threadripper-7000-8ch-ddr5", None, "GPTQ_INT4", "FP8", "MXFP4"),
    # AVX2 only (Zen 3, Intel client): the AVX2 fallbacks ("AVX2 backends — available on all x86_64")
    ("epyc-7003-8ch-ddr4-3200", None, "GPTQ_INT4", "FP8", "MXFP4"),
    ("desktop-intel-2ch-ddr5", None, "GPTQ_INT4", "FP8", "MXFP4"),
    # Arm: kt-kernel's x86 kernels do not apply
    ("grace", None, None, None, None),
])
def test_kt_method_per_cpu_family(host, v3_int4, qwen_int4, v3_fp8, v4_mxfp4):
    isa = HOSTS[host].isa
    assert kt_method(spec("deepseek-v3"), {"int4-g128"}, isa)[0] == v3_int4
    assert kt_method(spec("qwen3-235b-a22b"), {"int4-g128"}, isa)[0] == qwen_int4
    assert kt_method(spec("deepseek-v3"), {"fp8-block128"}, isa)[0] == v3_fp8
    assert kt_method(spec("deepseek-v4-pro"), {"mxfp4"}, isa)[0] == v4_mxfp4
    for fmts in ({"int4-g128"}, {"int8"}):
        method, why = kt_method(spec("deepseek-v3"), fmts, isa)
        if "amx" not in isa:
            assert method is None or not method.startswith("AMX")
            if method is None:
                assert why


def test_fp8_per_channel_needs_avx512():
    """FP8 per-channel has no AVX2 kernel (amx.py: AVX512F + AVX512BW + AVX512_BF16 + AVX512_VBMI only)."""
    from dataclasses import replace
    glm = replace(spec("deepseek-v3"), architecture="Glm4MoeForCausalLM", model_type="glm4_moe")
    assert kt_method(glm, {"fp8-channel"}, ("avx2", "avx512"))[0] == "FP8_PERCHANNEL"
    method, why = kt_method(glm, {"fp8-channel"}, ("avx2",))
    assert method is None and "FP8_PERCHANNEL needs avx512" in why


# ----------------------------------------------------------------------------------------------- support matrix

def test_support_matrix_is_sourced_and_consistent():
    kt = load_kt_matrix()
    assert len(kt.commit) == 40 and kt.repository == "kvcache-ai/ktransformers"
    archs = {a.arch for a in load_hardware().accelerators.values()}
    for m in kt.methods:
        assert m.source and set(m.isa) <= {"avx2", "avx512", "amx"}
        # AMX methods need AMX and nothing else will do; the converted ones are exactly the AMX ones
        assert (m.isa == ("amx",)) == m.method.startswith("AMX") == m.converted
    for row in kt.models:
        assert row.source and set(row.gpu_archs) <= archs, row.name
    v4 = kt.model_row("DeepseekV4ForCausalLM")
    assert v4 is not None and v4.methods == ("MXFP4",) and v4.sglang_build  # native MXFP4 experts, fork build
    assert set(v4.gpu_archs) == {"sm120", "sm89", "sm86"}  # doc/en/DeepSeek-V4-Flash.md "Validated" column


def test_every_catalogue_model_kt_documents_resolves_to_its_row():
    kt = load_kt_matrix()
    rows = {k: kt.model_row(spec(k).architecture, spec(k).model_type) for k in (
        "deepseek-v4-pro", "deepseek-v4-flash", "deepseek-v3", "deepseek-r1", "deepseek-v3.2", "kimi-k2-instruct",
        "qwen3-235b-a22b", "qwen3-30b-a3b", "qwen3-next-80b-a3b", "qwen3.5-397b-a17b", "minimax-m2.7")}
    assert all(rows.values()), [k for k, r in rows.items() if r is None]
    assert kt.model_row(spec("gpt-oss-120b").architecture) is None  # not in KTransformers' docs


def test_v4_only_with_native_mxfp4_experts_on_validated_gpus():
    v4 = spec("deepseek-v4-pro")
    ok = unsupported("sglang", v4, "sm89", {"mxfp4", "fp8-block128", "bf16"}, kt=True, expert_formats={"mxfp4"},
                     host_isa=HOSTS["epyc-9004-12ch-ddr5-4800"].isa)
    assert ok is None
    why = unsupported("sglang", v4, "sm89", {"int4-g128", "bf16"}, kt=True, expert_formats={"int4-g128"},
                      host_isa=HOSTS["epyc-9004-12ch-ddr5-4800"].isa)
    assert why and "only with experts in mxfp4" in why
    why = unsupported("sglang", v4, "sm89", {"nvfp4"}, kt=True, expert_formats={"nvfp4"})
    assert why and "mxfp4" in why
    # a GPU KTransformers' V4 docs do not list (Hopper): unvalidated, refused, even though upstream SGLang runs V4
    # there without KTransformers
    why = unsupported("sglang", v4, "sm90", {"mxfp4"}, kt=True, expert_formats={"mxfp4"})
    assert why and why.startswith("unvalidated")
    assert unsupported("sglang", v4, "sm90", {"mxfp4", "fp8-block128"}) is None
    # without KTransformers SGLang has no V4 sparse attention on Ada
    assert unsupported("sglang", v4, "sm89", {"mxfp4"})


def test_missing_matrix_file_is_a_catalog_error(tmp_path, monkeypatch):
    from optimizer.catalog import ktransformers, paths
    (tmp_path / "hardware").mkdir()
    (tmp_path / "hardware" / "ktransformers.yaml").write_text("commit: 123\nrepository: x\nmethods: []\nmodels: []\n")
    monkeypatch.setenv("RIGOPT_DATA_DIR", str(tmp_path))
    paths.data_dir.cache_clear()
    ktransformers.load_kt_matrix.cache_clear()
    try:
        with pytest.raises(CatalogError, match="commit"):
            ktransformers.load_kt_matrix()
    finally:
        monkeypatch.delenv("RIGOPT_DATA_DIR")
        paths.data_dir.cache_clear()
        ktransformers.load_kt_matrix.cache_clear()


# ----------------------------------------------------------------------------------------------- one rule

HEADLINE = dict(model="deepseek-v4-pro", context=393216, tok_s=20)
QUESTIONS = [
    Query(**HEADLINE, top=3),
    # planned on the expected figures: at --confidence 0.8 the cpu-experts interval (its low end near x0.04) leaves
    # no SGLang + KTransformers plan, and this question is about the plan's kt-method and format
    Query(**HEADLINE, engines=["sglang"], top=3, confidence=0),
    Query(model="deepseek-v4-flash", context=393216, owned=Owned.parse("4x rtx-3090, 512GB ddr5"), tok_s=10, top=3),
    Query(model="deepseek-v3", context=32768, tok_s=10, engines=["sglang"], top=3),
    Query(model="qwen3-235b-a22b", context=32768, tok_s=15, engines=["sglang", "llamacpp"], top=3),
]


@pytest.fixture(scope="module")
def answers():
    return [(q, cheapest(q)) for q in QUESTIONS]


def _plans(res):
    out = [] if res.plan is None else [res.plan]
    out += res.alternatives + [f.plan for f in res.frontier]
    return out


def test_no_command_chooses_what_estimate_warns_about(answers):
    """For every plan `cheapest` returns (headline, alternatives, frontier tiers) over a set of questions,
    `estimate` on the same hardware/engine/quant/offload prints no WARNING, and the checker and export agree."""
    n = 0
    for q, res in answers:
        assert res.plan is not None, q
        for p in _plans(res):
            if p.hardware.n_nodes != 1:
                continue
            m = resolve_model(p.model)
            x = p.offload.expert_layers_offloaded
            r = estimate(m, context=p.context, concurrency=p.concurrency, quants=[p.quant], kv_dtype=p.kv_dtype,
                         engine=p.engine, engine_explicit=True, gpu=p.hardware.accelerator,
                         gpus=p.hardware.gpus_per_node,
                         parallel=Parallel(tp=p.parallel.tp, pp=p.parallel.pp, dp=p.parallel.dp, ep=p.parallel.ep),
                         cpu_moe_layers=x or None)
            assert r.hardware is not None
            warn = [s for s in r.hardware.notes if s.startswith("WARNING")]
            assert not warn, (p.candidate_id, warn)
            assert check(p, q) == [], p.candidate_id  # the independent checker (the same rule, and the rest)
            n += 1
    assert n >= 15


def test_estimate_warns_where_cheapest_would_not_choose():
    """The negative side of the same rule: the old headline (int4 experts under SGLang + KTransformers on 8x L40S,
    an EPYC host) is refused by the checker, warned about by estimate and not exported."""
    m = resolve_model("deepseek-v4-pro")
    r = estimate(m, context=393216, quants=["int4"], engine="sglang", engine_explicit=True, gpu="l40s", gpus=8,
                 cpu_moe_layers=40)
    assert r.hardware is not None and r.hardware.notes[0].startswith("WARNING") and "mxfp4" in r.hardware.notes[0]
    node = load_hardware().nodes["pcie-l40s-8"]
    from optimizer.estimate.schemes import get_scheme
    why = plan_unsupported("sglang", m.spec, "sm89", get_scheme("int4", m.storage), "cpu", 40,
                           HOSTS[node.host].isa)
    assert why and "mxfp4" in why


def _kt_plan(answers):
    for _q, res in answers:
        for p in _plans(res):
            if p.engine == "sglang" and p.offload.mode == "cpu" and p.offload.expert_layers_offloaded:
                if p.model == "deepseek-v4-pro":
                    return p
    raise AssertionError("no SGLang + KTransformers plan for DeepSeek-V4-Pro among the answers")


def test_headline_kt_export_names_a_method_for_its_cpu_and_model(answers):
    """The main job asked of SGLang (the engine of the old headline): its export's --kt-method runs on the node's
    host CPU (no AMX method on an AMD host) and reads the expert format KTransformers supports for V4 (MXFP4)."""
    p = _kt_plan(answers)
    res = export_plan(p, "sglang", None)
    argv = [str(a) for a in res.commands[0].argv]
    vals = dict(zip(argv, argv[1:], strict=False))
    method = vals["--kt-method"]
    host = HOSTS[load_hardware().nodes[p.hardware.node].host]
    km = load_kt_matrix().method(method)
    assert set(km.isa) & set(host.isa)
    assert method == "MXFP4" and p.quant == "native"
    assert any("sglang-kt" in w or "fork" in w for w in res.warnings)


def test_export_refuses_what_the_rule_refuses(answers):
    p = _kt_plan(answers)
    bad = p.model_copy(update={"quant": "int4"})
    with pytest.raises(ExportError, match="mxfp4"):
        export_plan(bad, "sglang", None)
