"""Launch plans for a fleet (`rigopt fleet --out DIR`): every pool as the pinned engine's commands, disaggregated
pools with their KV-transfer flags, a router command, and Kubernetes manifests.

- Each pool's replica is a `rigopt.plan/1` plan (built from `evaluate()` at the rate the router gives it) exported
  by `optimizer.export.export_plan`, so its flags are exactly the ones `rigopt export` writes.
- vLLM 0.33.0 prefill and decode instances: `--kv-transfer-config '{"kv_connector":"NixlConnector",
  "kv_role":"kv_both"}'` (vLLM docs, NixlConnector usage guide), `VLLM_NIXL_SIDE_CHANNEL_PORT`; requests go
  through vLLM's NIXL proxy (`toy_proxy_server.py --host 0.0.0.0 ...` from the vLLM source tree, not part of
  the wheel; optimizer/engines.py VLLM_PROXY_SOURCE names the file and the commit its flags were read from).
- SGLang 0.5.23: `--disaggregation-mode prefill|decode`, `--disaggregation-transfer-backend nixl`,
  `--disaggregation-bootstrap-port` on prefill servers (engines.md §3.3); router `python3 -m
  sglang_router.launch_router --pd-disaggregation --prefill URL BOOTSTRAP_PORT --decode URL` (sglang-router
  SGLANG_ROUTER_VERSION, the router SGLang 0.5.23's own PD test fixture starts; without the port it assumes none).
- Kubernetes: a Deployment (+ Service) per pool of single-node replicas (`replicas: N`), a LeaderWorkerSet per
  pool of multi-node replicas (vLLM's Ray-based manifest with `replicas: N`).
Engine and router/proxy flags are checked against `tests/data/engine_flags/` (tests/test_fleet_export.py):
`sglang-router-<version>.txt` and `vllm-proxy-<version>.txt` are extracted from the router's wheel and the proxy's
source by `python -m optimizer.export.extract_flags routers SRC OUT`.
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
from optimizer.export.common import ENGINE_VERSIONS, HTTP_PORT, Command, ExportError, ExportFile, Var, quote
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


def router_commands(fleet: Fleet) -> list[Command]:
    pre = [k for k, p in enumerate(fleet.pools) if p.role == "prefill"]
    dec = [k for k, p in enumerate(fleet.pools) if p.role == "decode"]
    agg = [k for k, p in enumerate(fleet.pools) if p.role == "aggregated"]
    out: list[Command] = []
    if pre and dec:
        engine = fleet.pools[pre[0]].engine
        port = HTTP_PORT[engine]
        if engine == "sglang":
            a: list = ["python3", "-m", "sglang_router.launch_router", "--pd-disaggregation"]
            for k in pre:  # URL and the prefill server's bootstrap port (omitted, the router assumes none)
                a += ["--prefill", Var(f"http://${{POOL{k}_IP}}:{port}"), str(SGLANG_BOOTSTRAP_PORT)]
            for k in dec:
                a += ["--decode", Var(f"http://${{POOL{k}_IP}}:{port}")]
            a += ["--host", "0.0.0.0", "--port", str(ROUTER_PORT)]
        else:
            a = [
                "python3",
                "toy_proxy_server.py",
                "--host",
                "0.0.0.0",  # its default, 127.0.0.1, is not reachable from outside the pod
                "--port",
                str(ROUTER_PORT),
                "--prefiller-hosts",
                *[Var(f"${{POOL{k}_IP}}") for k in pre],
                "--prefiller-ports",
                *[str(port)] * len(pre),
                "--decoder-hosts",
                *[Var(f"${{POOL{k}_IP}}") for k in dec],
                "--decoder-ports",
                *[str(port)] * len(dec),
            ]
        out.append(Command(0, "router", a, tool="sglang-router" if engine == "sglang" else "vllm-proxy"))
    if len(agg) > 1 or (agg and fleet.pools[agg[0]].replicas > 1):
        if fleet.pools[agg[0]].engine == "sglang":
            urls = [Var(f"http://${{POOL{k}_IP}}:{HTTP_PORT['sglang']}") for k in agg]
            out.append(
                Command(
                    0,
                    "router",
                    [
                        "python3",
                        "-m",
                        "sglang_router.launch_router",
                        "--worker-urls",
                        *urls,
                        "--host",
                        "0.0.0.0",
                        "--port",
                        str(ROUTER_PORT),
                    ],
                    tool="sglang-router",
                )
            )
    return out


def _deployment(name: str, pool: Pool, cmd: Command, image: str) -> str:
    port = HTTP_PORT[pool.engine]
    shell = "".join(f"export {k}={quote(v)}; " for k, v in cmd.env.items()) + " ".join(quote(a) for a in cmd.argv)
    labels = {"app.kubernetes.io/managed-by": "rigopt", "rigopt/pool": name, "rigopt/role": pool.role}
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": pool.replicas,
            "selector": {"matchLabels": {"rigopt/pool": name}},
            "template": {
                "metadata": {"labels": dict(labels)},
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
        r = export_plan(plan, pool.engine, None, model_path)
        extra, env = pd_args(pool.engine, pool.role)
        name = f"pool{k}-{pool.role}-{_slug(pool.accelerator)}"
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
        out.files.append(
            ExportFile(
                "router.sh",
                "#!/usr/bin/env bash\nset -euo pipefail\n"
                "# POOL<k>_IP: an address of pool k's replicas (its Service in Kubernetes)\n"
                + "\n".join(c.shell() for c in out.router)
                + "\n",
                True,
            )
        )
    kinds = {p.engine for p in fleet.pools}
    if "vllm" in kinds and any(p.role != "aggregated" for p in fleet.pools):
        readme.append(
            "\nvLLM PD: run router.sh with toy_proxy_server.py from the vLLM 0.33.0 source tree "
            "(tests/v1/kv_connector/nixl_integration/); NIXL needs `pip install nixl` in the image."
        )
    if len({p.accelerator for p in fleet.pools if p.role == "aggregated"}) > 1:
        readme.append("\nMixed aggregated pools: route in proportion to each pool's router weight (its capacity).")
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
