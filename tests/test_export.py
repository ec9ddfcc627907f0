"""`rigopt export`: golden launch commands, engine allow-lists, quoting, integer lengths, -ot regex exactness.

Goldens: tests/golden/<case>.json holds the expected (flag, value) lists per command for the frozen input plan
tests/golden/plans/<plan>.json. Floats compare with a tolerance. A missing golden file fails; regenerate them with
`python -m pytest tests/test_export.py --update-goldens` (or RIGOPT_UPDATE_GOLDEN=1) and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from optimizer.engines import LLAMACPP_COMMIT, SGLANG_VERSION, VLLM_VERSION
from optimizer.export import ExportError, export_plan, load_plan
from optimizer.export.llamacpp import offload_regex

ROOT = Path(__file__).parent
GOLDEN = ROOT / "golden"
FLAGS = ROOT / "data" / "engine_flags"
ALLOW_FILES = {"vllm": f"vllm-{VLLM_VERSION}.txt", "sglang": f"sglang-{SGLANG_VERSION}.txt",
               "llamacpp": f"llamacpp-{LLAMACPP_COMMIT}.txt", "ggml-rpc-server": f"llamacpp-{LLAMACPP_COMMIT}.txt"}
PROGRAM_LEN = {"vllm": 3, "sglang": 3, "llamacpp": 1, "ggml-rpc-server": 1}   # argv words before the flags

CASES = [  # (golden name, plan file, engine, model_path)
    ("single_gpu_vllm", "single_gpu_vllm", "vllm", None),
    ("tp8_v4pro_vllm", "tp8_v4pro_h200_vllm", "vllm", None),
    ("tp8_v4pro_sglang", "tp8_v4pro_h200_vllm", "sglang", None),
    ("tp8dp2_ep_2node_vllm", "tp8dp2_ep_v4pro_2node_vllm", "vllm", None),
    ("tp8dp2_ep_2node_sglang", "tp8dp2_ep_v4pro_2node_vllm", "sglang", None),
    ("offload_llamacpp", "offload_v4flash_llamacpp", "llamacpp",
     "/models/DeepSeek-V4-Flash-Q4_K_M-00001-of-00009.gguf"),
    ("kt_offload_sglang", "kt_v4flash_sglang", "sglang", None),
]


def plan(name):
    return load_plan(GOLDEN / "plans" / f"{name}.json")


def allow_list(tool: str) -> dict[str, tuple[str, list[str] | None]]:
    out = {}
    for line in (FLAGS / ALLOW_FILES[tool]).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        flag = parts[0]
        if tool == "ggml-rpc-server":
            if not flag.startswith("ggml-rpc-server "):
                continue
            flag = flag.split(" ", 1)[1]
        elif flag.startswith("ggml-rpc-server "):
            continue
        out[flag] = (parts[1], parts[2].split("|") if len(parts) > 2 else None)
    return out


def parse(cmd) -> list[tuple[str, str | None]]:
    """(flag, value) pairs of a command, using the engine's allow-list to know which flags take a value."""
    allow = allow_list(cmd.tool)
    argv = [str(a) for a in cmd.argv][PROGRAM_LEN[cmd.tool]:]
    out, i = [], 0
    while i < len(argv):
        flag = argv[i]
        assert flag in allow, f"{cmd.tool}: {flag} is not a flag of the pinned version"
        typ = allow[flag][0]
        if typ in ("flag", "bool"):
            out.append((flag, None))
            i += 1
        else:
            out.append((flag, argv[i + 1]))
            i += 2
    return out


def summary(res) -> dict:
    cmds = getattr(res, "checked_commands", res.commands)
    return {"engine": res.engine, "version": res.version,
            "commands": [{"node": c.node, "role": c.role, "program": [str(a) for a in c.argv[:PROGRAM_LEN[c.tool]]],
                          "env": {k: str(v) for k, v in c.env.items()}, "flags": [list(p) for p in parse(c)]}
                         for c in cmds],
            "files": sorted(f.name for f in res.files)}


def _same(a, b) -> bool:
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    return abs(fa - fb) <= 1e-3 * max(1.0, abs(fb))


@pytest.mark.parametrize("name,plan_name,engine,model_path", CASES)
def test_golden(name, plan_name, engine, model_path, tmp_path, update_goldens):
    res = export_plan(plan(plan_name), engine, tmp_path, model_path=model_path)
    got = summary(res)
    path = GOLDEN / f"{name}.json"
    if update_goldens:
        path.write_text(json.dumps(got, indent=1) + "\n")
    assert path.exists(), f"missing golden {path.relative_to(ROOT.parent)}: run pytest --update-goldens and review it"
    want = json.loads(path.read_text())
    assert got["files"] == want["files"] and got["engine"] == want["engine"] and got["version"] == want["version"]
    assert len(got["commands"]) == len(want["commands"])
    for g, w in zip(got["commands"], want["commands"], strict=True):
        assert (g["node"], g["role"], g["program"], g["env"]) == (w["node"], w["role"], w["program"], w["env"])
        assert [f for f, _ in g["flags"]] == [f for f, _ in w["flags"]]
        for (f, gv), (_, wv) in zip(g["flags"], w["flags"], strict=True):
            assert _same(gv, wv), f"{name} {f}: {gv} != {wv}"
    # every file was written, scripts are executable and valid bash
    for f in res.files:
        assert (tmp_path / f.name).read_text() == f.content
        if f.name.endswith(".sh"):
            assert os.access(tmp_path / f.name, os.X_OK)
            subprocess.run(["bash", "-n", str(tmp_path / f.name)], check=True)
    assert "EXPLAIN.md" in got["files"]


@pytest.mark.parametrize("name,plan_name,engine,model_path", CASES)
def test_values_match_allow_list_types(name, plan_name, engine, model_path):  # noqa: ARG001 (the case's id)
    res = export_plan(plan(plan_name), engine, None, model_path=model_path)
    for c in getattr(res, "checked_commands", res.commands):
        allow = allow_list(c.tool)
        for flag, value in parse(c):
            typ, choices = allow[flag]
            if typ == "int":
                assert re.fullmatch(r"\d+", value), f"{flag} {value} is not a plain integer"
            elif typ == "float":
                float(value)
            elif typ == "json":
                json.loads(value)
            if choices and value is not None:
                assert value in choices, f"{flag} {value} not in {choices}"


def test_lengths_are_integers():
    p = plan("tp8_v4pro_h200_vllm")
    assert p.context == 393216
    for engine, flag in (("vllm", "--max-model-len"), ("sglang", "--context-length")):
        res = export_plan(p, engine, None)
        vals = dict(parse(res.commands[0]))
        assert vals[flag] == "393216"
    res = export_plan(plan("offload_v4flash_llamacpp"), "llamacpp", None, model_path="m.gguf")
    vals = dict(parse(res.commands[0]))
    assert vals["-c"] == str(393216 * res.plan.concurrency) and vals["-np"] == str(res.plan.concurrency)
    assert vals["-ctk"] == vals["-ctv"]


def test_vllm_fraction_contains_plan():
    for name in ("single_gpu_vllm", "tp8_v4pro_h200_vllm", "tp8dp2_ep_v4pro_2node_vllm"):
        p = plan(name)
        res = export_plan(p, "vllm", None)
        g = float(dict(parse(res.commands[0]))["--gpu-memory-utilization"])
        m = p.memory
        assert g * m.capacity_bytes >= m.weights_bytes + m.kv_bytes + m.runtime_bytes
        assert abs(g - m.budget_bytes / m.capacity_bytes) < 0.002


def test_sglang_fraction_covers_weights_and_kv_and_leaves_reserve():
    p = plan("kt_v4flash_sglang")
    res = export_plan(p, "sglang", None)
    f = float(dict(parse(res.commands[0]))["--mem-fraction-static"])
    m = p.memory
    assert f * m.capacity_bytes >= m.weights_bytes + m.kv_bytes
    assert (1 - f) * m.capacity_bytes >= m.runtime_bytes * 0.999
    # different from vLLM's number for the same hardware
    v = export_plan(plan("tp8_v4pro_h200_vllm"), "sglang", None)
    assert float(dict(parse(v.commands[0]))["--mem-fraction-static"]) < 0.92


def test_kt_flags_for_cpu_offload():
    res = export_plan(plan("kt_v4flash_sglang"), "sglang", None)
    vals = dict(parse(res.commands[0]))
    assert vals["--kt-method"] == "MXFP4"
    assert int(vals["--kt-num-gpu-experts"]) == 256 * 7 // 43
    assert vals["--kv-cache-dtype"] == "fp8_e4m3"


def _tensor_names(n_layers: int) -> list[str]:
    names = []
    for i in range(n_layers):
        for t in ("attn_norm", "attn_q_a", "attn_kv_a_mqa", "ffn_gate_inp", "ffn_up_shexp", "ffn_down_shexp",
                  "ffn_gate_shexp", "ffn_up", "ffn_down", "ffn_gate", "exp_probs_b"):
            names.append(f"blk.{i}.{t}.weight")
        for t in ("ffn_up_exps", "ffn_down_exps", "ffn_gate_exps", "ffn_gate_up_exps", "ffn_up_chexps"):
            names += [f"blk.{i}.{t}.weight", f"blk.{i}.{t}.scale"]
    return names + ["token_embd.weight", "output.weight", "output_norm.weight"]


def _expert_layer(name: str) -> int | None:
    m = re.match(r"blk\.(\d+)\.ffn_(up|down|gate|gate_up)_(ch|)exps\.", name)
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("layers", [[7, 8, 9, 42], list(range(3, 43)), [1], [0, 2, 10, 100, 101, 110]])
def test_ot_regex_matches_exactly_offloaded_experts(layers):
    rx = re.compile(offload_regex(layers))
    for name in _tensor_names(120):
        hit = rx.search(name) is not None          # llama.cpp uses std::regex_search
        want = _expert_layer(name) in set(layers)
        assert hit == want, name


def test_ot_regex_in_export_matches_plan_layers():
    p = plan("offload_v4flash_llamacpp")
    res = export_plan(p, "llamacpp", None, model_path="m.gguf")
    ot = dict(parse(res.commands[0]))["-ot"]
    pattern, buft = ot.rsplit("=", 1)
    assert buft == "CPU"
    rx = re.compile(pattern)
    off = {i for i in range(43) if any(rx.search(n) for n in _tensor_names(43) if n.startswith(f"blk.{i}."))}
    assert off == set(p.offload.offloaded_layers)


def test_n_cpu_moe_for_leading_layers():
    p = plan("offload_v4flash_llamacpp")
    q = p.model_copy(update={"offload": p.offload.model_copy(update={"offloaded_layers": list(range(5)),
                                                                     "expert_layers_offloaded": 5})})
    vals = dict(parse(export_plan(q, "llamacpp", None, model_path="m.gguf").commands[0]))
    assert vals["--n-cpu-moe"] == "5" and "-ot" not in vals


HOSTILE = ["a b; rm -rf ~", "$(reboot)", "`reboot`", "x' ; echo pwned; '", "a\"b$HOME", "m && reboot | cat > /x"]


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("engine,plan_name", [("vllm", "tp8dp2_ep_v4pro_2node_vllm"), ("sglang", "kt_v4flash_sglang"),
                                              ("llamacpp", "offload_v4flash_llamacpp")])
def test_hostile_model_path_cannot_inject(name, engine, plan_name, tmp_path):
    res = export_plan(plan(plan_name), engine, tmp_path, model_path=name)
    for c in res.commands:
        words = shlex.split(c.one_line())
        assert name in words            # the hostile string survives as ONE argument
    # run the head launcher with stub programs: the value reaches argv intact and nothing else runs
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for prog in ("vllm", "python3", "llama-server", "reboot", "rm"):
        stub = bindir / prog
        stub.write_text('#!/usr/bin/env bash\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$ARGV_OUT"\n')
        stub.chmod(0o755)
    (bindir / "reboot").write_text("#!/bin/sh\ntouch \"$PWNED\"\n")
    (bindir / "rm").write_text("#!/bin/sh\ntouch \"$PWNED\"\n")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "ARGV_OUT": str(tmp_path / "argv"), "PWNED": str(tmp_path / "pwned"),
           "HEAD_IP": "10.0.0.1", "IFACE_NAME": "eth0", "HOME": str(tmp_path)}
    subprocess.run(["bash", str(tmp_path / "launch-node0.sh")], env=env, check=True, cwd=tmp_path)
    assert not (tmp_path / "pwned").exists()
    argv = (tmp_path / "argv").read_text().split("\n")
    assert name in argv


def test_model_path_starting_with_dash_is_rejected():
    with pytest.raises(ExportError):
        export_plan(plan("single_gpu_vllm"), "vllm", None, model_path="--help")


def test_lws_manifest_and_ray_for_multinode():
    res = export_plan(plan("tp8dp2_ep_v4pro_2node_vllm"), "vllm", None)
    docs = list(yaml.safe_load_all(res.file("lws.yaml").content))
    lws, svc = docs
    assert lws["kind"] == "LeaderWorkerSet" and lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert leader["image"].endswith(f":v{VLLM_VERSION}")
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert "--data-parallel-backend ray" in leader["command"][2]
    assert svc["spec"]["selector"]["role"] == "leader"
    # the Service reaches the leader on the pod's address: the pod's server listens on every interface, while the
    # scripts for the user's own machines keep the loopback address
    assert "--host 0.0.0.0" in leader["command"][2] and "127.0.0.1" not in leader["command"][2]
    assert "--host 127.0.0.1" in res.file("ray.sh").content + res.file("launch-node0.sh").content
    assert "ray start --head" in res.file("ray.sh").content
    head, worker = res.commands
    hv, wv = dict(parse(head)), dict(parse(worker))
    assert "--headless" in wv and "--headless" not in hv
    assert wv["--data-parallel-start-rank"] == "1" and hv["--data-parallel-size"] == "2"
    assert "--enable-expert-parallel" in hv


def test_eplb_redundant_experts_optional():
    p = plan("tp8dp2_ep_v4pro_2node_vllm")
    res = export_plan(p, "vllm", None, redundant_experts=16)
    vals = dict(parse(res.commands[0]))
    assert "--enable-eplb" in vals
    assert json.loads(vals["--eplb-config"])["num_redundant_experts"] == 16
    with pytest.raises(ExportError):
        export_plan(p, "vllm", None, redundant_experts=3)   # (384 + 3) % 16 != 0
    assert "--enable-eplb" not in dict(parse(export_plan(p, "vllm", None).commands[0]))


def test_sglang_expert_location_file():
    res = export_plan(plan("tp8dp2_ep_v4pro_2node_vllm"), "sglang", None, expert_location="/data/placement.json")
    assert dict(parse(res.commands[0]))["--init-expert-location"] == "/data/placement.json"


def test_online_quantization_only_for_bf16_checkpoints():
    vals = dict(parse(export_plan(plan("single_gpu_vllm"), "vllm", None).commands[0]))
    assert vals.get("--quantization") == "fp8"          # Llama-3.1-8B is BF16; the plan runs it at fp8
    vals = dict(parse(export_plan(plan("tp8_v4pro_h200_vllm"), "vllm", None).commands[0]))
    assert "--quantization" not in vals                 # pre-quantized official checkpoint


def test_v4_recipe_flags():
    vals = dict(parse(export_plan(plan("tp8_v4pro_h200_vllm"), "vllm", None).commands[0]))
    assert vals["--kv-cache-dtype"] == "fp8" and vals["--block-size"] == "256"
    assert vals["--tokenizer-mode"] == "deepseek_v4" and "--trust-remote-code" in vals
    assert "--swap-space" not in vals


def test_explain_has_log_lines_and_predictions():
    for plan_name, engine, needle in (("tp8_v4pro_h200_vllm", "vllm", "Available KV cache memory"),
                                      ("kt_v4flash_sglang", "sglang", "KV Cache is allocated"),
                                      ("offload_v4flash_llamacpp", "llamacpp", "llama_kv_cache")):
        res = export_plan(plan(plan_name), engine, None, model_path="m.gguf" if engine == "llamacpp" else None)
        text = res.file("EXPLAIN.md").content
        assert needle in text and "tok/s per sequence" in text and "GiB" in text


def test_wrong_offload_mode_is_an_error():
    with pytest.raises(ExportError):
        export_plan(plan("kt_v4flash_sglang"), "vllm", None)


def test_load_plan_rejects_other_json(tmp_path):
    f = tmp_path / "x.json"
    f.write_text('{"schema_id": "rigopt.estimate/1"}')
    with pytest.raises(ExportError):
        load_plan(f)


@pytest.mark.parametrize("name,plan_name,engine,model_path", CASES)
def test_single_plan_servers_listen_on_loopback_only(name, plan_name, engine, model_path):  # noqa: ARG001
    """Servers bind 127.0.0.1 unless the user names another address: every launch command of a single plan that
    takes a listen address (--host, --bind, OLLAMA_HOST) gets the loopback one (fleet pools, which a router on
    another pod must reach, are tested in test_fleet_export.py)."""
    res = export_plan(plan(plan_name), engine, None, model_path=model_path)
    seen = 0
    for c in getattr(res, "checked_commands", res.commands):
        for flag, value in parse(c):
            if flag in ("--host", "--bind"):
                assert value == "127.0.0.1", (name, c.one_line())
                seen += 1
        host_env = c.env.get("OLLAMA_HOST")
        if host_env is not None:
            assert str(host_env).startswith("127.0.0.1:")
            seen += 1
    assert seen, name
