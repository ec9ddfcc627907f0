"""Fleet export: every engine flag of every pool (aggregated, prefill, decode; vLLM and SGLang) is a flag of the
pinned engine's parser with a value of the right type, values are shell-quoted, PD flags are present, and the
Kubernetes manifests have one Deployment per pool of single-node replicas with its replica count."""

from __future__ import annotations

import json
import shlex
import time
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
        # a pool's server is reached by its router from another machine or pod: it listens on every interface
        # (a single plan's exported server keeps the loopback address)
        if c.role == "head":
            assert got["--host"] == "0.0.0.0", c.one_line()
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
    deps = [d for d in docs if d["kind"] == "Deployment" and "rigopt/pool" in d["metadata"]["labels"]]
    assert [d["spec"]["replicas"] for d in deps] == [1, 2]
    assert {d["metadata"]["labels"]["rigopt/role"] for d in deps} == {"prefill", "decode"}
    for d in deps:
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == str(pd.pools[0].gpus_per_node)
        assert "--disaggregation-mode" in c["command"][2]
    assert sum(d["kind"] == "Service" for d in docs) == 2 + 1   # one per pool, one for the PD router
    fleet = json.loads((tmp_path / "fleet.json").read_text())
    assert fleet["schema_id"] == "rigopt.fleet/1"


def _mixed(pd, agg_replicas: int = 2):
    """The PD fleet plus an aggregated pool of the same replicas beside it (prefill 1, decode 2 replicas)."""
    pool = pd.pools[0]
    extra = pool.model_copy(update={"role": "aggregated", "replicas": agg_replicas, "kv_transfer_s": 0.0})
    return pd.model_copy(update={"kind": "mixed", "pools": [*pd.pools, extra]})


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_routers_cover_every_replica_of_every_pool(results, engine, tmp_path):
    res, _, pd = results[engine]
    fleet = _mixed(pd)
    e = export_fleet(res, tmp_path, fleet=fleet)
    # every replica of every routed pool is one worker of exactly one router (not one Service URL per pool)
    want = {f"POOL{k}_R{i}_IP" for k, p in enumerate(fleet.pools) for i in range(p.replicas)
            if engine == "sglang" or p.role != "aggregated"}
    seen = [n for c in e.router for n in c.env_names]
    assert sorted(seen) == sorted(want)
    pd_router = e.router[0]
    got = flags(pd_router)  # every router flag is one the pinned router's parser accepts
    if engine == "sglang":
        assert [v for f, v in got if f == "--prefill"] == [f"http://${{POOL0_R0_IP}}:30000 {SGLANG_BOOTSTRAP_PORT}"]
        assert [v for f, v in got if f == "--decode"] == ["http://${POOL1_R0_IP}:30000", "http://${POOL1_R1_IP}:30000"]
        # the aggregated pool beside the PD pools gets its own route, one URL per replica, cache-aware
        agg = dict(flags(e.router[1]))
        assert agg["--worker-urls"].split() == ["http://${POOL2_R0_IP}:30000", "http://${POOL2_R1_IP}:30000"]
        assert agg["--policy"] == "cache_aware" and agg["--port"] != dict(got)["--port"]
    else:
        d = dict(got)
        assert d["--decoder-hosts"].split() == ["${POOL1_R0_IP}", "${POOL1_R1_IP}"]
        assert len(d["--decoder-ports"].split()) == 2 and len(e.router) == 1
    # router.sh requires every address and starts every router; README gives each route its router weight
    sh = (tmp_path / "router.sh").read_text()
    assert all(f': "${{{n}:?' in sh for n in want)
    readme = (tmp_path / "README.md").read_text()
    routes = [line for line in readme.splitlines() if "router weight" in line and line.startswith("- router.sh")
              or line.startswith("- pool2 Service")]
    assert len(routes) == 2
    shares = [int(x.rsplit("(", 1)[1].split("%")[0]) for x in routes]
    assert 99 <= sum(shares) <= 101


def test_router_script_starts_every_router(results, tmp_path):
    # router.sh run as a user would (stub python3 printing its argv): both routers start, with every address
    import os
    import subprocess
    res, _, pd = results["sglang"]
    fleet = _mixed(pd)
    export_fleet(res, tmp_path, fleet=fleet)
    stub = tmp_path / "bin" / "python3"
    stub.parent.mkdir()
    stub.write_text('#!/usr/bin/env bash\necho "$*" >> "$OUT_LOG"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "OUT_LOG": str(tmp_path / "log")}
    env.update({f"POOL{k}_R{i}_IP": f"10.0.{k}.{i}" for k, p in enumerate(fleet.pools) for i in range(p.replicas)})
    subprocess.run(["bash", str(tmp_path / "router.sh")], env=env, check=True, timeout=30)
    for _ in range(100):  # the first router runs in the background
        lines = (tmp_path / "log").read_text().splitlines() if (tmp_path / "log").exists() else []
        if len(lines) == 2:
            break
        time.sleep(0.05)
    assert sorted(line.split()[2] for line in lines) == ["--pd-disaggregation", "--worker-urls"]
    assert all("${" not in line for line in lines) and "http://10.0.2.1:30000" in " ".join(lines)
    env.pop("POOL1_R1_IP")
    r = subprocess.run(["bash", str(tmp_path / "router.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "POOL1_R1_IP" in r.stderr


def test_k8s_routers_discover_every_replica_pod(results, tmp_path):
    # in Kubernetes the SGLang routers find every replica pod by its labels (sglang-router --service-discovery),
    # not one Service URL per pool: each pool's pod template matches exactly one router's selector
    res, _, pd = results["sglang"]
    fleet = _mixed(pd)
    e = export_fleet(res, tmp_path, fleet=fleet)
    docs = [d for d in yaml.safe_load_all((tmp_path / "k8s.yaml").read_text()) if d]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"] for d in docs
            if d["kind"] == "Deployment" and "rigopt/pool" in d["metadata"]["labels"]}
    routers = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in docs
               if d["kind"] == "Deployment" and "rigopt/router" in d["metadata"]["labels"]}
    assert set(routers) == {"router-pd", "router-aggregated"} and len(e.k8s_routers) == 2
    selectors = []
    for c in e.k8s_routers:
        got = flags(c)  # flags of the pinned router's parser
        d = dict(got)
        assert "--service-discovery" in d and d["--service-discovery-port"] == "30000"
        for f in ("--prefill-selector", "--decode-selector", "--selector"):
            if f in d:
                selectors.append(dict(kv.split("=", 1) for kv in d[f].split()))
    for name, meta in pods.items():
        matched = [s for s in selectors if all(meta["labels"].get(k) == v for k, v in s.items())]
        assert len(matched) == 1, name
        if meta["labels"]["rigopt/role"] == "prefill":  # where discovery reads the bootstrap port
            assert meta["annotations"]["sglang.ai/bootstrap-port"] == str(SGLANG_BOOTSTRAP_PORT)
    for spec in routers.values():
        assert spec["serviceAccountName"] == "rigopt-router"
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"][0]["resources"] == ["pods"] and "watch" in role["rules"][0]["verbs"]


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_split_by_router_weight_is_an_httproute(results, engine, tmp_path):
    # "split traffic by router weight" as a command: a Gateway API HTTPRoute whose backendRefs are the fleet's
    # routes (Services of k8s.yaml) with integer weights proportional to the README's router weights
    res, agg, pd = results[engine]
    fleets = {"mixed": _mixed(pd)}
    pool = agg.pools[0]
    fleets["two aggregated pools"] = agg.model_copy(update={"pools": [pool, pool.model_copy(update={"replicas": 3})]})
    for which, fleet in fleets.items():
        d = tmp_path / which.replace(" ", "-")
        export_fleet(res, d, fleet=fleet)
        docs = [x for x in yaml.safe_load_all((d / "k8s.yaml").read_text()) if x]
        routes = [x for x in docs if x["kind"] == "HTTPRoute"]
        readme = (d / "README.md").read_text()
        weights = [float(line.split("router weight ")[1].split()[0]) for line in readme.splitlines()
                   if line.startswith("- ") and "router weight" in line and "req/s each" not in line]
        if engine == "vllm" and which == "mixed":  # vLLM's PD proxy runs from router.sh, not in k8s.yaml
            assert not routes and len(weights) == 2
            continue
        if engine == "sglang" and which == "two aggregated pools":  # one route: one router over all 4 replicas
            assert not routes and not weights
            continue
        assert len(routes) == 1
        refs = routes[0]["spec"]["rules"][0]["backendRefs"]
        services = {x["metadata"]["name"]: x["spec"]["ports"][0]["port"] for x in docs if x["kind"] == "Service"}
        assert all(services.get(r["name"]) == r["port"] for r in refs)
        assert len(refs) == len(weights)
        got = [r["weight"] / sum(x["weight"] for x in refs) for r in refs]
        assert got == pytest.approx([w / sum(weights) for w in weights], abs=2e-3)
        assert all(isinstance(r["weight"], int) and 0 <= r["weight"] <= 1_000_000 for r in refs)
        if which == "two aggregated pools":  # the same replica, 1 vs 3 of them: a 1:3 split
            assert [r["weight"] for r in refs] == [250, 750]
