"""Fleet export: every engine flag of every pool (aggregated, prefill, decode; vLLM and SGLang) is a flag of the
pinned engine's parser with a value of the right type, values are shell-quoted, PD flags are present, and the
Kubernetes manifests have one Deployment per pool of single-node replicas with its replica count."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from optimizer.engines import SGLANG_ROUTER_VERSION, SGLANG_VERSION, VLLM_VERSION
from optimizer.export.fleet import SGLANG_BOOTSTRAP_PORT, VLLM_KV_TRANSFER, export_fleet, pd_args
from optimizer.fleet import FleetQuery, solve_fleet

FLAGS = Path(__file__).parent / "data" / "engine_flags"
ALLOW_FILES = {
    "vllm": f"vllm-{VLLM_VERSION}.txt",
    "sglang": f"sglang-{SGLANG_VERSION}.txt",
    "sglang-router": f"sglang-router-{SGLANG_ROUTER_VERSION}.txt",  # python3 -m sglang_router.launch_router
    "vllm-proxy": f"vllm-proxy-{VLLM_VERSION}.txt",  # python3 toy_proxy_server.py
}
PROGRAM_LEN = {"vllm": 3, "sglang": 3, "sglang-router": 3, "vllm-proxy": 2}


def allow_list(tool: str) -> dict[str, tuple[str, list[str] | None]]:
    out = {}
    for line in (FLAGS / ALLOW_FILES[tool]).read_text().splitlines():
        if line and not line.startswith("#"):
            parts = line.split("\t")
            out[parts[0]] = (parts[1], parts[2].split("|") if len(parts) > 2 else None)
    return out


def flags(cmd) -> list[tuple[str, str | None]]:
    allow = allow_list(cmd.tool)
    argv = [str(a) for a in cmd.argv][PROGRAM_LEN[cmd.tool] :]
    out, i = [], 0
    while i < len(argv):
        f = argv[i]
        assert f in allow, f"{cmd.tool}: {f} is not a flag of the pinned version"
        typ, choices = allow[f]
        if typ in ("flag", "bool"):
            out.append((f, None))
            i += 1
            continue
        if typ == "list":  # one or more values, up to the next flag
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            assert j > i + 1, f"{f} needs a value"
            out.append((f, " ".join(argv[i + 1 : j])))
            i = j
            continue
        v = argv[i + 1]
        if typ == "int":
            int(v)
        elif typ == "float":
            float(v)
        elif typ == "json":
            json.loads(v)
        if choices:
            assert v in choices, f"{f} {v} not in {choices}"
        out.append((f, v))
        i += 2
    return out


@pytest.fixture(scope="module")
def results():
    """An aggregated V4-Flash fleet per engine, and the same pools re-labelled as prefill + decode pools."""
    out = {}
    for engine in ("vllm", "sglang"):
        res = solve_fleet(
            FleetQuery(
                "deepseek-v4-flash",
                8192,
                1024,
                2.0,
                2.0,
                0.05,
                objective="capex",
                gpus=("h200-sxm",),
                engines=(engine,),
                compare_other=False,
                disagg=False,
            )
        )
        agg = res.fleet
        pool = agg.pools[0]
        pd = agg.model_copy(
            update={
                "kind": "disaggregated",
                "pools": [
                    pool.model_copy(
                        update={"role": "prefill", "kv_transfer_s": 0.001, "kv_link": "ib-ndr", "kv_transport": "rdma"}
                    ),
                    pool.model_copy(
                        update={"role": "decode", "replicas": 2, "kv_link": "ib-ndr", "kv_transport": "rdma"}
                    ),
                ],
            }
        )
        out[engine] = (res, agg, pd)
    return out


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
@pytest.mark.parametrize("which", ["aggregated", "disaggregated"])
def test_every_flag_in_allow_list(results, engine, which, tmp_path):
    res, agg, pd = results[engine]
    e = export_fleet(res, tmp_path, fleet=agg if which == "aggregated" else pd)
    assert e.commands
    for c in e.commands:
        assert c.tool == engine
        got = dict(flags(c))
        if which == "disaggregated":
            if engine == "vllm":
                assert json.loads(got["--kv-transfer-config"]) == json.loads(VLLM_KV_TRANSFER)
                assert json.loads(VLLM_KV_TRANSFER)["kv_connector"] == "NixlConnector"
            else:
                assert got["--disaggregation-mode"] in ("prefill", "decode")
                assert got["--disaggregation-transfer-backend"] == "nixl"
        # the shell text round-trips to the same argv (every value quoted)
        words = shlex.split(c.argv_shell().replace("\\\n", " "))
        assert len(words) == len(c.argv)
    for c in e.router:  # every router / proxy command, aggregated replicas' too
        assert c.tool in ("sglang-router", "vllm-proxy") and flags(c)
    if which == "disaggregated":
        modes = [dict(flags(c)).get("--disaggregation-mode") for c in e.commands] if engine == "sglang" else []
        if engine == "sglang":
            assert modes == ["prefill", "decode"]
            assert "--disaggregation-bootstrap-port" in dict(flags(e.commands[0]))
        assert e.router and (tmp_path / "router.sh").is_file()
        router = e.router[0].one_line()
        assert ("--pd-disaggregation" in router) if engine == "sglang" else ("--prefiller-hosts" in router)
        for c in e.router:  # router / proxy flags: every one in the allow-list of the pinned router's parser
            assert c.tool == ("sglang-router" if engine == "sglang" else "vllm-proxy")
            got = flags(c)
            if engine == "sglang":  # --prefill URL BOOTSTRAP_PORT (without the port the router assumes none)
                pre = [v for f, v in got if f == "--prefill"]
                assert pre and all(v.split()[1] == str(SGLANG_BOOTSTRAP_PORT) for v in pre)
            else:  # the proxy binds 127.0.0.1 unless told otherwise
                d = dict(got)
                assert d["--host"] == "0.0.0.0"
                assert len(d["--prefiller-hosts"].split()) == len(d["--prefiller-ports"].split())
                assert len(d["--decoder-hosts"].split()) == len(d["--decoder-ports"].split())


def test_router_allow_lists_hold_the_flags_the_exporters_use():
    # the allow-lists come from the routers' own parsers (tools/extract_flags.py main_routers)
    sg, vp = allow_list("sglang-router"), allow_list("vllm-proxy")
    for f in ("--pd-disaggregation", "--prefill", "--decode", "--worker-urls", "--host", "--port"):
        assert f in sg
    assert sg["--pd-disaggregation"][0] == "flag" and sg["--port"][0] == "int" and sg["--prefill"][0] == "list"
    for f in ("--host", "--port", "--prefiller-hosts", "--prefiller-ports", "--decoder-hosts", "--decoder-ports"):
        assert f in vp
    assert "--bogus" not in sg and "--prefill" not in vp


def test_pd_args_per_engine():
    assert pd_args("vllm", "aggregated") == ([], {})
    a, env = pd_args("vllm", "decode")
    assert a[0] == "--kv-transfer-config" and env["VLLM_NIXL_SIDE_CHANNEL_PORT"]
    assert pd_args("sglang", "decode")[0] == [
        "--disaggregation-mode",
        "decode",
        "--disaggregation-transfer-backend",
        "nixl",
    ]


def test_k8s_deployment_per_single_node_pool(results, tmp_path):
    res, _, pd = results["sglang"]
    export_fleet(res, tmp_path, fleet=pd)
    docs = [d for d in yaml.safe_load_all((tmp_path / "k8s.yaml").read_text()) if d]
    deps = [d for d in docs if d["kind"] == "Deployment"]
    assert [d["spec"]["replicas"] for d in deps] == [1, 2]
    assert {d["metadata"]["labels"]["rigopt/role"] for d in deps} == {"prefill", "decode"}
    for d in deps:
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(pd.pools[0].gpus_per_node)
        assert "--disaggregation-mode" in c["command"][2]
    assert sum(d["kind"] == "Service" for d in docs) == 2
    fleet = json.loads((tmp_path / "fleet.json").read_text())
    assert fleet["schema_id"] == "rigopt.fleet/1"
