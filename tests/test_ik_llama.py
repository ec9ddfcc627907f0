"""ik_llama.cpp as an engine (issue 20): its own GGML types with exact bits per weight, memory and speed through
llama.cpp's physics, a `cheapest --engine ik_llama` candidate that offloads experts with -ot, and an export whose
every flag is in the allow-list extracted from its own parser at the pinned commit (optimizer/engines.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from optimizer.arch.formats import IK_LLAMA_FORMATS, get_format
from optimizer.catalog.hardware import get_accelerator
from optimizer.catalog.models import resolve_model
from optimizer.engines import IK_LLAMA_COMMIT, engine_key, physics_engine
from optimizer.estimate.deployment import Deployment, Hardware, Offload, evaluate, resident_weights
from optimizer.estimate.schemes import IK_QUANTS, SCHEMES
from optimizer.export import export_plan
from optimizer.export.common import ExportError
from optimizer.layout import Parallel
from optimizer.solver.query import Query
from optimizer.solver.search import cheapest
from optimizer.solver.support import format_unsupported, unsupported
from optimizer.solver.validate import check
from tools.extract_flags import extract_ik_llama

FLAGS = Path(__file__).parent / "data" / "engine_flags" / f"ik_llama-{IK_LLAMA_COMMIT[:9]}.txt"


def allow_list() -> dict[str, str]:
    out = {}
    for line in FLAGS.read_text().splitlines():
        if line and not line.startswith("#"):
            flag, typ = line.split("\t")[:2]
            out[flag] = typ
    return out


def flags_of(cmd) -> list[tuple[str, str | None]]:
    """(flag, value) pairs of an exported llama-server command, checked against the pinned allow-list."""
    allow = allow_list()
    argv = [str(a) for a in cmd.argv]
    assert argv[0] == "llama-server" and cmd.tool == "ik_llama"
    out, i = [], 1
    while i < len(argv):
        flag = argv[i]
        assert flag in allow, f"{flag} is not a flag of ik_llama.cpp {IK_LLAMA_COMMIT}"
        if allow[flag] == "flag":
            out.append((flag, None))
            i += 1
            continue
        value = argv[i + 1]
        if allow[flag] == "int":
            int(value)  # the parser's std::stoi must accept it ("-ngl all" would throw there)
        elif allow[flag] == "float":
            float(value)
        out.append((flag, value))
        i += 2
    return out


# ----------------------------------------------------------------------------------------------- formats

# bits per weight printed by ik_llama.cpp's own quantize help (examples/quantize/quantize.cpp QUANT_OPTIONS at the
# pinned commit: "IQ4_KS ... 4.25 bpw", "IQ2_KL ... 2.69 bpw", "IQ6_K ... 6.6 bpw", ...), against the block sizes
# of ggml-common.h that formats.py stores
QUANTIZE_HELP_BPW = {"iq1_kt": 1.75, "iq2_kt": 2.125, "iq2_ks": 2.1875, "iq2_k": 2.375, "iq2_kl": 2.69,
                     "iq3_kt": 3.125, "iq3_ks": 3.19, "iq3_k": 3.44, "iq4_kss": 4.0, "iq4_kt": 4.0,
                     "iq4_ks": 4.25, "iq4_k": 4.5, "iq5_ks": 5.25, "iq5_k": 5.5, "iq6_k": 6.6}


@pytest.mark.parametrize("name, bpw", sorted(QUANTIZE_HELP_BPW.items()))
def test_ik_types_bits_per_weight_match_its_quantize_help(name, bpw):
    assert get_format(name).bits_per_weight == pytest.approx(bpw, abs=0.03)
    if f"{name}_r4" in IK_LLAMA_FORMATS:  # row-interleaved repacks: the same blocks
        assert get_format(f"{name}_r4").bits_per_weight == get_format(name).bits_per_weight


def test_ik_types_hand_calculation():
    # block_iq4_ks: QK_K/32 scale bytes + QK_K/2 nibble bytes = 8 + 128 = 136 B per 256 weights = 4.25 bpw
    assert get_format("iq4_ks").bits_per_weight == 136 * 8 / 256 == 4.25
    # block_iq3_k: half d + 2 uint16 + QK_K/32 + QK_K/4 + QK_K/8 = 2 + 4 + 8 + 64 + 32 = 110 B = 3.4375 bpw
    assert get_format("iq3_k").bits_per_weight == 110 * 8 / 256


def test_moe_mix_memory_by_hand():
    """DeepSeek-V3 in iq4_ks-moe: routed experts at 4.25 bpw, attention/shared/dense at Q8_0 (8.5 bpw)."""
    m = resolve_model("deepseek-v3")
    _, w = resident_weights(m, "iq4_ks-moe", "ik_llama", include_mtp=False)
    routed = sum(layer.params.get("routed_experts", 0) for layer in m.spec.main_layers)
    assert w.routed_expert_bytes == pytest.approx(routed * 4.25 / 8, rel=1e-9)
    # by hand from DeepSeek-V3's config.json: 58 MoE layers (61 - first_k_dense_replace 3) x 256 routed experts x
    # 3 matrices x hidden 7168 x moe_intermediate 2048 = 653.9e9 weights; x 4.25 bits = 347.39 GB
    assert routed == 58 * 256 * 3 * 7168 * 2048
    assert w.routed_expert_bytes / 1e9 == pytest.approx(347.39, abs=0.01)


def test_ik_schemes_are_ik_only():
    assert set(IK_QUANTS) == {n for n, s in SCHEMES.items() if s.ik}
    for n in IK_QUANTS:
        fmts = {f for mix in SCHEMES[n].mixes.values() for _, f in mix}
        assert fmts & set(IK_LLAMA_FORMATS), n
        for eng in ("llamacpp", "ollama", "lmstudio"):
            assert format_unsupported(eng, "sm89", fmts), (eng, n)
        assert format_unsupported("ik_llama", "sm89", fmts) is None


# ----------------------------------------------------------------------------------------------- support, physics

def test_engine_key_and_support():
    assert engine_key("ik_llama.cpp") == engine_key("ik-llama") == "ik_llama"
    v3 = resolve_model("deepseek-v3").spec
    assert unsupported("ik_llama", v3, "sm86") is None
    for arch in ("gfx942", "apple-m3", "sm70", "gaudi3"):  # its README: only CPU and CUDA Turing or newer
        assert unsupported("ik_llama", v3, arch), arch


def test_speed_is_llamacpps_physics():
    """ik_llama has no fitted factors of its own: the same deployment predicts the same as llama.cpp."""
    assert physics_engine("ik_llama") == "llamacpp"
    m = resolve_model("deepseek-v3")
    acc = get_accelerator("rtx-3090")
    d = Deployment(model=m, quant="q4_k_m", engine="llamacpp", hardware=Hardware(acc, None, 1, 4),
                   parallel=Parallel(pp=4), context=32768, concurrency=1, offload=Offload(mode="cpu", dram_layers=45))
    a, b = evaluate(d), evaluate(replace(d, engine="ik_llama"))
    assert a.decode.tok_s_per_seq == pytest.approx(b.decode.tok_s_per_seq, rel=1e-12)
    assert a.memory.used_bytes == pytest.approx(b.memory.used_bytes, rel=1e-12)


# ----------------------------------------------------------------------------------------------- cheapest, export

@pytest.fixture(scope="module")
def ik_answer():
    # on the expected figures: the offload plan is the point here, and at --confidence 0.8 the cpu-experts
    # interval's low end (near x0.04) would ask several hundred tok/s of it
    q = Query(model="deepseek-v3", context=32768, tok_s=10, engines=["ik_llama"], top=3, confidence=0)
    return q, cheapest(q)


def test_cheapest_engine_ik_llama(ik_answer):
    q, r = ik_answer
    assert r.plan is not None
    plans = [r.plan, *r.alternatives, *[f.plan for f in r.frontier]]
    assert {p.engine for p in plans} == {"ik_llama"}
    assert any(p.quant in IK_QUANTS for p in plans)  # its own types are candidates
    assert r.plan.offload.mode == "cpu" and r.plan.offload.expert_layers_offloaded > 0
    for p in plans:
        assert check(p, q) == [], p.candidate_id


def test_llamacpp_never_gets_ik_types():
    r = cheapest(Query(model="deepseek-v3", context=32768, tok_s=10, engines=["llamacpp"], top=5))
    plans = [r.plan, *r.alternatives, *[f.plan for f in r.frontier]]
    assert all(p is not None and p.quant not in IK_QUANTS for p in plans)


def test_export_flags_in_pinned_allow_list(ik_answer):
    _, r = ik_answer
    plans = [r.plan, *r.alternatives, *[f.plan for f in r.frontier]]
    for p in plans:
        res = export_plan(p, None, None)
        pairs = flags_of(res.commands[0])
        vals = dict(pairs)
        layers = sorted(p.offload.offloaded_layers)
        if layers:  # exactly the plan's layers go to the CPU, by tensor name
            ot = vals["-ot"]
            assert ot.endswith("=CPU") and "," not in ot  # ik splits -ot on ',' (parse_buft_overrides)

            rx = re.compile(ot[:-len("=CPU")])
            hit = {i for i in range(len(resolve_model(p.model).spec.main_layers))
                   if rx.search(f"blk.{i}.ffn_up_exps.weight")}
            assert hit == set(layers)
        assert int(vals["-ngl"]) > len(resolve_model(p.model).spec.main_layers)
        assert "-rtr" not in vals and "-fmoe" not in vals and "--fit" not in vals
        assert vals["-mla"] == "3"  # DeepSeek-V3 is an MLA model
        assert vals["-ctk"] == vals["-ctv"]


def test_export_refuses_ik_types_for_llamacpp(ik_answer):
    _, r = ik_answer
    p = next((f.plan for f in r.frontier if f.plan.quant in IK_QUANTS), None)
    assert p is not None
    with pytest.raises(ExportError, match="ik_llama"):
        export_plan(p, "llamacpp", None)


def test_extractor_reads_parser_blocks():
    src = '''
bool gpt_params_find_arg(int argc, char ** argv, const std::string & arg, gpt_params & params, int & i) {
    if (arg == "-t" || arg == "--threads") {
        CHECK_ARG
        params.n_threads = std::stoi(argv[i]);
        return true;
    }
    if (arg == "-rtr" || arg == "--run-time-repack") {
        params.repack_tensors = true;
        return true;
    }
    if (arg == "--temp") {
        CHECK_ARG
        params.sparams.temp = std::stof(argv[i]);
        return true;
    }
    if (arg == "-ot" || arg == "--override-tensor") {
        CHECK_ARG
        if (!parse_buft_overrides(std::string{ argv[i] }, params.tensor_buft_overrides)) {
            invalid_param = true;
        }
        return true;
    }
'''
    rows = extract_ik_llama(src)
    assert {k: v[0] for k, v in rows.items()} == {"-t": "int", "--threads": "int", "-rtr": "flag",
                                                  "--run-time-repack": "flag", "--temp": "float",
                                                  "-ot": "str", "--override-tensor": "str"}
