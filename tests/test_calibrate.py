"""`rigopt calibrate`: log parsers on real quoted lines (tests/data/logs/README.md says where each comes from),
identification, the factor arithmetic, and estimate/cheapest applying a profile inside evaluate()."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml

from optimizer.errors import InputError
from optimizer.estimate.calibration import AppliedCalibration, Calibration, CalibrationEntry
from optimizer.fidelity import logs
from optimizer.fidelity.usercal import (
    Overrides,
    _model_from_name,
    _speed,
    compare,
    identify,
    match_accelerator,
    quant_of,
    run_calibrate,
)

LOGS = Path(__file__).parent / "data" / "logs"


def by_metric(ms):
    return {(m.metric, m.depth): m for m in ms}


# ------------------------------------------------------------------------------------------------ parsers
def test_llama_bench_table_spark():
    """benches/dgx-spark.md rows: pp2048 3175.62, tg32 60.92, and at d32768 1292.19 / 30.80 (the quoted t/s)."""
    ms = logs.parse_file(str(LOGS / "llama_bench_spark.md"))
    got = by_metric(ms)
    assert got[("prefill_tok_s", 0)].value == 3175.62 and got[("prefill_tok_s", 0)].isl == 2048
    assert got[("decode_tok_s", 0)].value == 60.92 and got[("decode_tok_s", 0)].osl == 32
    assert got[("prefill_tok_s", 32768)].value == 1292.19
    assert got[("decode_tok_s", 32768)].value == 30.80
    m = got[("decode_tok_s", 0)]
    assert m.model_label == "qwen3moe 30B.A3B Q8_0" and m.quant_label == "Q8_0" and m.params_b == 30.53
    assert m.flag("backend") == "CUDA" and m.flag("n_ubatch") == "2048" and m.engine == "llamacpp"


def test_llama_bench_rows_as_quoted_on_one_line():
    """The quote field itself (rows joined by `| |`, no header): read by position."""
    quote = ("| gpt-oss 120B MXFP4 MoE         |  59.02 GiB |   116.83 B | Vulkan     |  99 |  1 |    0 |           "
             "pp512 |        719.91 ± 4.36 | | gpt-oss 120B MXFP4 MoE         |  59.02 GiB |   116.83 B | Vulkan     "
             "|  99 |  1 |    0 |           tg128 |         56.61 ± 0.08 | build: 0253fb21f (9187)")
    got = by_metric(logs.parse_text(quote, "quote"))
    assert got[("prefill_tok_s", 0)].value == 719.91 and got[("decode_tok_s", 0)].value == 56.61
    assert got[("decode_tok_s", 0)].params_b == 116.83 and got[("decode_tok_s", 0)].flag("backend") == "Vulkan"


def test_llama_bench_table_with_device_and_build_lines():
    ms = logs.parse_file(str(LOGS / "llama_bench_strixhalo.md"))
    assert {m.value for m in ms} == {719.91, 56.61}
    assert all(m.hardware_label == "Radeon 8060S Graphics" and m.n_devices == 1 for m in ms)
    assert all(m.engine_version == "b9187 (0253fb21f)" for m in ms)


def test_llama_bench_json_same_figures_as_the_table():
    ms = logs.parse_file(str(LOGS / "llama_bench_strixhalo.json"))
    got = by_metric(ms)
    assert got[("prefill_tok_s", 0)].value == 719.91 and got[("prefill_tok_s", 0)].isl == 512
    assert got[("decode_tok_s", 0)].value == 56.61 and got[("decode_tok_s", 0)].osl == 128
    assert got[("decode_tok_s", 0)].params_b == pytest.approx(116.829156672)
    assert got[("decode_tok_s", 0)].quant_label == "MXFP4 MoE"


def test_llama_bench_jsonl_and_csv():
    rows = json.loads((LOGS / "llama_bench_strixhalo.json").read_text())
    jsonl = "\n".join(json.dumps(r) for r in rows)
    assert {m.value for m in logs.parse_text(jsonl, "b.jsonl")} == {719.91, 56.61}
    keys = ["model_type", "model_n_params", "n_prompt", "n_gen", "n_depth", "avg_ts", "gpu_info"]
    csv = ",".join(keys) + "\n" + "\n".join(",".join(f'"{r[k]}"' for k in keys) for r in rows)
    assert {m.value for m in logs.parse_text(csv, "b.csv")} == {719.91, 56.61}


def test_llama_server_print_timings():
    """club-3090 #1106: prompt eval 7008 tokens at 257.35 tok/s, eval 412 tokens at 22.55 tok/s."""
    got = {m.metric: m for m in logs.parse_file(str(LOGS / "llama_server_4x3090.log"))}
    assert got["prefill_tok_s"].value == 257.35 and got["prefill_tok_s"].isl == 7008
    assert got["decode_tok_s"].value == 22.55 and got["decode_tok_s"].osl == 412
    assert got["decode_tok_s"].depth == 7008  # decode runs after the prompt: its KV is in context


def test_llama_cli_perf_lines_say_runs():
    """llama_perf_context_print writes `runs` on the eval line (lcpp-epyc9654-1x3090 quote); a 13-token prompt is
    too short to say anything about prefill, so only decode (3.28 tok/s) is read."""
    text = ("prompt eval time =    2659.54 ms /    13 tokens (  204.58 ms per token,     4.89 tokens per second)\n"
            "       eval time =  155924.77 ms /   512 runs   (  304.54 ms per token,     3.28 tokens per second)\n")
    ms = logs.parse_text(text, "cli.log")
    assert [(m.metric, m.value) for m in ms] == [("decode_tok_s", 3.28)]


def test_vllm_bench_serve_block():
    """gpustack H100 Qwen3-8B: 100 requests, 23260 in / 22061 out -> 233 / 221 tokens per request, c4."""
    got = {m.metric: m for m in logs.parse_file(str(LOGS / "vllm_bench_h100_qwen3_8b.txt"))}
    assert got["tpot_ms"].value == 7.40 and got["ttft_ms"].value == 60.26 and got["output_tok_s"].value == 496.88
    assert (got["tpot_ms"].isl, got["tpot_ms"].osl, got["tpot_ms"].concurrency) == (233, 221, 4)
    assert got["tpot_ms"].engine == "vllm"


def test_sglang_bench_serving_block():
    """sgl-cookbook B200: 500 requests, 249831 / 252162 tokens -> 500 / 504 per request, max concurrency 100."""
    got = {m.metric: m for m in logs.parse_file(str(LOGS / "sglang_bench_b200_qwen3_235b.txt"))}
    assert got["tpot_ms"].value == 34.04 and got["ttft_ms"].value == 122.68
    assert (got["tpot_ms"].isl, got["tpot_ms"].osl, got["tpot_ms"].concurrency) == (500, 504, 100)
    assert got["tpot_ms"].engine == "sglang"


def test_serving_result_json():
    r = {"backend": "vllm", "completed": 100, "total_input_tokens": 23260, "total_output_tokens": 22061,
         "max_concurrency": 4, "median_ttft_ms": 60.26, "median_tpot_ms": 7.40, "output_throughput": 496.88}
    got = {m.metric: m for m in logs.parse_text(json.dumps(r), "r.json")}
    assert got["tpot_ms"].value == 7.40 and got["tpot_ms"].concurrency == 4 and got["tpot_ms"].isl == 233
    sg = dict(r, backend="sglang")
    assert {m.engine for m in logs.parse_text(json.dumps(sg) + "\n", "r.jsonl")} == {"sglang"}


def test_vllm_startup_lines():
    """14.99 GiB of weights, 19.28 GiB KV pool, 157,936 tokens, 1.20x at 131,072 tokens (GiB = 2^30)."""
    got = {m.metric: m for m in logs.parse_file(str(LOGS / "vllm_startup_a100.log"))}
    assert got["weights_bytes"].value == pytest.approx(14.99 * 2**30)
    assert got["kv_pool_bytes"].value == pytest.approx(19.28 * 2**30)
    assert got["kv_pool_tokens"].value == 157936 and got["max_concurrency"].value == 1.20
    assert got["weights_bytes"].max_model_len == 131072


def test_sglang_startup_lines():
    """K 8.23 GB + V 8.23 GB; SGLang's GB is 2^30 (measurements/measurements.yaml header)."""
    got = {m.metric: m for m in logs.parse_file(str(LOGS / "sglang_startup_4xh100.log"))}
    assert got["kv_pool_bytes"].value == pytest.approx((8.23 + 8.23) * 2**30)
    assert got["kv_pool_tokens"].value == 367404
    mla = logs.parse_text("[2025-10-07 23:17:19 DP0 TP0] KV Cache is allocated. #tokens: 975424, KV size: 43.67 GB",
                          "s.log")
    assert {m.metric: m.value for m in mla}["kv_pool_bytes"] == pytest.approx(43.67 * 2**30)


@pytest.mark.parametrize("text", ["", "hello\nworld\n", "| a | b |\n", "[1, 2, 3]", '{"x": 1}',
                                  "============ Serving Benchmark Result ============\nfoo: bar\n"])
def test_unrecognised_logs_are_refused(text):
    with pytest.raises(InputError):
        logs.parse_text(text, "bad.log")


# ------------------------------------------------------------------------------------------------ identification
@pytest.mark.parametrize("printed, key", [("NVIDIA GeForce RTX 4090", "rtx-4090"),
                                          ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"),
                                          ("NVIDIA GeForce RTX 3090", "rtx-3090"), ("h200", "h200-sxm")])
def test_gpu_names_as_printed(printed, key):
    assert match_accelerator(printed) == key


def test_unknown_gpu_names_the_flag():
    with pytest.raises(InputError, match="--gpu"):
        match_accelerator("Imaginary Graphics 9000")


@pytest.mark.parametrize("label, q", [("Q4_K - Medium", "q4_k_m"), ("Q8_0", "q8_0"), ("MXFP4 MoE", "mxfp4"),
                                      ("IQ2_XXS - 2.0625 bpw", "iq2_xxs"), ("Q2_K - Medium", "q2_k_m")])
def test_llama_cpp_file_types(label, q):
    if q == "q2_k_m":  # llama.cpp's Q2_K ftype is printed 'Q2_K - Medium': not a preset of its own
        with pytest.raises(InputError):
            quant_of(label)
        return
    assert quant_of(label) == q


def test_model_from_names_and_params():
    assert _model_from_name("DeepSeek-V4-Flash-0731-UD-IQ2_XXS-00001-of-00006.gguf") == "deepseek-v4-flash"
    assert _model_from_name("Qwen/Qwen3-8B") == "qwen3-8b"
    ms = logs.parse_file(str(LOGS / "llama_bench_strixhalo.md"))
    s = identify(ms[0], Overrides(gpu="ryzen-ai-max-395-128gb"))
    # 'gpt-oss 120B MXFP4 MoE', 116.83 B parameters -> the catalogue's gpt-oss-120b
    assert (s.model, s.quant, s.engine, s.gpus) == ("gpt-oss-120b", "mxfp4", "llamacpp", 1)


def test_identification_failures_name_the_flag():
    ms = logs.parse_file(str(LOGS / "llama_server_4x3090.log"))
    with pytest.raises(InputError, match="--gpu"):
        identify(ms[0], Overrides())
    with pytest.raises(InputError, match="--model"):
        identify(ms[0], Overrides(gpu="rtx-3090"))
    with pytest.raises(InputError, match="--quant"):
        identify(ms[0], Overrides(gpu="rtx-3090", model="deepseek-v4-flash"))
    s = identify(ms[0], Overrides(gpu="rtx-3090", gpus=4, model="deepseek-v4-flash", quant="iq2_xxs"))
    assert (s.accelerator, s.gpus) == ("rtx-3090", 4)


def test_flags_override_the_log():
    ms = logs.parse_file(str(LOGS / "llama_bench_strixhalo.json"))
    s = identify(ms[0], Overrides(gpu="rtx-4090", quant="q4_k_m", model="gpt-oss-20b"))
    assert (s.accelerator, s.quant, s.model) == ("rtx-4090", "q4_k_m", "gpt-oss-20b")


# ------------------------------------------------------------------------------------------------ factor arithmetic
def _m(metric, value, **kw):
    return logs.Measurement(file="x", line=1, kind="test", metric=metric, value=value, unit="", **kw)


def test_ratio_by_hand():
    """Measured 20 tok/s vs predicted 25 -> x0.8 (slower than predicted); TPOT measured 10 ms vs predicted 8 ms
    -> speed ratio 8/10 = x0.8 too."""
    from optimizer.fidelity.usercal import System
    s = System("rtx-4090", 1, "llamacpp", "qwen3-8b", "q4_k_m")
    assert _speed(_m("decode_tok_s", 20.0), s, 25.0).ratio == pytest.approx(0.8)
    assert _speed(_m("tpot_ms", 10.0), s, 8.0).ratio == pytest.approx(0.8)
    assert _speed(_m("decode_tok_s", 20.0), s, 25.0).correction == "decode"
    assert _speed(_m("decode_tok_s", 2000.0), s, 25.0).correction is None  # x80: not a calibration


def test_decode_prediction_is_evaluates():
    """compare() predicts a llama-bench tg row with the fidelity builder + evaluate(): the same figure
    `predict_speed` gives the published row of that run."""
    from optimizer.fidelity.predict import predict_speed
    m = by_metric(logs.parse_file(str(LOGS / "llama_bench_spark.md")))[("decode_tok_s", 0)]
    s = identify(m, Overrides(gpu="dgx-spark", model="qwen3-30b-a3b"))
    c = compare(m, s)
    row = {"id": "r", "metric": "decode_tok_s", "model": "qwen3-30b-a3b", "quant": "q8_0", "engine": "llamacpp",
           "accelerator": "dgx-spark", "gpus": 1, "depth": 0, "gen_tokens": 32, "batch": 1, "flags": "-ub 2048"}
    assert c.predicted == predict_speed(row).predicted
    assert c.ratio == pytest.approx(60.92 / c.predicted)


def test_profile_geometric_mean_and_merge():
    """Two decode runs at x0.8 and x0.5 -> sqrt(0.8 * 0.5) = 0.6325; calibrating the same log again adds nothing;
    a second log adds its run: (0.8 * 0.5 * 0.9)^(1/3) = 0.7114."""
    from optimizer.fidelity.profile import Profile, Run, calibration_of, merge
    key = ("rtx-4090", 1, "llamacpp", None, None)

    def run(r, line):
        return Run(metric="decode", ratio=r, measured=r, predicted=1.0, unit="tok/s", source=f"a:{line}", sha256="h1")
    p = merge(Profile(), [(key, run(0.8, 1)), (key, run(0.5, 2))], [])
    assert p.entries[0].factors["decode"] == pytest.approx(math.sqrt(0.4), abs=1e-6)
    assert merge(p, [(key, run(0.8, 1))], []).entries[0].factors == p.entries[0].factors
    p3 = merge(p, [(key, replace_run(run(0.9, 1), "h2"))], [])
    assert p3.entries[0].factors["decode"] == pytest.approx((0.8 * 0.5 * 0.9) ** (1 / 3), abs=1e-6)
    cal = calibration_of(p3, "prof")
    assert cal is not None and cal.entries[0].decode_runs == 3 and cal.entries[0].prefill is None


def replace_run(r, sha):
    return r.model_copy(update={"sha256": sha})


# ------------------------------------------------------------------------------------------------ evaluate()
def _deployment(cal=None, workload=None):
    from optimizer.catalog.devices import node_for
    from optimizer.catalog.hardware import get_accelerator
    from optimizer.catalog.models import resolve_model
    from optimizer.estimate.deployment import Deployment, Hardware
    from optimizer.layout import Parallel
    acc = get_accelerator("rtx-4090")
    return Deployment(model=resolve_model("qwen3-8b"), quant="q4_k_m", engine="llamacpp",
                      hardware=Hardware(acc, node_for(acc.key, 1), 1, 1), parallel=Parallel(), context=8192,
                      workload=workload, calibration=cal)


def test_evaluate_applies_the_factors():
    """decode x0.8: every step term / 0.8, tok/s x 0.8; prefill x1.25: TTFT / 1.25. Memory is untouched."""
    from optimizer.estimate.deployment import evaluate
    base = evaluate(_deployment())
    cal = Calibration((CalibrationEntry("rtx-4090", 1, "llamacpp", decode=0.8, decode_runs=3, prefill=1.25,
                                        prefill_runs=1),), profile="p.yaml")
    ev = evaluate(_deployment(cal))
    assert ev.decode.tok_s_per_seq == pytest.approx(base.decode.tok_s_per_seq * 0.8, rel=1e-12)
    assert ev.decode.step_time_s == pytest.approx(base.decode.step_time_s / 0.8, rel=1e-12)
    assert ev.decode.terms_s == pytest.approx({k: v / 0.8 for k, v in base.decode.terms_s.items()}, rel=1e-12)
    assert ev.prefill.ttft_s == pytest.approx(base.prefill.ttft_s / 1.25, rel=1e-12)
    assert ev.memory == base.memory
    assert ev.calibration == AppliedCalibration(0.8, 3, "1x rtx-4090 llamacpp", 1.25, 1, "1x rtx-4090 llamacpp",
                                                "p.yaml")
    assert "calibrated: decode ×0.80 from 3 of your runs" in " ".join(ev.notes)


def test_served_workload_moves_with_the_decode_factor():
    from optimizer.estimate.deployment import evaluate
    from optimizer.estimate.serving import Workload
    wl = Workload(isl=1024, osl=256, concurrency=1)
    cal = Calibration((CalibrationEntry("rtx-4090", 1, "llamacpp", decode=0.5, decode_runs=1),))
    a, b = evaluate(_deployment(workload=wl)), evaluate(_deployment(cal, wl))
    assert a.serving is not None and b.serving is not None
    # closed loop: TPOT = decode step / (1 - prefill share) (tests/test_serving_model.py), so the step itself,
    # TPOT x (1 - share), doubles at x0.5, while the share of time spent in prefill falls (fewer requests/s)
    step_a = a.serving.tpot_s * (1 - a.serving.prefill_share)
    step_b = b.serving.tpot_s * (1 - b.serving.prefill_share)
    assert step_b == pytest.approx(2 * step_a, rel=1e-6)
    assert b.serving.prefill_share < a.serving.prefill_share


def test_matching_rules():
    e_sys = CalibrationEntry("rtx-4090", 1, "llamacpp", decode=0.9, decode_runs=4, prefill=1.1, prefill_runs=2)
    e_mod = CalibrationEntry("rtx-4090", 1, "llamacpp", model="qwen3-8b", quant="q4_k_m", decode=0.7, decode_runs=2)
    e_two = CalibrationEntry("rtx-4090", 2, "llamacpp", decode=0.6, decode_runs=1)
    cal = Calibration((e_sys, e_mod, e_two))
    a = cal.applied("rtx-4090", 1, "llamacpp", "qwen3-8b", "q4_k_m")
    assert a is not None and (a.decode, a.prefill) == (0.7, 1.1)  # model-specific decode, system-wide prefill
    b = cal.applied("rtx-4090", 1, "llamacpp", "qwen3-8b", "q8_0")
    assert b is not None and b.decode == 0.9  # other quant: the system factor
    c = cal.applied("rtx-4090", 2, "llamacpp", "llama-3.1-8b", "q4_k_m")
    assert c is not None and c.decode == 0.6  # the same count first
    d = cal.applied("rtx-4090", 4, "llamacpp", "llama-3.1-8b", "q4_k_m")
    assert d is not None and d.decode == 0.6  # nearest count (2 is closer to 4 than 1)
    assert cal.applied("rtx-5090", 1, "llamacpp", "qwen3-8b", "q4_k_m") is None
    assert cal.applied("rtx-4090", 1, "vllm", "qwen3-8b", "native") is None


def test_out_of_range_factor_is_refused():
    with pytest.raises(InputError):
        CalibrationEntry("rtx-4090", 1, "llamacpp", decode=0.0)


# ------------------------------------------------------------------------------------------------ cheapest / estimate
def test_cheapest_chooses_differently_when_the_profile_says_slower():
    """Qwen3-8B Q4_K_M at 90 tok/s: predicted about 100 tok/s on one RTX 4090 (the cheapest card that meets it). A
    profile measuring the 4090 at x0.5 puts it at about 50 tok/s, below the target: the plan moves to the RTX 5090,
    and the checker (which rebuilds the deployment from the plan and the query) agrees."""
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    from optimizer.solver.validate import check
    # confidence 0: the targets bind the expected figures, so the profile alone moves the plan
    q = Query(model="qwen3-8b", context=8192, gpus=["rtx-4090", "rtx-5090"], engines=["llamacpp"],
              quants=["q4_k_m"], top=1, workers=1, tok_s=90, confidence=0.0)
    p = cheapest(q).plan
    assert p is not None and p.hardware.accelerator == "rtx-4090" and p.speed.tok_s_per_seq >= 90
    cal = Calibration((CalibrationEntry("rtx-4090", 1, "llamacpp", decode=0.5, decode_runs=2),), profile="t")
    q2 = q.model_copy(update={"calibration": cal})
    p2 = cheapest(q2).plan
    assert p2 is not None and p2.hardware.accelerator == "rtx-5090"
    assert check(p2, q2) == []
    slowed = cheapest(q2.model_copy(update={"gpus": ["rtx-4090"], "tok_s": 10})).plan
    assert slowed is not None and slowed.speed.tok_s_per_seq == pytest.approx(p.speed.tok_s_per_seq * 0.5)
    assert any(n.startswith("calibrated: decode ×0.50 from 2 of your runs") for n in slowed.notes)


def test_cheapest_estimate_and_checker_agree_with_a_profile():
    """tests/test_serving_model.py's agreement, with a profile active: solver build, estimate, checker."""
    from optimizer.catalog.models import resolve_model
    from optimizer.estimate.deployment import EngineSettings
    from optimizer.layout import Parallel
    from optimizer.report.estimate import estimate
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    from optimizer.solver.validate import evaluate as check_eval
    cal = Calibration((CalibrationEntry("h100-sxm", 1, "vllm", decode=0.7, decode_runs=2, prefill=0.8,
                                        prefill_runs=1),), profile="t")
    q = Query(model="qwen3-8b", context=4096, concurrency=4, isl=2048, osl=256, gpus=["h100-sxm"],
              engines=["vllm"], quants=["native"], top=1, workers=1, calibration=cal)
    p = cheapest(q).plan
    assert p is not None and p.settings is not None and p.serving is not None
    par = Parallel(tp=p.parallel.tp, pp=p.parallel.pp, dp=p.parallel.dp, ep=p.parallel.ep)
    gpus = p.hardware.n_nodes * p.hardware.gpus_per_node
    e = estimate(resolve_model("qwen3-8b"), context=4096, concurrency=4, quants=["native"], engine="vllm",
                 engine_explicit=True, gpu="h100-sxm", gpus=gpus, parallel=par, workload=q.workload,
                 settings=EngineSettings(max_num_seqs=p.settings.max_num_seqs), calibration=cal).hardware
    c = check_eval(p, q)
    assert e is not None and e.calibration is not None and e.calibration.decode == 0.7
    assert e.decode.tok_s_per_seq == p.speed.tok_s_per_seq == c.speed.tok_s_per_seq
    assert e.decode.ttft_s == p.speed.ttft_s == c.prefill.ttft_s
    assert e.serving is not None and e.serving.tpot_s == p.serving.tpot_s == c.physics.tpot_s


# ------------------------------------------------------------------------------------------------ the command
def test_calibrate_writes_the_profile_and_estimate_says_so(tmp_path):
    prof = tmp_path / "profile.yaml"
    r = run_calibrate([str(LOGS / "llama_bench_spark.md")], Overrides(gpu="dgx-spark", model="qwen3-30b-a3b"),
                      str(prof), dry_run=False)
    assert r.written and prof.exists()
    data = yaml.safe_load(prof.read_text())
    assert data["schema_id"] == "rigopt.profile/1"
    assert data["provenance"][0]["file"] == "llama_bench_spark.md" and data["provenance"][0]["rows"] == 3
    decode = [row for row in r.rows if row.metric == "decode_tok_s"]
    want = math.sqrt(decode[0].measured / decode[0].predicted * decode[1].measured / decode[1].predicted)
    sys_entry = next(e for e in data["entries"] if e["model"] is None)
    assert sys_entry["factors"]["decode"] == pytest.approx(want, abs=1e-6)
    # the same log again: no new runs; --dry-run writes nothing
    before = prof.read_text()
    run_calibrate([str(LOGS / "llama_bench_spark.md")], Overrides(gpu="dgx-spark", model="qwen3-30b-a3b"),
                  str(prof), dry_run=True)
    assert prof.read_text() == before
    from optimizer.catalog.models import resolve_model
    from optimizer.fidelity.profile import load_calibration
    from optimizer.report.estimate import estimate
    cal = load_calibration(str(prof), False)
    h = estimate(resolve_model("qwen3-30b-a3b"), context=4096, quants=["q8_0"], engine="llamacpp",
                 engine_explicit=True, gpu="dgx-spark", calibration=cal).hardware
    h0 = estimate(resolve_model("qwen3-30b-a3b"), context=4096, quants=["q8_0"], engine="llamacpp",
                  engine_explicit=True, gpu="dgx-spark").hardware
    assert h is not None and h0 is not None and h.calibration is not None
    assert h.decode.tok_s_per_seq == pytest.approx(h0.decode.tok_s_per_seq * want, rel=1e-5)
    assert h.calibration.decode_runs == 2 and str(prof) in h.calibration.text
    assert any(n.startswith("calibrated: decode ×") for n in h.notes)


class _Done:
    def __init__(self, r):
        self.returncode, self.stdout, self.stderr = r.code, r.out, r.err


def run_main(*args: str, env: dict | None = None) -> _Done:
    """`rigopt *args` in a forked child (tests/cli_sandbox.py: catalogue already loaded), with `env` set."""
    from unittest import mock

    from tests.cli_sandbox import run_cli
    with mock.patch.dict(os.environ, env or {}):
        return _Done(run_cli(list(args), timeout=120))


def test_cli_default_profile_and_no_profile(tmp_path):
    """The default profile lives in $XDG_CONFIG_HOME/rigopt/; estimate uses it and says so, --no-profile not."""
    env = {"XDG_CONFIG_HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1])}
    r = run_main("calibrate", str(LOGS / "llama_bench_spark.md"), "--gpu", "dgx-spark", "--model", "qwen3-30b-a3b",
                 "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["written"] and out["profile"] == str(tmp_path / "rigopt" / "profile.yaml")
    e = run_main("estimate", "qwen3-30b-a3b", "-q", "q8_0", "--gpu", "dgx-spark", "-c", "4096", "--json", env=env)
    assert e.returncode == 0, e.stderr
    h = json.loads(e.stdout)["hardware"]
    assert h["calibration"]["decode_runs"] == 2
    n = run_main("estimate", "qwen3-30b-a3b", "-q", "q8_0", "--gpu", "dgx-spark", "-c", "4096", "--json",
                 "--no-profile", env=env)
    assert json.loads(n.stdout)["hardware"]["calibration"] is None


@pytest.mark.parametrize("args, says", [
    (["calibrate", str(LOGS / "not_a_log.txt"), "--dry-run"], "no llama-bench table"),
    (["calibrate", str(LOGS / "missing.log")], "no such file"),
    (["calibrate", str(LOGS / "llama_server_4x3090.log"), "--dry-run"], "--gpu"),
    (["estimate", "qwen3-8b", "--profile", str(LOGS / "nope.yaml")], "no such file"),
    (["estimate", "qwen3-8b", "--profile", str(LOGS / "not_a_log.txt")], "profile"),
])
def test_bad_input_is_one_error_line_exit_2(args, says, tmp_path):
    r = run_main(*args, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], lines
    assert "Traceback" not in r.stderr


def test_vllm_args_line_names_model_tp_and_quant():
    """A vLLM engine config line (format of vllm/engine/llm_engine `Initializing a V1 LLM engine (vX) with config:
    model=...`, constructed here) names the model and TP size; an -FP8 repo name gives the quantization."""
    text = ("INFO [core.py:74] Initializing a V1 LLM engine (v0.15.1) with config: model='Qwen/Qwen3-235B-A22B-FP8', "
            "speculative_config=None, tokenizer='Qwen/Qwen3-235B-A22B-FP8', tensor_parallel_size=4, "
            "pipeline_parallel_size=1\n"
            "(VllmWorker rank=0 pid=105) INFO [gpu_model_runner.py:1347] Model loading took 57.1 GiB and 60.1 "
            "seconds\n")
    (m,) = logs.parse_text(text, "v.log")
    assert (m.model_label, m.n_devices, m.engine_version) == ("Qwen/Qwen3-235B-A22B-FP8", 4, "v0.15.1")
    s = identify(m, Overrides(gpu="h100-sxm"))
    assert (s.model, s.quant, s.gpus) == ("qwen3-235b-a22b", "fp8", 4)
    assert any("fp8 from the model name" in a for a in s.assumed)


def test_several_gpu_types_in_one_log_need_the_flag():
    text = ("ggml_cuda_init: found 2 CUDA devices:\n"
            "  Device 0: NVIDIA GeForce RTX 4090, compute capability 8.9, VMM: yes\n"
            "  Device 1: NVIDIA GeForce RTX 3090, compute capability 8.6, VMM: yes\n"
            "| qwen3 8B Q4_K - Medium | 4.68 GiB | 8.19 B | CUDA | 99 | tg128 | 100.00 ± 0.10 |\n")
    (m,) = logs.parse_text(text, "mix.md")
    assert m.n_devices == 2 and m.quant_label == "Q4_K - Medium"
    with pytest.raises(InputError, match="several types"):
        identify(m, Overrides(model="qwen3-8b"))
    assert identify(m, Overrides(model="qwen3-8b", gpu="rtx-4090")).quant == "q4_k_m"


def test_cli_cheapest_with_a_profile_file(tmp_path):
    """`cheapest --profile FILE` re-plans on the corrected speed and says which systems were corrected."""
    from optimizer.fidelity.profile import Profile, Run, merge, write_profile
    run = Run(metric="decode", ratio=0.5, measured=68.0, predicted=136.0, unit="tok/s", source="mine.md:5",
              sha256="0" * 64)
    prof = tmp_path / "p.yaml"
    write_profile(prof, merge(Profile(), [(("rtx-4090", 1, "llamacpp", None, None), run)], []))
    args = ["cheapest", "qwen3-8b", "-c", "8192", "--tok-s", "90", "--confidence", "0", "--gpus", "rtx-4090,rtx-5090",
            "--engine", "llamacpp", "--quant", "q4_k_m", "--top", "1"]
    env = {"PYTHONPATH": str(Path(__file__).parents[1])}
    with_p = run_main(*args, "--profile", str(prof), "--json", env=env)
    assert with_p.returncode == 0, with_p.stderr
    out = json.loads(with_p.stdout)
    assert out["plan"]["hardware"]["accelerator"] == "rtx-5090"
    assert out["query"]["calibration"]["entries"][0]["decode"] == 0.5
    text = run_main(*args, "--profile", str(prof), env=env).stdout
    assert f"calibration profile {prof}: 1x rtx-4090 llamacpp decode ×0.50 (1 run)" in text
    without = json.loads(run_main(*args, "--json", env=env).stdout)  # the test's XDG profile is empty
    assert without["plan"]["hardware"]["accelerator"] == "rtx-4090" and without["query"]["calibration"] is None


def test_ambiguous_llama_bench_model_names_the_flag():
    """ik_llama.cpp #263 (16x RTX 3090): `deepseek2 671B Q8_0`, 672.05 B parameters fits both deepseek-v3 and
    deepseek-r1 (one architecture): rigopt cannot tell them apart and asks for --model."""
    quote = ("| deepseek2 671B Q8_0            | 307.20 GiB |   672.05 B | CUDA       |  63 |    2048 |      512 |  1 "
             "|   2 |  1024 |    1 |         tg128 |     17.22 ± 0.05 |")
    (m,) = logs.parse_text(quote, "ik.md")
    assert (m.metric, m.value, m.params_b, m.quant_label) == ("decode_tok_s", 17.22, 672.05, "Q8_0")
    with pytest.raises(InputError, match="--model"):
        identify(m, Overrides(gpu="rtx-3090", gpus=16))
    assert identify(m, Overrides(gpu="rtx-3090", gpus=16, model="deepseek-r1")).model == "deepseek-r1"


def test_bad_profiles_are_refused(tmp_path):
    from optimizer.fidelity.profile import read_profile
    bad = tmp_path / "p.yaml"
    bad.write_text("schema_id: rigopt.profile/1\nentries:\n- {accelerator: rtx-4090, gpus: 0, engine: llamacpp}\n")
    with pytest.raises(InputError, match="gpus"):
        read_profile(bad)
    bad.write_text("schema_id: rigopt.profile/9\n")
    with pytest.raises(InputError, match="schema_id"):
        read_profile(bad)
    bad.write_text("entries: [\n")
    with pytest.raises(InputError, match="malformed YAML"):
        read_profile(bad)
