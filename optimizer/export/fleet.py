"""Launch plans for a fleet (`rigopt fleet --out DIR`): every pool as the pinned engine's commands, disaggregated
pools with their KV-transfer flags, a router command, and Kubernetes manifests.

- Each pool's replica is a `rigopt.plan/1` plan (built from `evaluate()` at the rate the router gives it) exported
  by `optimizer.export.export_plan`, so its flags are exactly the ones `rigopt export` writes.
- vLLM 0.33.0 prefill and decode instances: `--kv-transfer-config '{"kv_connector":"NixlConnector",
  "kv_role":"kv_both"}'` (vLLM docs, NixlConnector usage guide), `VLLM_NIXL_SIDE_CHANNEL_PORT`; requests go
  through vLLM's NIXL proxy (`toy_proxy_server.py --host 0.0.0.0 ...` from the vLLM source tree, not part of
  the wheel; optimizer/engines.py VLLM_PROXY_SOURCE names the file and the commit its flags were read from).
- SGLang 0.5.23: `--disaggregation-mode prefill|decode`, `--disaggregation-transfer-backend nixl`,
  `--disaggregation-bootstrap-port` on prefill servers (sglang 0.5.23 server_args.py); router `python3 -m
  sglang_router.launch_router --pd-disaggregation --prefill URL BOOTSTRAP_PORT --decode URL` (sglang-router
  SGLANG_ROUTER_VERSION, the router SGLang 0.5.23's own PD test fixture starts; without the port it assumes none).
- Kubernetes: a Deployment (+ Service) per pool of single-node replicas (`replicas: N`), a LeaderWorkerSet per
  pool of multi-node replicas (vLLM's Ray-based manifest with `replicas: N`).
Engine and router/proxy flags are checked against `tests/data/engine_flags/` (tests/test_fleet_export.py):
`sglang-router-<version>.txt` and `vllm-proxy-<version>.txt` are extracted from the router's wheel and the proxy's
source by `python tools/extract_flags.py routers SRC OUT`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.errors import InputError
from optimizer.export import export_plan
from optimizer.export.common import (
    ALL_INTERFACES,
    ENGINE_VERSIONS,
    HTTP_PORT,
    Command,
    ExportError,
    ExportFile,
    Var,
    quote,
)
from optimizer.export.k8s import IMAGE as VLLM_IMAGE
from optimizer.fleet.capacity import SLA, Config, Replica
from optimizer.fleet.solve import Fleet, FleetResult, Pool
from optimizer.layout import Parallel
from optimizer.limits import clip_for_message, prepare_out_dir, safe_component, under, write_file
from optimizer.solver import plan as P

SGLANG_IMAGE = f"lmsysorg/sglang:v{ENGINE_VERSIONS['sglang']}"  # image tag assumed from SGLang's release naming
NIXL_SIDE_CHANNEL_PORT = 5600
SGLANG_BOOTSTRAP_PORT = 8998
ROUTER_PORT = 8000
VLLM_KV_TRANSFER = json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"}, separators=(",", ":"))


@dataclass
class FleetExport:
    files: list[ExportFile] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)  # engine commands (checked against allow-lists)
    router: list[Command] = field(default_factory=list)  # router / proxy commands (not engine flags)
    k8s_routers: list[Command] = field(default_factory=list)  # the routers k8s.yaml runs (service discovery)
    warnings: list[str] = field(default_factory=list)
    out_dir: str | None = None


def pool_plan(res: FleetResult, pool: Pool) -> P.Plan:
    """The `rigopt.plan/1` plan of one replica of `pool`, evaluated at its router share."""
    m = resolve_model(res.model)
    sla = SLA(res.isl, res.osl, res.ttft_s, res.tpot_s, res.percentile)
    cfg = Config(
        pool.node,
        pool.accelerator,
        pool.gpus_per_node,
        pool.nodes_per_replica,
        pool.engine,
        pool.quant,
        pool.kv_dtype,
        Parallel(tp=pool.tp, pp=pool.pp, dp=pool.dp, ep=pool.ep),
    )
    ev = Replica(m, cfg, sla).at(pool.role, pool.rate_per_replica_rps)
    node = load_hardware().nodes[pool.node]
    mem, st, d = ev.memory, ev.settings, ev.decode
    par = cfg.par
    return P.Plan(
        model=res.model,
        engine=pool.engine,
        quant=pool.quant,
        kv_dtype=ev.kv.kv_dtype,
        context=res.isl + res.osl,
        concurrency=1,
        hardware=P.Hardware(
            node=pool.node,
            accelerator=pool.accelerator,
            n_nodes=pool.nodes_per_replica,
            gpus_per_node=pool.gpus_per_node,
            host_dram_bytes=int(node.dram_bytes),
            extra_dram_bytes=0,
        ),
        parallel=P.ParallelLayout(tp=par.tp, pp=par.pp, dp=par.dp, ep=par.ep, ep_size=par.ep_size),
        offload=P.Offload(mode="none", expert_layers_offloaded=0, offloaded_layers=[], host_bytes=0.0),
        costs=P.Costs(
            capex_usd=pool.capex_usd,
            usd_per_hour=pool.usd_per_hour,
            power_watts=pool.power_watts,
            objective="hourly" if pool.mode == "rent" else "capex",
            objective_value=(pool.usd_per_hour if pool.mode == "rent" else pool.capex_usd) or 0.0,
        ),
        memory=P.Memory(
            capacity_bytes=mem.capacity_bytes,
            budget_bytes=mem.budget_bytes,
            weights_bytes=mem.weights_bytes,
            kv_bytes=mem.kv_bytes,
            runtime_bytes=mem.runtime_bytes,
            headroom_bytes=mem.headroom_bytes,
            host_used_bytes=0.0,
            host_capacity_bytes=float(node.dram_bytes),
        ),
        speed=P.Speed(
            tok_s_per_seq=d.tok_s_per_seq,
            tok_s_bound_per_seq=d.tok_s_bound_per_seq,
            tok_s_aggregate=d.tok_s_aggregate,
            ttft_s=ev.prefill.ttft_s,
            ttft_bound_s=ev.prefill.ttft_bound_s,
            binding=d.binding,
            terms_s=dict(d.terms_s),
        ),
        binding_constraint="SLA",
        candidate_id=f"fleet/{pool.role}/{pool.offer}/{pool.engine}/{pool.quant}/{pool.layout}",
        settings=P.EngineSettingsPlan(
            max_model_len=st.max_model_len,
            max_num_seqs=st.max_num_seqs,
            max_num_batched_tokens=st.max_num_batched_tokens,
            gpu_memory_utilization=st.gpu_memory_utilization,
            mem_fraction_static=st.mem_fraction_static,
            block_size=st.block_size,
        ),
        notes=[f"{pool.role} pool of a fleet: {pool.replicas} replicas at {pool.rate_per_replica_rps:.3g} req/s each"],
    )


def pd_args(engine: str, role: str) -> tuple[list, dict]:
    """Engine flags and environment that make an instance a prefill or decode server."""
    if role == "aggregated":
        return [], {}
    if engine == "vllm":
        return ["--kv-transfer-config", VLLM_KV_TRANSFER], {
            "VLLM_NIXL_SIDE_CHANNEL_PORT": str(NIXL_SIDE_CHANNEL_PORT),
            "UCX_NET_DEVICES": "all",
        }
    args = ["--disaggregation-mode", role, "--disaggregation-transfer-backend", "nixl"]
    if role == "prefill":
        args += ["--disaggregation-bootstrap-port", str(SGLANG_BOOTSTRAP_PORT)]
    return args, {}


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", s.lower()).strip("-")[:40].strip("-") or "pool"


def replica_ip(k: int, i: int) -> Var:
    """The address of replica i of pool k: every replica is its own router worker (a Service address would hide
    the replicas behind one URL, and the SGLang router's cache-aware policy would see one worker)."""
    return Var(f"${{POOL{k}_R{i}_IP}}")


def _replicas(fleet: Fleet, pools: list[int]) -> list[tuple[int, int]]:
    return [(k, i) for k in pools for i in range(fleet.pools[k].replicas)]


def router_commands(fleet: Fleet) -> list[Command]:
    """One router per route: the prefill/decode pools behind SGLang's PD router or vLLM's NIXL proxy on
    ROUTER_PORT, the aggregated SGLang pools behind an sglang-router on ROUTER_PORT + 1 (a fleet may have both);
    every replica of every pool is one worker URL."""
    pre = [k for k, p in enumerate(fleet.pools) if p.role == "prefill"]
    dec = [k for k, p in enumerate(fleet.pools) if p.role == "decode"]
    agg = [k for k, p in enumerate(fleet.pools) if p.role == "aggregated" and p.engine == "sglang"]
    out: list[Command] = []
    if pre and dec:
        engine = fleet.pools[pre[0]].engine
        port = HTTP_PORT[engine]
        if engine == "sglang":
            a: list = ["python3", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
            for k, i in _replicas(fleet, pre):  # URL and the prefill server's bootstrap port (omitted: none)
                a += ["--prefill", Var(f"http://${{POOL{k}_R{i}_IP}}:{port}"), str(SGLANG_BOOTSTRAP_PORT)]
            for k, i in _replicas(fleet, dec):
                a += ["--decode", Var(f"http://${{POOL{k}_R{i}_IP}}:{port}")]
            a += ["--host", ALL_INTERFACES, "--port", str(ROUTER_PORT)]
        else:
            pr, dr = _replicas(fleet, pre), _replicas(fleet, dec)
            a = [
                "python3",
                "toy_proxy_server.py",
                "--host",
                ALL_INTERFACES,  # its default, 127.0.0.1, is not reachable from outside the pod
                "--port",
                str(ROUTER_PORT),
                "--prefiller-hosts",
                *[replica_ip(k, i) for k, i in pr],
                "--prefiller-ports",
                *[str(port)] * len(pr),
                "--decoder-hosts",
                *[replica_ip(k, i) for k, i in dr],
                "--decoder-ports",
                *[str(port)] * len(dr),
            ]
        out.append(Command(0, "router", a, tool="sglang-router" if engine == "sglang" else "vllm-proxy"))
    if agg:
        urls = [Var(f"http://${{POOL{k}_R{i}_IP}}:{HTTP_PORT['sglang']}") for k, i in _replicas(fleet, agg)]
        port = ROUTER_PORT + 1 if out else ROUTER_PORT
        out.append(Command(0, "router", ["python3", "-m", "sglang_router.launch_router", "--worker-urls", *urls,
                                         "--policy", "cache_aware", "--host", ALL_INTERFACES, "--port", str(port)],
                           tool="sglang-router"))
    return out


def routes(fleet: Fleet) -> list[tuple[str, list[int], float]]:
    """(entry point, pools behind it, router weight = the requests/s its replicas sustain within the SLA) for
    every route into the fleet: a front splits traffic between routes in proportion to the weights."""
    def cap(ks: list[int]) -> float:
        return sum(fleet.pools[k].capacity_rps * fleet.pools[k].replicas for k in ks)  # capacity_rps: per replica

    pd = [k for k, p in enumerate(fleet.pools) if p.role != "aggregated"]
    agg_sg = [k for k, p in enumerate(fleet.pools) if p.role == "aggregated" and p.engine == "sglang"]
    out: list[tuple[str, list[int], float]] = []
    if pd:  # a PD route sustains the smaller of its prefill and its decode capacity
        w = min(cap([k for k in pd if fleet.pools[k].role == r]) for r in ("prefill", "decode"))
        out.append((f"router.sh :{ROUTER_PORT} (PD)", pd, w))
    if agg_sg:
        port = ROUTER_PORT + 1 if pd else ROUTER_PORT
        out.append((f"router.sh :{port} (aggregated SGLang)", agg_sg, cap(agg_sg)))
    for k, p in enumerate(fleet.pools):
        if p.role == "aggregated" and p.engine != "sglang":
            out.append((f"pool{k} Service (its {p.replicas} replicas)", [k], cap([k])))
    return out


def _deployment(name: str, pool: Pool, cmd: Command, image: str) -> str:
    port = HTTP_PORT[pool.engine]
    shell = "".join(f"export {k}={quote(v)}; " for k, v in cmd.env.items()) + " ".join(quote(a) for a in cmd.argv)
    labels = {"app.kubernetes.io/managed-by": "rigopt", "rigopt/pool": name, "rigopt/role": pool.role,
              "rigopt/engine": pool.engine}
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": pool.replicas,
            "selector": {"matchLabels": {"rigopt/pool": name}},
            "template": {
                "metadata": {"labels": dict(labels), **_annotations(pool)},
                "spec": {
                    "containers": [
                        {
                            "name": pool.engine,
                            "image": image,
                            "command": ["sh", "-c", shell],
                            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                            "ports": [{"containerPort": port}],
                            "resources": {"limits": {"nvidia.com/gpu": str(pool.gpus_per_node)}},
                            "readinessProbe": {
                                "tcpSocket": {"port": port},
                                "initialDelaySeconds": 60,
                                "periodSeconds": 10,
                            },
                            "volumeMounts": [{"mountPath": "/dev/shm", "name": "dshm"}],
                        }
                    ],
                    "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}],
                },
            },
        },
    }
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"rigopt/pool": name},
            "type": "ClusterIP",
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }
    head = (
        f"# {pool.role} pool: {pool.replicas} x {pool.gpus_per_replica} {pool.accelerator} ({pool.offer}), "
        f"{pool.engine} {ENGINE_VERSIONS[pool.engine]}, {pool.layout}\n"
    )
    return head + yaml.safe_dump_all([dep, svc], sort_keys=False, width=10_000)


def pool_name(k: int, pool: Pool) -> str:
    return f"pool{k}-{pool.role}-{_slug(pool.accelerator)}"


GATEWAY = "rigopt-gateway"
WEIGHT_SCALE = 1000  # HTTPRoute weights are integers (0..1,000,000), proportional within a rule


def split_route(fleet: Fleet) -> dict | None:
    """A Gateway API HTTPRoute splitting the fleet's traffic between its routes in proportion to their router
    weights (gateway.networking.k8s.io/v1 HTTPRoute spec.rules[].backendRefs[].weight, "a proportional split",
    gateway-api.sigs.k8s.io/guides/traffic-splitting), when every route is a Service of k8s.yaml: the SGLang
    routers, and aggregated vLLM pools (their Service spreads over their replicas). None for a single route, or
    when a vLLM PD route (its proxy runs from router.sh) is one of them."""
    rs = routes(fleet)
    if len(rs) < 2:
        return None
    refs = []
    total = sum(w for *_, w in rs)
    for name, pools, w in rs:
        k = pools[0]
        p = fleet.pools[k]
        if name.startswith("router.sh"):
            if p.engine != "sglang":
                return None
            svc = "router-pd" if p.role != "aggregated" else "router-aggregated"
            port = int(name.split(":")[1].split()[0])
        else:
            svc, port = pool_name(k, p), HTTP_PORT[p.engine]
        refs.append({"name": svc, "port": port, "weight": max(1, round(WEIGHT_SCALE * w / total))})
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "rigopt-fleet", "labels": {"app.kubernetes.io/managed-by": "rigopt"}},
            "spec": {"parentRefs": [{"name": GATEWAY}], "rules": [{"backendRefs": refs}]}}


def _annotations(pool: Pool) -> dict:
    """SGLang prefill pods carry their bootstrap port where the router's service discovery reads it
    (sglang_router 0.3.2 RouterArgs.bootstrap_port_annotation, default "sglang.ai/bootstrap-port")."""
    if pool.engine == "sglang" and pool.role == "prefill":
        return {"annotations": {"sglang.ai/bootstrap-port": str(SGLANG_BOOTSTRAP_PORT)}}
    return {}


ROUTER_ACCOUNT = "rigopt-router"


def k8s_router_commands(fleet: Fleet) -> list[tuple[str, int, Command]]:
    """(name, port, command) of the routers a Kubernetes fleet runs as Deployments: sglang-router's service
    discovery finds every replica pod by its labels (one worker per pod, as they come and go), for the SGLang PD
    pools and the aggregated SGLang pools. vLLM's NIXL proxy takes a fixed host list: router.sh only."""
    roles = {p.role for p in fleet.pools if p.engine == "sglang"}
    out: list[tuple[str, int, Command]] = []
    base = ["python3", "-m", "sglang_router.launch_router", "--service-discovery", "--service-discovery-port",
            str(HTTP_PORT["sglang"])]
    if {"prefill", "decode"} <= roles:
        a = [*base, "--pd-disaggregation", "--prefill-selector", "rigopt/engine=sglang", "rigopt/role=prefill",
             "--decode-selector", "rigopt/engine=sglang", "rigopt/role=decode",
             "--host", ALL_INTERFACES, "--port", str(ROUTER_PORT)]
        out.append(("router-pd", ROUTER_PORT, Command(0, "router", list(a), tool="sglang-router")))
    if "aggregated" in roles:
        port = ROUTER_PORT + 1 if out else ROUTER_PORT
        a = [*base, "--selector", "rigopt/engine=sglang", "rigopt/role=aggregated", "--policy", "cache_aware",
             "--host", ALL_INTERFACES, "--port", str(port)]
        out.append(("router-aggregated", port, Command(0, "router", list(a), tool="sglang-router")))
    return out


def _router_manifests(routers: list[tuple[str, int, Command]]) -> str:
    """The routers as Deployments + Services, and the pod-reading permission their service discovery needs
    (a ClusterRole: without --service-discovery-namespace the router watches every namespace)."""
    labels = {"app.kubernetes.io/managed-by": "rigopt"}
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ROUTER_ACCOUNT, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": ROUTER_ACCOUNT, "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": ROUTER_ACCOUNT, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROUTER_ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": ROUTER_ACCOUNT, "namespace": "default"}]},
    ]
    for name, port, cmd in routers:
        sel = {"rigopt/router": name}
        docs.append({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {**labels, **sel}},
            "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                     "template": {"metadata": {"labels": {**labels, **sel}},
                                  "spec": {"serviceAccountName": ROUTER_ACCOUNT,
                                           "containers": [{"name": "router", "image": SGLANG_IMAGE,
                                                           "command": [str(a) for a in cmd.argv],
                                                           "ports": [{"containerPort": port}]}]}}}})
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                     "spec": {"selector": sel, "type": "ClusterIP",
                              "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]}})
    return ("# routers: sglang-router with Kubernetes service discovery (every replica pod is a worker); the "
            "ClusterRoleBinding names the 'default' namespace: edit it to where you apply this file\n"
            + yaml.safe_dump_all(docs, sort_keys=False, width=10_000))


def export_fleet(
    res: FleetResult, out_dir: str | Path | None = None, model_path: str | None = None, fleet: Fleet | None = None
) -> FleetExport:
    fleet = fleet or res.fleet
    out = FleetExport()
    if fleet is None:
        raise ExportError("no fleet to export (the search found none)")
    manifests: list[str] = []
    readme = [
        f"# Fleet for {res.model}: {res.isl} in / {res.osl} out at {res.rate_rps:g} req/s",
        f"TTFT p{res.percentile * 100:g} <= {res.ttft_s:g} s, TPOT <= {res.tpot_s * 1000:g} ms; {fleet.kind}, "
        f"{fleet.gpus} GPUs",
        "",
    ]
    for k, pool in enumerate(fleet.pools):
        plan = pool_plan(res, pool)
        r = export_plan(plan, pool.engine, None, model_path, host=ALL_INTERFACES)  # its router reaches it
        extra, env = pd_args(pool.engine, pool.role)
        name = pool_name(k, pool)
        cmds = []
        for c in r.commands:
            argv = list(c.argv) + (extra if c.role == "head" or pool.engine == "vllm" else [])
            cmds.append(Command(c.node, c.role, argv, {**c.env, **env}, tool=c.tool))
        out.commands += cmds
        out.warnings += [f"{name}: {w}" for w in r.warnings]
        for c in cmds:
            out.files.append(
                ExportFile(
                    f"{name}/launch-node{c.node}.sh",
                    "#!/usr/bin/env bash\nset -euo pipefail\n"
                    f"# {pool.role} replica ({pool.replicas} of them), node {c.node} ({c.role})\n" + c.shell() + "\n",
                    True,
                )
            )
        explain = r.file("EXPLAIN.md").content if any(f.name == "EXPLAIN.md" for f in r.files) else ""
        out.files.append(ExportFile(f"{name}/EXPLAIN.md", explain))
        out.files.append(ExportFile(f"{name}/plan.json", plan.model_dump_json(indent=2) + "\n"))
        if pool.nodes_per_replica == 1:
            manifests.append(_deployment(name, pool, cmds[0], VLLM_IMAGE if pool.engine == "vllm" else SGLANG_IMAGE))
        elif any(f.name == "lws.yaml" for f in r.files):
            docs = list(yaml.safe_load_all(r.file("lws.yaml").content))
            docs[0]["spec"]["replicas"] = pool.replicas
            docs[0]["metadata"]["name"] = docs[1]["metadata"]["name"] = name
            docs[1]["spec"]["selector"]["leaderworkerset.sigs.k8s.io/name"] = name
            if extra:
                out.warnings.append(
                    f"{name}: the LeaderWorkerSet's Ray serve command lacks the PD flags; "
                    "use the launch scripts for disaggregated multi-node pools"
                )
            manifests.append(
                f"# {pool.role} pool: {pool.replicas} multi-node replicas\n"
                + yaml.safe_dump_all(docs, sort_keys=False, width=10_000)
            )
        readme.append(
            f"- {name}: {pool.replicas} x {pool.nodes_per_replica}x{pool.gpus_per_node} {pool.accelerator} "
            f"({pool.offer}), {pool.engine} {pool.layout}, {pool.rate_per_replica_rps:.3g} req/s each "
            f"(capacity {pool.capacity_rps:.3g}); router weight {pool.capacity_rps:.4g}"
        )
    out.router = router_commands(fleet)
    if out.router:
        names = [n for c in out.router for n in c.env_names]
        bg = [c.shell() + " &" for c in out.router[:-1]]  # every route's router, the last one in the foreground
        out.files.append(
            ExportFile(
                "router.sh",
                "#!/usr/bin/env bash\nset -euo pipefail\n"
                "# POOL<k>_R<i>_IP: the address of replica i of pool k (in Kubernetes: its pod IP, from: kubectl get "
                "pods -l rigopt/pool=<pool name> -o wide); every replica is a worker of its router\n"
                + "".join(f': "${{{n}:?set {n}}}"\n' for n in names)
                + "\n".join([*bg, out.router[-1].shell()])
                + "\n",
                True,
            )
        )
    rs = routes(fleet)
    if len(rs) > 1:
        total = sum(w for *_, w in rs)
        how = ("the HTTPRoute rigopt-fleet in k8s.yaml does it in Kubernetes" if split_route(fleet) is not None
               else "e.g. weighted upstreams of your load balancer")
        readme.append(f"\nRoutes into the fleet: split traffic in proportion to the router weights ({how}):")
        for name, pools, w in rs:
            readme.append(f"- {name}: pools {', '.join(f'pool{k}' for k in pools)}; router weight {w:.4g} "
                          f"({w / total:.0%} of requests)")
    kinds = {p.engine for p in fleet.pools}
    if "vllm" in kinds and any(p.role != "aggregated" for p in fleet.pools):
        readme.append(
            "\nvLLM PD: run router.sh with toy_proxy_server.py from the vLLM 0.33.0 source tree "
            "(tests/v1/kv_connector/nixl_integration/); NIXL needs `pip install nixl` in the image."
        )
    k8s_routers = k8s_router_commands(fleet)
    if k8s_routers:
        out.k8s_routers = [c for _, _, c in k8s_routers]
        manifests.append(_router_manifests(k8s_routers))
    split = split_route(fleet)
    if split is not None:
        manifests.append(f"# the split between the fleet's routes by router weight; attach it to your Gateway "
                         f"(parentRefs: {GATEWAY})\n" + yaml.safe_dump(split, sort_keys=False, width=10_000))
    out.files.append(ExportFile("k8s.yaml", "---\n".join(manifests)))
    out.files.append(ExportFile("README.md", "\n".join(readme) + "\n"))
    out.files.append(ExportFile("fleet.json", res.model_dump_json(indent=2) + "\n"))
    if out_dir is not None:
        d = prepare_out_dir(out_dir)
        for f in out.files:
            if any(safe_component(part) != part for part in f.name.split("/")):
                raise ExportError(f"refusing to write {clip_for_message(f.name)}: not a plain file name")
            p = under(d, d / f.name)
            prepare_out_dir(p.parent)
            write_file(p, f.content, "--out")
            if f.executable:
                try:
                    p.chmod(0o755)
                except OSError as e:
                    raise InputError(f"{clip_for_message(str(p))}: cannot make executable ({e.strerror})") from None
        out.out_dir = str(d)
    return out
