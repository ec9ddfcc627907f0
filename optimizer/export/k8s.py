"""Kubernetes LeaderWorkerSet manifest for multi-node vLLM plans (vLLM docs/deployment/frameworks/lws.md at
051f9b87; Ray-based)."""

from __future__ import annotations

import copy
import re

import yaml

from optimizer.export.common import ENGINE_VERSIONS, HTTP_PORT, Command, quote
from optimizer.solver.plan import Plan

IMAGE = f"vllm/vllm-openai:v{ENGINE_VERSIONS['vllm']}"
RAY_SCRIPT = "/vllm-workspace/examples/online_serving/multi-node-serving.sh"


def _name(plan: Plan) -> str:
    n = re.sub(r"[^a-z0-9-]+", "-", plan.model.lower()).strip("-")[:40].strip("-")
    return n or "model"


def lws_manifest(plan: Plan, serve: Command) -> str:
    """`serve` is the single Ray-backed `vllm serve` (ray_command, listening on ALL_INTERFACES: the leader Service
    reaches it on the pod's address); the leader starts Ray, then serves."""
    h = plan.hardware
    name = f"rigopt-{_name(plan)}"
    # `$(NAME)` is expanded by Kubernetes itself inside command strings, shell quotes or not: `$$(` keeps it literal
    serve_line = " ".join(quote(a) for a in serve.argv).replace("$(", "$$(")
    env_line = "".join(f"export {k}={quote(v)}; " for k, v in serve.env.items()).replace("$(", "$$(")
    leader = f"bash {RAY_SCRIPT} leader --ray_cluster_size=$(LWS_GROUP_SIZE); {env_line}{serve_line}"
    worker = f"bash {RAY_SCRIPT} worker --ray_address=$(LWS_LEADER_ADDRESS)"
    resources = {"limits": {"nvidia.com/gpu": str(h.gpus_per_node)}}
    shm = [{"mountPath": "/dev/shm", "name": "dshm"}]
    vols = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}}]

    def container(role: str, cmd: str, ports: bool) -> dict:
        c = {"name": f"vllm-{role}", "image": IMAGE, "command": ["sh", "-c", cmd],
             "resources": copy.deepcopy(resources), "volumeMounts": copy.deepcopy(shm),
             "env": [{"name": "HF_HOME", "value": "/root/.cache/huggingface"}]}
        if ports:
            c["ports"] = [{"containerPort": HTTP_PORT["vllm"]}]
            c["readinessProbe"] = {"tcpSocket": {"port": HTTP_PORT["vllm"]}, "initialDelaySeconds": 60,
                                   "periodSeconds": 10}
        return c

    lws = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
           "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "rigopt"}},
           "spec": {"replicas": 1, "leaderWorkerTemplate": {
               "size": h.n_nodes, "restartPolicy": "RecreateGroupOnPodRestart",
               "leaderTemplate": {"metadata": {"labels": {"role": "leader"}},
                                  "spec": {"containers": [container("leader", leader, True)],
                                           "volumes": copy.deepcopy(vols)}},
               "workerTemplate": {"spec": {"containers": [container("worker", worker, False)], "volumes": vols}}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"{name}-leader"},
           "spec": {"ports": [{"name": "http", "port": HTTP_PORT["vllm"], "protocol": "TCP",
                               "targetPort": HTTP_PORT["vllm"]}],
                    "selector": {"leaderworkerset.sigs.k8s.io/name": name, "role": "leader"},
                    "type": "ClusterIP"}}
    head = (f"# LeaderWorkerSet {name}: {h.n_nodes} pods x {h.gpus_per_node} {h.accelerator}, "
            f"vLLM {ENGINE_VERSIONS['vllm']} (pinned image {IMAGE}), Ray-based as in vLLM "
            "docs/deployment/frameworks/lws.md\n")
    return head + yaml.safe_dump_all([lws, svc], sort_keys=False, width=10_000)
