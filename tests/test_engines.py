"""Engine contract tests: every command `rigopt export` writes is accepted by the real pinned engines.

Opt-in (marker `engines`, deselected by default): `bash bench/engines.sh` installs vLLM and SGLang into their own
venvs, builds `llama-server` from the pinned llama.cpp, and runs `pytest -m engines` with these variables set:

    RIGOPT_VLLM_PYTHON    python of a venv with vllm==VLLM_VERSION
    RIGOPT_SGLANG_PYTHON  python of a venv with sglang==SGLANG_VERSION
    RIGOPT_LLAMA_SERVER   llama-server built from llama.cpp LLAMACPP_COMMIT

A missing engine skips its tests with a message saying so. What is checked, per exported command of every plan in
tests/golden/plans (and `rigopt place`'s printed engine flags):
- vLLM: the `vllm serve` parser accepts the argv, `validate_parsed_serve_args` passes, `AsyncEngineArgs
  .from_cli_args` builds, the parsed values equal what rigopt meant (TP, PP, DP, lengths, memory fraction), and
  `create_engine_config` is run with a local folder holding the model's config.json (CPU platform: no GPU here);
  how far it gets is printed, and only an error that names no rigopt flag is accepted.
- SGLang: `prepare_server_args` (parser + ServerArgs checks) accepts the argv and the values round-trip.
- llama.cpp: the exported launch-node0.sh starts the real llama-server on a tiny generated GGUF, bound to
  127.0.0.1, and /health answers 200.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from optimizer.engines import LLAMACPP_COMMIT, SGLANG_VERSION, VLLM_VERSION
from optimizer.export import ExportError, export_plan, load_plan
from optimizer.export.common import Command, Var
from optimizer.place.report import run as place_run
from optimizer.place.report import write_outputs

sys.path.insert(0, str(Path(__file__).parent))
from gguf_files import write_llama_gguf  # noqa: E402

pytestmark = pytest.mark.engines

ROOT = Path(__file__).resolve().parents[1]
PLANS = sorted(p.stem for p in (ROOT / "tests" / "golden" / "plans").glob("*.json"))
CHECKERS = Path(__file__).parent / "engines"
MODEL_DIR = "/rigopt-model-dir"            # placeholder in exported argvs, replaced per plan at run time
SHELL_VALUES = {"HEAD_IP": "127.0.0.1", "IFACE_NAME": "lo", "NODE0_IP": "127.0.0.1", "NODE1_IP": "127.0.0.1"}
TOOLS = {"vllm": ("RIGOPT_VLLM_PYTHON", f"vllm=={VLLM_VERSION}"),
         "sglang": ("RIGOPT_SGLANG_PYTHON", f"sglang=={SGLANG_VERSION}"),
         "llamacpp": ("RIGOPT_LLAMA_SERVER", f"llama-server (llama.cpp {LLAMACPP_COMMIT})")}


def tool(engine: str) -> str:
    var, what = TOOLS[engine]
    path = os.environ.get(var)
    if not path or not Path(path).exists():
        pytest.skip(f"{what} is not installed here ({var} unset or missing): run `bash bench/engines.sh`")
    return path


def exports(engine: str) -> list[tuple[str, int, Command]]:
    """(plan, command index, command) for every command rigopt exports for every plan this engine can run."""
    out = []
    for name in PLANS:
        try:
            res = export_plan(load_plan(ROOT / "tests" / "golden" / "plans" / f"{name}.json"), engine, None,
                              model_path=MODEL_DIR if engine != "llamacpp" else "/m.gguf")
        except ExportError:
            continue
        cmds = getattr(res, "checked_commands", res.commands)
        out += [(name, i, c) for i, c in enumerate(cmds) if c.tool == engine]
    return out


def concrete(a: object, model_dir: str) -> str:
    """One argv word as the shell would pass it: ${NAME} references filled with loopback values."""
    s = str(a)
    if isinstance(a, Var):
        for k, v in SHELL_VALUES.items():
            s = s.replace("${" + k + "}", v)
    return s.replace(MODEL_DIR, model_dir)


def model_folder(tmp: Path, plan_name: str) -> str:
    """A local folder with the plan model's config.json (and quantization config), as vLLM/SGLang need."""
    plan = load_plan(ROOT / "tests" / "golden" / "plans" / f"{plan_name}.json")
    src = ROOT / "models" / plan.model
    dst = tmp / plan.model
    if not dst.exists():
        dst.mkdir(parents=True)
        for f in src.glob("*.json"):
            shutil.copy(f, dst / f.name)
    return str(dst)


def run_checker(engine: str, requests: list[dict], tmp: Path, env: dict[str, str] | None = None) -> list[dict]:
    req, res = tmp / f"{engine}-requests.json", tmp / f"{engine}-results.json"
    req.write_text(json.dumps(requests))
    proc = subprocess.run([tool(engine), str(CHECKERS / f"{engine}_check.py"), str(req), str(res)],
                          capture_output=True, text=True, timeout=1800, env={**os.environ, **(env or {})})
    assert res.exists(), f"{engine} checker failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(res.read_text())


def flag_values(argv: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, a in enumerate(argv):
        if a.startswith("-") and len(a) > 1:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[a] = nxt if nxt is not None and not nxt.startswith("-") else None
    return out


def names_flag(error: str, given: dict[str, str | None]) -> list[str]:
    """The flags of `given` an engine's error message names (as --flag or as its field name, whole words)."""
    if error == "ok":
        return []
    out = []
    for f in given:
        field = f.lstrip("-").replace("-", "_")
        as_flag = re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", error)
        if as_flag or (len(field) > 3 and re.search(rf"\b{field}\b", error)):
            out.append(f)
    return out


def place_flags(tmp: Path) -> dict[str, list[str]]:
    """The engine flags `rigopt place` prints for an EP plan (as vLLM and as SGLang) and a KTransformers plan."""
    plans = ROOT / "tests" / "golden" / "plans"
    ep = place_run(str(plans / "tp8dp2_ep_v4pro_2node_vllm.json"), "zipf:1.0", 0, "16", time_limit=0.5)
    raw = json.loads((plans / "tp8dp2_ep_v4pro_2node_vllm.json").read_text())
    (tmp / "ep-sglang.json").write_text(json.dumps({**raw, "engine": "sglang"}))
    ep_sg = place_run(str(tmp / "ep-sglang.json"), "zipf:1.0", 0, "16", time_limit=0.5)
    written = write_outputs(ep_sg, str(tmp / "ep-placement.json"))          # + ep-placement.sglang.json
    kt = place_run(str(plans / "kt_v4flash_sglang.json"), "zipf:1.0", 0, None, time_limit=0.5)
    sg = [written[-1] if a == "<out>.sglang.json" else a for a in ep_sg.exports["sglang_flags"]]
    return {"vllm": list(ep.exports["vllm"]["flags"]), "sglang": sg,
            "ktransformers": list(kt.exports["ktransformers_flags"]),
            "ktransformers_fork": list(kt.exports["ktransformers_fork_flags"])}


# ---------------------------------------------------------------------------------------------- vLLM
VLLM_CASES = exports("vllm")


@pytest.fixture(scope="module")
def vllm_results(tmp_path_factory):
    tool("vllm")
    tmp = tmp_path_factory.mktemp("vllm")
    reqs, keys = [], []
    for name, i, c in VLLM_CASES:
        argv = [concrete(a, model_folder(tmp, name)) for a in c.argv[1:]]        # drop the program name
        reqs.append({"argv": argv, "env": {k: concrete(v, "") for k, v in c.env.items()}})
        keys.append((name, i))
    flags = place_flags(tmp)
    base = next(r for (n, _), r in zip(keys, reqs, strict=True) if n == "tp8dp2_ep_v4pro_2node_vllm")
    reqs.append({"argv": base["argv"] + flags["vllm"], "env": base["env"]})
    keys.append(("place:vllm", 0))
    results = run_checker("vllm", reqs, tmp, {"VLLM_TARGET_DEVICE": "cpu"})
    return {k: (q, r) for k, q, r in zip(keys, reqs, results, strict=True)}


def _check_vllm(key, vllm_results):
    req, r = vllm_results[key]
    assert r.get("version") == VLLM_VERSION
    assert r["ok"] and r.get("parsed"), f"vLLM rejected {key}: {r.get('error')}\n{r.get('trace', '')}"
    given = flag_values(req["argv"])
    a = r["args"]
    for flag, field, conv in (("--tensor-parallel-size", "tensor_parallel_size", int),
                              ("--pipeline-parallel-size", "pipeline_parallel_size", int),
                              ("--data-parallel-size", "data_parallel_size", int),
                              ("--max-model-len", "max_model_len", int),
                              ("--gpu-memory-utilization", "gpu_memory_utilization", float),
                              ("--max-num-seqs", "max_num_seqs", int),
                              ("--kv-cache-dtype", "kv_cache_dtype", str)):
        if flag in given:
            assert conv(a[field]) == conv(given[flag]), \
                f"{key} {flag}: vLLM read {a[field]}, rigopt wrote {given[flag]}"
    cfg = r["engine_config"]
    print(f"vLLM {key}: parsed, from_cli_args ok; create_engine_config -> {cfg[:300]}")
    # how far it gets on a CPU machine: an error that names one of rigopt's own flags fails
    assert not names_flag(cfg, given), f"{key}: create_engine_config rejects {names_flag(cfg, given)}: {cfg}"


@pytest.mark.parametrize("name,index", [(n, i) for n, i, _ in VLLM_CASES], ids=lambda v: str(v))
def test_vllm_accepts_export(name, index, vllm_results):
    _check_vllm((name, index), vllm_results)


def test_vllm_accepts_place_eplb_flags(vllm_results):
    _check_vllm(("place:vllm", 0), vllm_results)
    req, r = vllm_results[("place:vllm", 0)]
    assert "num_redundant_experts" in r["args"]["eplb_config"] and r["args"]["enable_eplb"] is True


# ---------------------------------------------------------------------------------------------- SGLang
SGLANG_CASES = exports("sglang")


@pytest.fixture(scope="module")
def sglang_results(tmp_path_factory):
    tool("sglang")
    tmp = tmp_path_factory.mktemp("sglang")
    reqs, keys = [], []
    for name, i, c in SGLANG_CASES:
        argv = [concrete(a, model_folder(tmp, name)) for a in c.argv[3:]]        # drop python3 -m sglang.launch_server
        reqs.append({"argv": argv, "env": {k: concrete(v, "") for k, v in c.env.items()}})
        keys.append((name, i))
    flags = place_flags(tmp)
    ep = next(r for (n, _), r in zip(keys, reqs, strict=True) if n == "tp8dp2_ep_v4pro_2node_vllm")
    reqs.append({"argv": ep["argv"] + flags["sglang"], "env": ep["env"]})
    keys.append(("place:sglang", 0))
    kt = next(r for (n, _), r in zip(keys, reqs, strict=True) if n == "kt_v4flash_sglang")
    loads = tmp / "loads.logical_count.json"       # a recorder file as SGLang writes it: [layers, experts]
    loads.write_text(json.dumps({"logical_count": [[1] * 256] * 43}))
    fork = [str(loads) if a == "loads.logical_count.json" else a for a in flags["ktransformers_fork"]]
    argv = [a for a in kt["argv"]]
    if "--kt-num-gpu-experts" in argv:      # place's value replaces the export's
        j = argv.index("--kt-num-gpu-experts")
        del argv[j:j + 2]
    reqs.append({"argv": argv + flags["ktransformers"], "env": kt["env"]})
    keys.append(("place:ktransformers", 0))
    reqs.append({"argv": argv + flags["ktransformers"] + fork, "env": kt["env"]})
    keys.append(("place:ktransformers-fork", 0))
    results = run_checker("sglang", reqs, tmp)
    return {k: (q, r) for k, q, r in zip(keys, reqs, results, strict=True)}


def _check_sglang(key, sglang_results):
    req, r = sglang_results[key]
    assert r.get("version") == SGLANG_VERSION
    assert r["ok"] and r.get("parsed"), f"SGLang rejected {key}: {r.get('error')}\n{r.get('trace', '')}"
    given = flag_values(req["argv"])
    print(f"SGLang {key}: prepare_server_args ok; resolve_once -> {r['resolve'][:300]}")
    rejected = names_flag(r["resolve"], given)
    assert not rejected, f"{key}: ServerArgs resolution rejects {rejected}"
    a = r["args"]
    for flag, field, conv in (("--tp-size", "tp_size", int), ("--context-length", "context_length", int),
                              ("--mem-fraction-static", "mem_fraction_static", float),
                              ("--ep-size", "ep_size", int), ("--nnodes", "nnodes", int),
                              ("--kv-cache-dtype", "kv_cache_dtype", str)):
        if flag in given:
            assert conv(a[field]) == conv(given[flag]), \
                f"{key} {flag}: SGLang read {a[field]}, rigopt wrote {given[flag]}"


@pytest.mark.parametrize("name,index", [(n, i) for n, i, _ in SGLANG_CASES], ids=lambda v: str(v))
def test_sglang_accepts_export(name, index, sglang_results):
    _check_sglang((name, index), sglang_results)


@pytest.mark.parametrize("which", ["place:sglang", "place:ktransformers"])
def test_sglang_accepts_place_flags(which, sglang_results):
    _check_sglang((which, 0), sglang_results)


def test_upstream_sglang_rejects_the_fork_only_kt_flags(sglang_results):
    """`place` lists frequency placement apart (ktransformers_fork_flags) because upstream SGLang rejects it; if
    a release starts accepting it, this fails and the flags can move back into ktransformers_flags."""
    _, r = sglang_results[("place:ktransformers-fork", 0)]
    assert not r["ok"] and "--kt-expert-placement-strategy" in r["error"]


# ---------------------------------------------------------------------------------------------- llama.cpp
LLAMACPP_PLANS = sorted({n for n, _, c in exports("llamacpp") if c.role == "head"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", LLAMACPP_PLANS)
def test_llama_server_starts_from_exported_script(name, tmp_path):
    server = tool("llamacpp")
    gguf = tmp_path / "tiny.gguf"
    write_llama_gguf(gguf, blocks=2, d=64, kv_dim=32, ff=128, vocab=259, ctx=4096, output=True, loadable=True)
    res = export_plan(load_plan(ROOT / "tests" / "golden" / "plans" / f"{name}.json"), "llamacpp", tmp_path / "out",
                      model_path=str(gguf))
    head = next(c for c in res.commands if c.role == "head")
    argv = [str(a) for a in head.argv]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    script = (tmp_path / "out" / f"launch-node{head.node}.sh").read_text()
    port = free_port()
    exported_port = argv[argv.index("--port") + 1]
    assert f"--port {exported_port}" in script
    script = script.replace(f"--port {exported_port}", f"--port {port}")   # a free loopback port for the test
    (tmp_path / "out" / "launch.sh").write_text(script)
    env = {**os.environ, "PATH": f"{Path(server).parent}:{os.environ['PATH']}"}
    log = (tmp_path / "llama-server.log").open("w")
    proc = subprocess.Popen(["bash", str(tmp_path / "out" / "launch.sh")], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    try:
        deadline, status = time.monotonic() + 180, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    status = r.status
                    if status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        text = (tmp_path / "llama-server.log").read_text()
        assert status == 200, f"llama-server did not answer /health (exit {proc.poll()}):\n{text[-4000:]}"
        print(f"llama.cpp {name}: /health 200 on 127.0.0.1:{port}; argv {' '.join(argv[1:])[:300]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


# ------------------------------------------------------------------------------------------------ fleet routers
ROUTER_CHECK = r"""
import argparse, json, sys
from sglang_router.router_args import RouterArgs
out = []
for argv in json.loads(sys.argv[1]):
    p = argparse.ArgumentParser()
    RouterArgs.add_cli_args(p)
    try:
        a = RouterArgs.from_cli_args(p.parse_args(argv))
        out.append({"ok": True, "pd": a.pd_disaggregation, "prefill": [list(u) for u in a.prefill_urls],
                    "decode": list(a.decode_urls), "workers": list(a.worker_urls), "port": a.port})
    except SystemExit as e:
        out.append({"ok": False, "error": f"exit {e.code}"})
print(json.dumps(out))
"""


def test_sglang_router_accepts_fleet_router_commands():
    """The router commands of an SGLang PD fleet and of several aggregated replicas parse with the pinned
    sglang-router's own RouterArgs (installed beside SGLang by bench/engines.sh)."""
    from optimizer.engines import SGLANG_ROUTER_VERSION
    from optimizer.export.fleet import SGLANG_BOOTSTRAP_PORT, k8s_router_commands, router_commands
    from optimizer.fleet import FleetQuery, solve_fleet

    py = tool("sglang")
    probe = subprocess.run([py, "-c", "import sglang_router.router_args"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"sglang-router=={SGLANG_ROUTER_VERSION} is not installed beside SGLang: run bench/engines.sh")
    res = solve_fleet(FleetQuery("qwen3-8b", 2000, 200, 2.0, 1.0, 0.05, objective="capex", gpus=("h100-sxm",),
                                 engines=("sglang",), compare_other=False, disagg=False))
    pool = res.fleet.pools[0]
    pd = res.fleet.model_copy(update={"pools": [pool.model_copy(update={"role": "prefill"}),
                                                pool.model_copy(update={"role": "decode", "replicas": 2})]})
    agg = res.fleet.model_copy(update={"pools": [pool.model_copy(update={"replicas": 3})]})
    # and the router Deployments of k8s.yaml (service discovery by pod labels)
    cmds = router_commands(pd) + router_commands(agg) + [c for _, _, c in k8s_router_commands(pd)]
    argvs = [[re.sub(r"\$\{POOL(\d+)_R(\d+)_IP\}", r"10.0.\1.\2", concrete(a, "")) for a in c.argv[3:]]
             for c in cmds]
    proc = subprocess.run([py, "-c", ROUTER_CHECK, json.dumps(argvs)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(g["ok"] for g in got), got
    assert got[0]["pd"] and got[0]["prefill"][0][1] == SGLANG_BOOTSTRAP_PORT
    # one worker per replica (issue 25): the decode pool's 2 replicas, the aggregated pool's 3
    assert got[0]["decode"] == ["http://10.0.1.0:30000", "http://10.0.1.1:30000"]
    assert len(got[1]["workers"]) == 3 and not got[1]["pd"]
    assert got[2]["pd"] and not got[2]["workers"]
