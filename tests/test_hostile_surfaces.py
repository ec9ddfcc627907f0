"""Hostile input on the surfaces added after the first fuzz run (issue 24): fleet, mixed, calibrate and its
profiles, detect's vendor tools, Hugging Face ids, placements, GGUF headers and load files. Each finding of the
issue is reproduced here as a test; each `rigopt` run is a forked child (tests/cli_sandbox.py) with a CPU-time cap
and an address-space cap, and limits are asserted in CPU seconds and bytes, never in wall-clock time.

Invariant throughout: bad input -> exactly one `error: ...` line under 300 characters that names the real cause,
exit code 2, no traceback, no `internal error`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from optimizer.catalog import hub as hub_module
from optimizer.catalog import models as catalog_models
from tests.cli_sandbox import GiB, run_cli
from tests.fake_hub import FakeHub, Repo, safetensors_bytes

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "tests" / "data" / "logs"
QWEN3_8B = (ROOT / "models" / "qwen3-8b" / "config.json").read_bytes()
FLEET = ["fleet", "llama-3.1-8b", "--isl", "1000", "--osl", "200", "--rate", "1", "--ttft", "2"]


def rigopt(*argv, cwd=None, cpu: float = 20.0, mem: int = 2 * GiB):
    """A forked `rigopt` run killed past `cpu` seconds of CPU; the wall-clock timeout only guards against a hang."""
    return run_cli([str(a) for a in argv], cwd=str(cwd) if cwd else None, timeout=10 * cpu + 60, mem_cap=mem,
                   cpu_cap=cpu)


def assert_error(r, *needles: str, absent: tuple[str, ...] = ()) -> str:
    assert not r.timed_out, f"hung ({r.seconds:.0f} s wall): {r.argv[:4]}"
    assert r.code not in (-9, -24), f"killed at its CPU cap after {r.cpu_seconds:.1f} CPU-s: {r.argv[:4]}"
    assert not r.traceback and not r.internal, r.err[-1500:]
    assert r.code == 2, (r.code, r.err[-800:])
    lines = r.error_lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < 300, lines[:4]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    for n in absent:
        assert n not in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def _own_config(tmp_path, monkeypatch):
    """No run reads or writes the user's own profile or Hub cache."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: no test reaches the internet
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


# ================================================================================== fleet
@pytest.mark.parametrize("flag,value", [("--tpot", "1e308"), ("--tpot", "inf"), ("--tpot", "nan"), ("--tpot", "0"),
                                        ("--ttft", "1e308"), ("--ttft", "-1"), ("--percentile", "nan"),
                                        ("--percentile", "1e308"), ("--amortize-months", "nan"),
                                        ("--amortize-months", "1e308"), ("--usd-per-kwh", "inf"),
                                        ("--rate", "1e308")])
def test_fleet_sla_numbers_out_of_range(flag, value):
    argv = [a for a in FLEET]
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    if "--tpot" not in argv:
        argv += ["--tpot", "0.05"]
    r = rigopt(*argv)
    assert_error(r, flag)
    assert r.cpu_seconds < 10, r.cpu_seconds


def test_fleet_isl_beyond_the_context_cap():
    argv = [a for a in FLEET] + ["--tpot", "0.05"]
    argv[argv.index("--isl") + 1] = str(2**27 + 1)
    assert_error(rigopt(*argv), "token count", "134217728")


def test_api_price_absurd():
    assert_error(rigopt(*FLEET, "--tpot", "0.05", "--api-price", "in:1e308,out:1"), "--api-price")


@pytest.mark.parametrize("kind", ["proc", "file", "through-file"])
def test_fleet_out_unwritable(tmp_path, kind):
    (tmp_path / "afile").write_text("x")
    out = {"proc": "/proc/rigopt-test-x", "file": str(tmp_path / "afile"),
           "through-file": str(tmp_path / "afile" / "sub")}[kind]
    r = rigopt(*FLEET, "--tpot", "0.05", "--out", out)
    assert_error(r, "--out")
    assert (tmp_path / "afile").read_text() == "x"
    assert r.cpu_seconds < 10


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder without write permission")
def test_fleet_out_folder_without_permission(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    try:
        assert_error(rigopt(*FLEET, "--tpot", "0.05", "--out", d / "x"), "--out")
    finally:
        d.chmod(0o700)


def test_fleet_out_is_written_under_out_only(tmp_path):
    r = rigopt(*FLEET, "--tpot", "0.05", "--out", tmp_path / "o", cwd=tmp_path)
    assert r.code == 0, r.err[-800:]
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")} - {"xdg", "hf"}
    assert written == {"o"}
    assert (tmp_path / "o" / "fleet.json").is_file() and list((tmp_path / "o").glob("pool*/launch-node0.sh"))


# ================================================================================== mixed
@pytest.mark.parametrize("budget", ["nan", "inf", "-inf", "1e308", "0"])
def test_mixed_max_budget_absurd(budget):
    assert_error(rigopt("mixed", "llama-3.1-8b", "--owned", "1x rtx-4090", "--buy", "--max-budget", budget),
                 "--max-budget")


@pytest.mark.parametrize("n,needles", [(2000, ("--owned", "4096 characters")), (200, ("inventory", "200 boxes")),
                                        (17, ("inventory", "17 boxes"))])
def test_mixed_inventory_of_many_boxes_is_refused_before_solving(n, needles):
    inv = ";".join(f"b{i}:1x rtx-4090" for i in range(n))
    r = rigopt("mixed", "llama-3.1-8b", "--owned", inv)
    assert_error(r, *needles)
    assert r.cpu_seconds < 5, r.cpu_seconds


# mixed inventories (two GPU types): the per-device planner's parser; one GPU type is the cheapest solver's
# question (optimizer/front), whose `--owned` counts are bounded by MAX_GPUS
@pytest.mark.parametrize("inv,needle", [("1x rtx-3090, " + "9" * 400 + "x rtx-4090", "owned count"),
                                        ("1x rtx-3090, 1x rtx-4090, psu " + "9" * 400, "psu"),
                                        (", ".join(["1x rtx-3090"] + ["1x rtx-4090"] * 64), "more than 64"),
                                        ("x" * 5000, "characters"),
                                        ("9" * 400 + "x rtx-4090", "within 1..65536")])
def test_mixed_inventory_absurd(inv, needle):
    assert_error(rigopt("mixed", "llama-3.1-8b", "--owned", inv), needle)


def test_scenario_and_owned_share_the_box_cap():
    """Scenario files capped boxes at 16 while `--owned` had no cap: both use limits.MAX_BOXES now."""
    from optimizer.limits import MAX_BOXES
    from optimizer.scenarios.schema import InventorySpec
    assert any(getattr(m, "max_length", None) == MAX_BOXES for m in InventorySpec.model_fields["boxes"].metadata)
    inv = "; ".join(f"b{i}: 1x rtx-4090" for i in range(MAX_BOXES + 1))
    assert_error(rigopt("mixed", "llama-3.1-8b", "--owned", inv), f"limit of {MAX_BOXES}")


# ================================================================================== calibrate and profiles
def test_calibrate_deeply_nested_json(tmp_path):
    f = tmp_path / "bench.json"
    f.write_text('{"results": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_error(rigopt("calibrate", f, "--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--dry-run"), "nested")


@pytest.mark.parametrize("value", ["1e400", "-1e400", "NaN", "Infinity"])
def test_calibrate_bench_json_with_non_finite_numbers(tmp_path, value):
    f = tmp_path / "bench.json"
    f.write_text(f'[{{"avg_ts": {value}, "n_prompt": 512, "n_gen": 0, "n_depth": 0}},'
                 f' {{"avg_ts": 50.0, "n_prompt": {value}, "n_gen": 0}}]')
    assert_error(rigopt("calibrate", f, "--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--dry-run"), "bench.json")


def test_calibrate_a_million_line_log_is_refused_before_parsing(tmp_path):
    f = tmp_path / "big.log"
    f.write_text("load_tensors: layer 1 assigned to device CUDA0\n" * 1_000_000)  # 48 MB, under the byte limit
    r = rigopt("calibrate", f, "--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--dry-run", mem=1 * GiB)
    assert_error(r, "1,000,000 lines")
    assert r.cpu_seconds < 5 and r.max_rss_bytes < 1 * GiB, (r.cpu_seconds, r.max_rss_bytes)


def test_calibrate_200000_json_records_are_refused_before_parsing(tmp_path):
    f = tmp_path / "many.json"
    f.write_text(json.dumps([{"avg_ts": 1.0, "n_prompt": 512, "n_gen": 0}] * 200_000))
    r = rigopt("calibrate", f, "--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--dry-run", mem=1 * GiB)
    assert_error(r, "JSON objects")
    assert r.cpu_seconds < 5 and r.max_rss_bytes < 1 * GiB, (r.cpu_seconds, r.max_rss_bytes)


def test_calibrate_200000_jsonl_records(tmp_path):
    f = tmp_path / "many.jsonl"
    f.write_text('{"avg_ts": 1.0, "n_prompt": 512, "n_gen": 0}\n' * 200_000)
    r = rigopt("calibrate", f, "--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--dry-run", mem=1 * GiB)
    assert_error(r, "many.jsonl")
    assert r.cpu_seconds < 5, r.cpu_seconds


def test_calibrate_5000_digit_token_count_in_a_text_log(tmp_path):
    f = tmp_path / "srv.log"
    f.write_text(f"prompt eval time =     123.45 ms / {'9' * 5000} tokens (    0.24 ms per token,  4147.55 tokens "
                 "per second)\n")
    assert_error(rigopt("calibrate", f, "--model", "llama-3.1-8b", "--gpu", "rtx-4090", "--dry-run"), "digits")


@pytest.mark.parametrize("text", ["x: " + "[" * 100_000 + "]" * 100_000, "x:\n" + "".join(
    " " * i + "- \n" for i in range(1, 200)), "a: &a [*a]\n"])
def test_profile_deeply_nested(tmp_path, text):
    p = tmp_path / "profile.yaml"
    p.write_text(text)
    line = assert_error(rigopt("estimate", "llama-3.1-8b", "--profile", p), "profile")
    assert "internal" not in line


def test_calibrate_with_a_deep_profile(tmp_path):
    p = tmp_path / "profile.yaml"
    p.write_text("x: " + "[" * 100_000 + "]" * 100_000)
    assert_error(rigopt("calibrate", LOGS / "llama_bench_spark.md", "--gpu", "dgx-spark", "--model", "qwen3-30b-a3b",
                        "--profile", p), "nested")
    assert p.read_text().startswith("x: [[[")  # the bad profile is left as it was


# ================================================================================== detect
def fake_tool(bindir: Path, name: str, body: str) -> None:
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text("#!/usr/bin/env python3\nimport sys\n" + body)
    (bindir / name).chmod(0o755)


NINES = "9" * 400
TOOLS = {
    "nvidia-400-digits": ("nvidia-smi", f"print('0, NVIDIA GeForce RTX 4090, {NINES}, 4, 16, 4, 16, 00000000:01:00.0')",
                          "digits"),
    "nvidia-million-gpus": ("nvidia-smi", "sys.stdout.write(''.join(f'{i}, NVIDIA GeForce RTX 4090, 24564, 4, 16,"
                                          " 4, 16, 00000000:01:00.0\\n' for i in range(1000000)))", "nvidia-smi"),
    "nvidia-endless": ("nvidia-smi", "while True: sys.stdout.write('0, x' * 4096)", "bytes"),
    "nvidia-100-gpus": ("nvidia-smi", "print(''.join(f'{i}, NVIDIA GeForce RTX 4090, 24564, 4, 16, 4, 16,"
                                      " 0000:{i:02x}:00.0\\n' for i in range(100)))", "100 devices"),
    "rocm-deep": ("rocm-smi", "print('{\"card0\": ' + '[' * 100000 + ']' * 100000 + '}')", "nested"),
    "rocm-400-digits": ("rocm-smi", f"print('{{\"card0\": {{\"Card Series\": \"MI300X\", \"VRAM Total Memory (B)\":"
                                    f" \"{NINES}\"}}}}')", "digits"),
    "system-profiler-deep": ("system_profiler", "print('{\"SPHardwareDataType\": ' + '[' * 100000 + ']' * 100000"
                                                " + '}')", "nested"),
    "dmidecode-400-digits": ("dmidecode", f"print('Handle 0x0001\\nMemory Device\\n\\tSize: {NINES} GB\\n"
                                          "\\tType: DDR5\\n')", "digits"),
}


@pytest.mark.parametrize("case", sorted(TOOLS))
@pytest.mark.parametrize("command", ["detect", "owned-local"])
def test_detect_trusts_no_vendor_tool(tmp_path, monkeypatch, case, command):
    name, body, needle = TOOLS[case]
    fake_tool(tmp_path / "bin", name, body)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    argv = ["detect"] if command == "detect" else ["cheapest", "llama-3.1-8b", "-c", "8K", "--owned", "local"]
    r = rigopt(*argv, mem=1 * GiB)
    assert_error(r, needle)
    assert r.cpu_seconds < 5 and r.max_rss_bytes < 1 * GiB, (r.cpu_seconds, r.max_rss_bytes)


# ================================================================================== Hugging Face ids
@pytest.fixture
def hub(monkeypatch):
    with FakeHub() as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        catalog_models._hub_model.cache_clear()
        yield h
        catalog_models._hub_model.cache_clear()


def st_repo(tensors: dict, **kw) -> Repo:
    return Repo({"config.json": QWEN3_8B, "model.safetensors": safetensors_bytes(tensors, {"BF16": 2})}, **kw)


def test_trickling_hub_is_cut_off_by_the_total_deadline(hub, monkeypatch):
    monkeypatch.setattr(hub_module, "MAX_HUB_TOTAL_S", 1.5)
    hub.repos["org/slow"] = st_repo({"lm_head.weight": ("BF16", [8, 8])}, trickle_s=0.2)
    r = rigopt("estimate", "org/slow", "--gpu", "rtx-4090", cpu=20)
    assert_error(r, "org/slow", "within 1.5 s")
    assert r.seconds < 30  # (a hang guard, not a limit: per-read timeouts alone let this run for minutes)


def test_redirect_to_another_host_is_not_followed(hub):
    with FakeHub() as other:
        other.repos["org/m"] = st_repo({"lm_head.weight": ("BF16", [8, 8])})
        hub.repos["org/m"] = st_repo({}, redirect_to=other.url)
        assert_error(rigopt("estimate", "org/m", "--gpu", "rtx-4090"), "another host")
        assert other.log == []


def test_malformed_answer_is_not_called_unreachable(hub):
    hub.repos["org/bad"] = st_repo({}, bad_header=True)
    assert_error(rigopt("estimate", "org/bad", "--gpu", "rtx-4090"), "org/bad", absent=("cannot reach",))


@pytest.mark.parametrize("tensors,needle", [
    ({"model.layers.0.mlp.w": ("BF16", [2**62, 2**62])}, "shape"),
    ({"model.layers.0.mlp.w": ("F7", [8, 8])}, "unknown dtype"),
    ({"model.layers.0.mlp.w": ("BF16", [-1, 8])}, "shape"),
])
def test_hostile_safetensors_header_from_the_hub(hub, tensors, needle):
    header = {n: {"dtype": d, "shape": s, "data_offsets": [0, 128]} for n, (d, s) in tensors.items()}
    raw = json.dumps(header).encode()
    hub.repos["org/h"] = Repo({"config.json": QWEN3_8B,
                               "model.safetensors": len(raw).to_bytes(8, "little") + raw + bytes(128)})
    assert_error(rigopt("estimate", "org/h", "--gpu", "rtx-4090"), needle)


def test_hostile_safetensors_header_in_a_local_folder(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_bytes(QWEN3_8B)
    raw = json.dumps({"lm_head.weight": {"dtype": "Q9", "shape": [8, 8], "data_offsets": [0, 128]}}).encode()
    (d / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(128))
    assert_error(rigopt("estimate", d, "--gpu", "rtx-4090"), "unknown dtype")


@pytest.mark.parametrize("total", ["-1", "1e309", "0", "\"big\"", str(2**70)])
def test_index_total_size_out_of_range(hub, total):
    index = '{"metadata": {"total_size": ' + total + '}, "weight_map": {}}'
    hub.repos["org/t"] = Repo({"config.json": QWEN3_8B, "model.safetensors.index.json": index.encode()})
    assert_error(rigopt("estimate", "org/t", "--gpu", "rtx-4090"), "total_size")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_offline_makes_no_request(hub, monkeypatch, how):
    hub.repos["org/m"] = st_repo({"lm_head.weight": ("BF16", [8, 8])})
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        r = rigopt("estimate", "org/m", "--gpu", "rtx-4090")
    else:
        r = rigopt("estimate", "org/m", "--gpu", "rtx-4090", "--offline")
    assert_error(r, "org/m", "offline")
    assert hub.log == []


# ================================================================================== placements, GGUF, loads, solve
@pytest.fixture(scope="module")
def plan_and_placement(tmp_path_factory):
    d = tmp_path_factory.mktemp("pl")
    r = rigopt("cheapest", "qwen3-30b-a3b", "-c", "32K", "--gpus", "rtx-4090", "--engine", "llamacpp", "--top", "1",
               "--out", d / "plan.json", cpu=60)
    assert r.code == 0, r.err[-800:]
    r = rigopt("place", d / "plan.json", "--loads", "zipf:1.0", "--out", d / "place.json", cpu=60)
    assert r.code == 0, r.err[-800:]
    return d / "plan.json", json.loads((d / "place.json").read_text())


@pytest.mark.parametrize("n_gpus", [10**18, -1, 0])
def test_export_placement_with_absurd_n_gpus(tmp_path, plan_and_placement, n_gpus):
    plan, placement = plan_and_placement
    pl = tmp_path / "place.json"
    pl.write_text(json.dumps({**placement, "n_gpus": n_gpus}))
    assert_error(rigopt("export", plan, "--engine", "llamacpp", "--placement", pl, "--out", tmp_path / "o"),
                 "n_gpus")


def test_gguf_with_a_million_empty_tokens_is_cheap(tmp_path):
    from tests.test_hostile import write_gguf
    f = write_gguf(tmp_path / "m.gguf", {"tokenizer.ggml.tokens": ("add_array", [""] * 1_000_000)})
    r = rigopt("estimate", f, "--gpu", "rtx-4090", mem=1 * GiB)
    assert r.code == 0 and not r.internal, r.err[-800:]
    assert r.cpu_seconds < 5 and r.max_rss_bytes < 512 * 2**20, (r.cpu_seconds, r.max_rss_bytes)


def test_gguf_array_longer_than_the_limit(tmp_path):
    from optimizer.limits import MAX_GGUF_ARRAY_ITEMS
    from tests.test_hostile import write_gguf
    f = write_gguf(tmp_path / "m.gguf", {"x.arr": ("add_array", [0] * (MAX_GGUF_ARRAY_ITEMS + 1))})
    assert_error(rigopt("estimate", f, "--gpu", "rtx-4090"), "array", f"{MAX_GGUF_ARRAY_ITEMS:,}")


def test_load_csv_of_a_million_rows_is_refused_before_parsing(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"model": "qwen3-30b-a3b", "n_gpus": 2, "ep_size": 2}))
    (tmp_path / "l.csv").write_text("layer,expert,count\n" + "0,0,1\n" * 1_000_000)
    r = rigopt("place", f, "--loads", tmp_path / "l.csv")
    assert_error(r, "rows")
    assert r.cpu_seconds < 3, r.cpu_seconds


def test_solve_out_onto_a_file_is_one_line_before_any_progress(tmp_path):
    (tmp_path / "s.yaml").write_text("model: llama-3.1-8b\ncontext: 8192\n")
    (tmp_path / "afile").write_text("x")
    r = rigopt("solve", tmp_path / "s.yaml", "--out", tmp_path / "afile")
    assert_error(r, "--out")
    assert r.out.strip() == ""


def test_deep_scenario_does_not_crash_the_yaml_composer(tmp_path):
    """libyaml's composer (yaml.CSafeLoader) recurses in C: a 100,000-deep file crashed the interpreter (SIGSEGV);
    nesting is now counted from the parser's event stream before anything composes the document."""
    for name, text in (("s.json", '{"model": "llama-3.1-8b", "d": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                       ("b.yaml", "model: llama-3.1-8b\nd:\n" + "- " * 100_000 + "x\n"),
                       ("m.yaml", "model: llama-3.1-8b\nd: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n")):
        (tmp_path / name).write_text(text)
        r = rigopt("solve", tmp_path / name, "--out", tmp_path / "o")
        assert r.code == 1 and not r.traceback and not r.internal, (name, r.code, r.err[-500:])
        assert len(r.error_lines) == 1 and "nested deeper than 32" in r.error_lines[0], (name, r.error_lines)


def test_limits_are_one_set():
    """Every limit this issue added lives in optimizer/limits.py, and the modules use it rather than a copy."""
    import optimizer.detect as detect
    import optimizer.fidelity.logs as logs
    from optimizer import limits
    for name in ("MAX_BOXES", "MAX_DETECTED_DEVICES", "MAX_MEASUREMENTS", "MAX_LOG_BYTES", "MAX_LOG_LINES",
                 "MAX_NESTING", "MAX_GGUF_ARRAY_ITEMS", "MAX_SLA_S", "MIN_SLA_S", "MAX_HUB_TOTAL_S", "MAX_LOAD_ROWS",
                 "MAX_TOOL_OUTPUT_BYTES", "MAX_PROFILE_BYTES"):
        assert isinstance(getattr(limits, name), (int, float)), name
    assert logs.MAX_RECORDS == limits.MAX_MEASUREMENTS and logs.MAX_LOG_BYTES == limits.MAX_LOG_BYTES
    assert detect.MAX_TOOL_OUTPUT == limits.MAX_TOOL_OUTPUT_BYTES
