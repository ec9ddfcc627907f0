"""SGLang 0.5.23 launch commands (sgl-project/sglang v0.5.23 python/sglang/srt/server_args.py), with KTransformers
`--kt-*` flags for CPU-expert plans (kvcache-ai/ktransformers kt-kernel/README.md at 95009ea6)."""

from __future__ import annotations

from optimizer.catalog.ktransformers import load_kt_matrix
from optimizer.estimate.memory import default_max_num_batched_tokens
from optimizer.export.common import (
    HTTP_PORT,
    LOCAL_BIND,
    MAX_SAFE_FRACTION,
    SGLANG_DIST_PORT,
    Arg,
    Command,
    ExportError,
    ModelFacts,
    Var,
    ceil_to,
    floor_to,
    online_quantization,
)
from optimizer.solver import support
from optimizer.solver.plan import Plan
from optimizer.units import GiB

KV_DTYPE = {"fp8": "fp8_e4m3", "fp8_e4m3": "fp8_e4m3", "fp8_e5m2": "fp8_e5m2", "bf16": "bf16", "auto": "auto",
            "fp16": "auto", "f16": "auto"}


def sglang_reserve(plan: Plan, tp_total: int) -> float:
    """SGLang's activation/graph reserve (sglang 0.5.23 srt/arg_groups/memory_hook.py), as
    optimizer/estimate/memory.py models it."""
    from optimizer.estimate import factors as F
    cap = plan.memory.capacity_bytes
    chunk = default_max_num_batched_tokens("sglang", cap)
    floor = F.SGLANG_RESERVE_MIN_BYTES.value if cap > 60 * GiB else 0.0
    return max(floor, 512 * 2**20 + 1.5 * max(chunk, 2048) * 2**20 + 2**30 * tp_total * plan.parallel.pp / 8)


def mem_fraction_static(plan: Plan, tp_total: int | None = None) -> float:
    """SGLang's fraction of the free memory before load that may hold weights + KV (sglang 0.5.23
    python/sglang/srt/mem_cache/kv_cache_configurator.py _profile_available_bytes).

    The plan models SGLang as: weights + KV within total memory less the activation/graph reserve
    (`runtime_bytes`). So the fraction is (capacity - reserve) / capacity, floored; it must still contain the
    plan's weights + KV."""
    m = plan.memory
    reserve = m.runtime_bytes if plan.engine == "sglang" else sglang_reserve(plan, tp_total or plan.parallel.tp)
    need = (m.weights_bytes + m.kv_bytes) / m.capacity_bytes
    top = (m.capacity_bytes - reserve) / m.capacity_bytes
    if need > top + 1e-9:
        raise ExportError(f"plan does not fit SGLang's accounting: weights + KV {need:.3f} of the device "
                          f"> {top:.3f} left after the {reserve / GiB:.2f} GiB reserve")
    f = max(floor_to(top, 3), ceil_to(need, 3))
    if f > MAX_SAFE_FRACTION:
        raise ExportError(f"plan needs mem_fraction_static {f} > {MAX_SAFE_FRACTION}")
    return f


def kt_method(facts: ModelFacts, plan: Plan) -> str:
    """The --kt-method for the plan's routed experts on its node's host CPU: the support rule's own choice
    (optimizer/solver/support.py kt_method over hardware/ktransformers.yaml; AMX methods only on AMX CPUs)."""
    from optimizer.catalog.hardware import load_hardware
    from optimizer.estimate.schemes import get_scheme
    hw = load_hardware()
    host = hw.hosts[hw.nodes[plan.hardware.node].host]
    method, why = support.kt_method(facts.spec, support.expert_formats(get_scheme(plan.quant, facts.resolved.storage)),
                                    host.isa)
    if method is None:
        raise ExportError(why)
    return method


def kt_args(facts: ModelFacts, plan: Plan, model: Arg, warnings: list[str], derived: dict,
            gpu_experts: int | None = None) -> list[Arg]:
    from optimizer.catalog.hardware import load_hardware
    hw = load_hardware()
    node = hw.nodes[plan.hardware.node]
    host = hw.hosts[node.host]
    L = len(facts.moe_layers)
    x = plan.offload.expert_layers_offloaded
    per_layer = (facts.n_experts * (L - x)) // L if L else 0
    if gpu_experts is not None:  # a placement's own choice (rigopt place --loads)
        per_layer = gpu_experts
    derived["kt_num_gpu_experts"] = per_layer
    method = kt_method(facts, plan)
    derived["kt_method"] = method
    kt = load_kt_matrix()
    if kt.method(method).converted:
        warnings.append(f"--kt-method {method} reads experts converted by kt-kernel's converter "
                        "(kt-kernel/scripts/convert_cpu_weights.py); point --kt-weight-path at the converted folder")
    row = support.kt_row(facts.spec)
    if row is not None and row.sglang_build:
        warnings.append(f"{row.name} with KTransformers needs {row.sglang_build} ({kt.cite(row.source)})")
    warnings.append(f"KTransformers keeps {per_layer} experts per MoE layer on GPU (= {L - x} of {L} layers' worth, "
                    "the plan's GPU expert bytes) instead of whole layers; needs the kt-kernel package")
    # the expert weights are read from a local folder: a Hub id (no --model-path) cannot serve, so the script asks
    # for $KT_WEIGHT_PATH (the downloaded or kt-kernel-converted checkpoint folder)
    weights: Arg = Var("${KT_WEIGHT_PATH}") if model == facts.hf_id else model
    if weights is not model:
        warnings.append("--kt-weight-path needs a local folder: set KT_WEIGHT_PATH (the downloaded checkpoint, or "
                        "kt-kernel's converted one for AMX methods) or pass --model-path /path")
    return ["--kt-weight-path", weights, "--kt-method", method,
            "--kt-cpuinfer", str(host.cores * node.sockets), "--kt-threadpool-count", str(node.sockets),
            "--kt-num-gpu-experts", str(per_layer), "--disable-shared-experts-fusion"]


def commands(facts: ModelFacts, plan: Plan, model: Arg, warnings: list[str], derived: dict,
             expert_location: Arg | None = None, *, redundant_experts: int | None = None,
             kt_gpu_experts: int | None = None, host: str = LOCAL_BIND) -> list[Command]:
    p, h = plan.parallel, plan.hardware
    a: list[Arg] = ["python3", "-m", "sglang.launch_server", "--model-path", model]
    if facts.is_v4 or facts.family == "deepseek_v32":
        a.append("--trust-remote-code")
    moe = bool(facts.n_experts)
    if moe:
        # one engine: TP over every GPU, attention DP = the plan's DP, MoE over EP (sglang's
        # validation_hook.py rejects multi-node DP)
        a += ["--tp-size", str(p.tp * p.dp)]
        if p.dp > 1:
            a += ["--attn-dp-size", str(p.dp)]
        if p.ep and p.ep_size > 1:
            a += ["--ep-size", str(p.ep_size)]
            a += ["--moe-a2a-backend", "deepep" if h.n_nodes > 1 else "none"]
    else:
        a += ["--tp-size", str(p.tp)]
        if p.dp > 1:
            if h.n_nodes > 1:
                raise ExportError("SGLang cannot run data-parallel replicas across nodes (its validation_hook.py "
                                  "rejects dp_size > 1 with nnodes != 1)")
            a += ["--dp-size", str(p.dp)]
    if p.pp > 1:
        a += ["--pp-size", str(p.pp)]
    q = online_quantization(facts, plan)
    if q:
        a += ["--quantization", q]
    try:
        kvd = "fp8_e4m3" if facts.is_v4 else KV_DTYPE[plan.kv_dtype]
    except KeyError:
        raise ExportError(f"SGLang has no KV dtype for '{plan.kv_dtype}'") from None
    a += ["--kv-cache-dtype", kvd, "--context-length", str(int(plan.context))]
    mfs = mem_fraction_static(plan, p.tp * p.dp if moe else p.tp)
    derived["mem_fraction_static"] = mfs
    st = plan.settings  # the values the plan's figures assume (older plans: the engine defaults)
    chunk = st.max_num_batched_tokens if st else default_max_num_batched_tokens("sglang", plan.memory.capacity_bytes)
    running = st.max_num_seqs if st else plan.concurrency  # the flag value (SGLang splits it over attn DP)
    derived["chunked_prefill_size"] = chunk
    a += ["--mem-fraction-static", f"{mfs:.3f}".rstrip("0").rstrip("."),
          "--max-running-requests", str(running), "--chunked-prefill-size", str(chunk)]
    sd = plan.spec_decode
    if sd is not None:
        if sd.method == "eagle3":
            if not sd.draft_model:
                raise ExportError("an EAGLE-3 plan needs its draft model (spec_decode.draft_model)")
            a += ["--speculative-algorithm", "EAGLE3", "--speculative-draft-model-path", sd.draft_model]
        else:  # DeepSeek MTP / NextN layers run as SGLang's EAGLE drafter (sglang docs deepseek-v4.jsx at 01c5c03f)
            a += ["--speculative-algorithm", "EAGLE"]
        a += ["--speculative-num-steps", str(sd.num_tokens), "--speculative-eagle-topk", "1",
              "--speculative-num-draft-tokens", str(sd.num_tokens + 1)]
    if expert_location:
        if not moe or not (p.ep and p.ep_size > 1):
            raise ExportError("--init-expert-location needs an expert-parallel MoE plan")
        if redundant_experts is not None:
            a += ["--ep-num-redundant-experts", str(redundant_experts)]
        a += ["--init-expert-location", expert_location]
    if plan.offload.mode == "cpu" and plan.offload.expert_layers_offloaded:
        a += kt_args(facts, plan, model, warnings, derived, kt_gpu_experts)
    elif plan.offload.mode == "stream" and plan.offload.expert_layers_offloaded:
        raise ExportError("SGLang has no streamed (UVA) expert offload; export this plan with vllm")
    if facts.is_v4:
        a += ["--reasoning-parser", "deepseek-v4", "--tool-call-parser", "deepseekv4"]
    a += ["--host", host, "--port", str(HTTP_PORT["sglang"])]
    if h.n_nodes == 1:
        return [Command(0, "head", a, tool="sglang")]
    env = {"GLOO_SOCKET_IFNAME": Var("${IFACE_NAME}"), "NCCL_SOCKET_IFNAME": Var("${IFACE_NAME}")}
    return [Command(i, "worker" if i else "head",
                    a + ["--nnodes", str(h.n_nodes), "--node-rank", str(i),
                         "--dist-init-addr", Var(f"${{HEAD_IP}}:{SGLANG_DIST_PORT}")], dict(env), tool="sglang")
            for i in range(h.n_nodes)]
