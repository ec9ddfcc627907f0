"""vLLM 0.33.0 launch commands (vllm/engine/arg_utils.py, docs/serving/): per-node `vllm serve`, the Ray variant,
LWS manifest input."""

from __future__ import annotations

import json

from optimizer.engines import VLLM_VERSION
from optimizer.estimate.memory import default_max_num_batched_tokens
from optimizer.export.common import (
    HTTP_PORT,
    LOCAL_BIND,
    MAX_SAFE_FRACTION,
    VLLM_DP_RPC_PORT,
    Arg,
    Command,
    ExportError,
    ModelFacts,
    Var,
    ceil_to,
    on_amd,
    online_quantization,
    per_replica,
)
from optimizer.solver.plan import Plan
from optimizer.units import GiB

KV_DTYPE = {"fp8": "fp8", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2", "bf16": "bfloat16",
            "fp16": "float16", "f16": "float16", "auto": "auto"}


def gpu_memory_utilization(plan: Plan) -> float:
    """The plan's own fraction (budget / total), rounded to 3 decimals but never below what the plan's
    weights + KV + runtime need: the emitted fraction always contains the plan's usage."""
    m = plan.memory
    used = m.weights_bytes + m.kv_bytes + m.runtime_bytes
    if used > m.budget_bytes * (1 + 1e-9):
        raise ExportError(f"plan does not fit its vLLM budget ({used / GiB:.2f} GiB used > "
                          f"{m.budget_bytes / GiB:.2f} GiB)")
    g = round(m.budget_bytes / m.capacity_bytes, 3)
    if g * m.capacity_bytes < used:
        g = ceil_to(used / m.capacity_bytes, 3)
    if g > MAX_SAFE_FRACTION:
        raise ExportError(f"plan needs gpu_memory_utilization {g} > {MAX_SAFE_FRACTION}: no room for the CUDA context")
    return g


def kv_cache_dtype(facts: ModelFacts, plan: Plan) -> str:
    if facts.is_v4:
        return "fp8"   # V4 accepts only FP8 layouts; fp8 = fp8_ds_mla for V4 (vllm/config/cache.py, v0.33.0)
    try:
        return KV_DTYPE[plan.kv_dtype]
    except KeyError:
        raise ExportError(f"vLLM has no KV dtype for '{plan.kv_dtype}'") from None


def eplb_config(facts: ModelFacts, plan: Plan, redundant: int | None) -> str | None:
    """None without a placement; a placement with 0 redundant experts still enables EPLB (vLLM rebalances the
    experts online; EPLBConfig.num_redundant_experts default 0), as `rigopt place` prints it."""
    if redundant is None:
        return None
    ep = plan.parallel.ep_size
    if not plan.parallel.ep or ep <= 1:
        raise ExportError("redundant experts need expert parallelism (EP > 1)")
    if (facts.n_experts + redundant) % ep:
        raise ExportError(f"(experts {facts.n_experts} + redundant {redundant}) must divide by EP size {ep}")
    return json.dumps({"num_redundant_experts": redundant, "window_size": 1000, "step_interval": 3000},
                      separators=(",", ":"))


def common_args(facts: ModelFacts, plan: Plan, warnings: list[str], redundant: int | None,
                derived: dict) -> list[Arg]:
    p = plan.parallel
    a: list[Arg] = []
    if facts.is_v4 or facts.family in ("deepseek_v32",):
        a.append("--trust-remote-code")
    a += ["--tensor-parallel-size", str(p.tp)]
    if p.pp > 1:
        a += ["--pipeline-parallel-size", str(p.pp)]
    if p.ep and p.ep_size > 1:
        a.append("--enable-expert-parallel")
        backend = "deepep_low_latency" if plan.hardware.n_nodes > 1 else "allgather_reducescatter"
        a += ["--all2all-backend", backend]
        if backend.startswith("deepep"):
            warnings.append("--all2all-backend deepep_low_latency needs DeepEP in the image; "
                            "use allgather_reducescatter if it is missing")
        cfg = eplb_config(facts, plan, redundant)
        if cfg:
            a += ["--enable-eplb", "--eplb-config", cfg]
    q = online_quantization(facts, plan)
    if q:
        a += ["--quantization", q]
    a += ["--kv-cache-dtype", kv_cache_dtype(facts, plan)]
    if facts.is_v4:
        a += ["--block-size", "256"]
    a += ["--max-model-len", str(int(plan.context))]
    gmu = gpu_memory_utilization(plan)
    derived["gpu_memory_utilization"] = gmu
    a += ["--gpu-memory-utilization", f"{gmu:.3f}".rstrip("0").rstrip(".")]
    st = plan.settings  # the values the plan's figures assume (older plans: the engine defaults)
    mnbt = st.max_num_batched_tokens if st else default_max_num_batched_tokens("vllm", plan.memory.capacity_bytes)
    seqs = st.max_num_seqs if st else per_replica(plan)
    derived["max_num_batched_tokens"] = mnbt
    a += ["--max-num-seqs", str(seqs), "--max-num-batched-tokens", str(mnbt)]
    sd = plan.spec_decode
    if sd is not None:
        spec_cfg: dict[str, object] = {"method": sd.method, "num_speculative_tokens": sd.num_tokens}
        if sd.method == "eagle3":
            if not sd.draft_model:
                raise ExportError("an EAGLE-3 plan needs its draft model (spec_decode.draft_model)")
            spec_cfg["model"] = sd.draft_model
        a += ["--speculative-config", json.dumps(spec_cfg, separators=(",", ":"))]
    if plan.offload.mode == "stream" and plan.offload.expert_layers_offloaded:
        gpus = plan.hardware.gpus_per_node
        gb = ceil_to(plan.offload.host_bytes / gpus / GiB, 1)
        derived["cpu_offload_gb"] = gb
        a += ["--cpu-offload-gb", f"{gb:g}", "--cpu-offload-params", "experts"]
    elif plan.offload.mode == "cpu" and plan.offload.expert_layers_offloaded:
        raise ExportError("vLLM cannot compute experts on the CPU (offload mode 'cpu'); export with sglang or llamacpp")
    if facts.is_v4:
        a += ["--tokenizer-mode", "deepseek_v4", "--reasoning-parser", "deepseek_v4",
              "--tool-call-parser", "deepseek_v4", "--enable-auto-tool-choice"]
    return a


# DeepSeek-V4 on ROCm runs its sparse attention and MXFP4 experts through AITER: vLLM's V4 recipe sets this for
# every AMD GPU (vllm-project/recipes models/deepseek-ai/DeepSeek-V4-Pro.yaml at commit
# 0159550e68b545023a2d1c1bf59fc5088f9d6e89, hardware_overrides.amd.extra_env; its MI355X guide: "validated with
# ROCm + AITER (VLLM_ROCM_USE_AITER=1)"; the MI300X V4-Flash runs of SemiAnalysisAI/InferenceX PR #3246 set it too).
ROCM_V4_ENV = {"VLLM_ROCM_USE_AITER": "1"}


def rocm_env(facts: ModelFacts, plan: Plan) -> dict[str, Arg]:
    """Environment a ROCm (AMD) vLLM node needs for this model (only what a cited source requires)."""
    return dict(ROCM_V4_ENV) if facts.is_v4 and on_amd(plan) else {}


def commands(facts: ModelFacts, plan: Plan, model: Arg, warnings: list[str], redundant: int | None,
             derived: dict, host: str = LOCAL_BIND) -> list[Command]:
    p, h = plan.parallel, plan.hardware
    base = common_args(facts, plan, warnings, redundant, derived)
    serve: list[Arg] = ["vllm", "serve", model]
    http: list[Arg] = ["--host", host, "--port", str(HTTP_PORT["vllm"])]
    rocm = rocm_env(facts, plan)
    if h.n_nodes == 1:
        if p.dp > 1:
            base = base + ["--data-parallel-size", str(p.dp)]
        return [Command(0, "head", serve + base + http, dict(rocm), tool="vllm")]
    env: dict[str, Arg] = {"GLOO_SOCKET_IFNAME": Var("${IFACE_NAME}"), "NCCL_SOCKET_IFNAME": Var("${IFACE_NAME}"),
                           **rocm}
    head_ip = Var("${HEAD_IP}")
    out = []
    if p.dp > 1 and p.pp == 1 and h.gpus_per_node % p.tp == 0:
        # explicit DP, mp backend (vLLM data_parallel_deployment.md): one `vllm serve` per node, HTTP only on node 0
        local = h.gpus_per_node // p.tp
        for i in range(h.n_nodes):
            a = serve + (["--headless"] if i else []) + base + [
                "--data-parallel-size", str(p.dp), "--data-parallel-size-local", str(local),
                "--data-parallel-address", head_ip, "--data-parallel-rpc-port", str(VLLM_DP_RPC_PORT)]
            if i:
                a += ["--data-parallel-start-rank", str(i * local)]
            else:
                a += http
            out.append(Command(i, "worker" if i else "head", a, dict(env), tool="vllm"))
        return out
    # TP/PP across nodes: mp executor with --nnodes (vllm-project/vllm PR #23691)
    for i in range(h.n_nodes):
        a = serve + (["--headless"] if i else []) + base
        if p.dp > 1:
            a += ["--data-parallel-size", str(p.dp)]
        a += ["--nnodes", str(h.n_nodes), "--node-rank", str(i), "--master-addr", head_ip]
        if not i:
            a += http
        out.append(Command(i, "worker" if i else "head", a, dict(env), tool="vllm"))
    return out


def ray_command(facts: ModelFacts, plan: Plan, model: Arg, _warnings: list[str], redundant: int | None,
                host: str = LOCAL_BIND) -> Command:
    """Single `vllm serve` on the Ray head (docs/serving/parallelism_scaling.md); the cluster is started separately.
    `host`: the address it listens on (ALL_INTERFACES in a Kubernetes pod, k8s.lws_manifest)."""
    p = plan.parallel
    a: list[Arg] = ["vllm", "serve", model] + common_args(facts, plan, [], redundant, {})
    if p.dp > 1:
        a += ["--data-parallel-size", str(p.dp), "--data-parallel-backend", "ray"]
    else:
        a += ["--distributed-executor-backend", "ray"]
    a += ["--host", host, "--port", str(HTTP_PORT["vllm"])]
    env: dict[str, Arg] = dict(rocm_env(facts, plan))
    if p.dp > 1 and p.tp > plan.hardware.gpus_per_node:
        env["VLLM_RAY_DP_PACK_STRATEGY"] = "span"
    return Command(0, "head", a, env, tool="vllm")


def ray_script(cmd: Command, plan: Plan) -> str:
    h = plan.hardware
    return "\n".join([
        "#!/usr/bin/env bash",
        "set -euo pipefail",
        f"# Ray variant (vLLM docs/serving/parallelism_scaling.md) for vllm {VLLM_VERSION} (pinned). Usage:",
        "#   on the head:        HEAD_IP=... IFACE_NAME=... ./ray.sh head",
        f"#   on each of the {h.n_nodes - 1} other nodes: HEAD_IP=... IFACE_NAME=... ./ray.sh worker",
        "#   then on the head:   HEAD_IP=... IFACE_NAME=... ./ray.sh serve",
        ': "${HEAD_IP:?set HEAD_IP}"; : "${IFACE_NAME:?set IFACE_NAME}"',
        'export GLOO_SOCKET_IFNAME="${IFACE_NAME}" NCCL_SOCKET_IFNAME="${IFACE_NAME}"',
        'case "${1:-}" in',
        f'  head)   exec ray start --head --port=6379 --num-gpus={h.gpus_per_node} --node-ip-address="${{HEAD_IP}}" '
        '--block ;;',
        f'  worker) exec ray start --address="${{HEAD_IP}}:6379" --num-gpus={h.gpus_per_node} --block ;;',
        "  serve)",
        *[f"    export {line[len('export '):]}" for line in cmd.env_lines()],
        "    exec " + cmd.argv_shell().replace("\n", "\n    ") + " ;;",
        '  *) echo "usage: $0 head|worker|serve" >&2; exit 2 ;;',
        "esac", ""])
