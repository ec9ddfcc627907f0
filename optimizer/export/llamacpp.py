"""llama.cpp (0c1e57098) `llama-server` commands (common/arg.cpp at 0c1e57098): explicit placement, `--fit off`."""

from __future__ import annotations

from optimizer.estimate import factors as F
from optimizer.export.common import HTTP_PORT, LOCAL_BIND, RPC_PORT, Arg, Command, ExportError, ModelFacts, Var
from optimizer.solver.plan import Plan

KV_TYPES = {"f16": "f16", "fp16": "f16", "bf16": "bf16", "f32": "f32", "q8_0": "q8_0", "q4_0": "q4_0",
            "q4_1": "q4_1", "iq4_nl": "iq4_nl", "q5_0": "q5_0", "q5_1": "q5_1"}
EXPERT_TENSORS = r"ffn_(up|down|gate|gate_up)_(ch|)exps"   # as llama.cpp's own --n-cpu-moe (common/arg.cpp)


def offload_regex(layers: list[int]) -> str:
    """`-ot` pattern (std::regex_search over GGUF tensor names) for exactly these layers' routed experts."""
    if not layers:
        raise ValueError("no layers to offload")
    alt = "|".join(str(i) for i in sorted(set(layers)))
    return rf"blk\.({alt})\.{EXPERT_TENSORS}"


def placement_args(plan: Plan) -> list[Arg]:
    # experts in host DRAM and experts paged from NVMe are both CPU-buffer tensors to llama.cpp
    layers = sorted(set(plan.offload.offloaded_layers) | set(plan.offload.nvme_layers))
    if not layers:
        return []
    if plan.offload.mode != "cpu":
        raise ExportError(f"llama.cpp computes offloaded experts on the CPU; offload mode '{plan.offload.mode}' "
                          "cannot be expressed")
    if layers == list(range(len(layers))):
        return ["--n-cpu-moe", str(len(layers))]
    return ["-ot", offload_regex(layers) + "=CPU"]


def server_basics(plan: Plan, kv_types: dict[str, str], engine: str, derived: dict) -> tuple[str, int, int, int]:
    """What every llama-server launch (llama.cpp and its forks) derives from the plan: the -ctk/-ctv type, the
    threads (the node's cores), the slots (-np) and the total context (-c, split over the slots)."""
    from optimizer.catalog.hardware import load_hardware
    try:
        kv = kv_types[plan.kv_dtype]
    except KeyError:
        raise ExportError(f"{engine} has no KV cache type for '{plan.kv_dtype}'") from None
    hw = load_hardware()
    node = hw.nodes[plan.hardware.node]
    threads = hw.hosts[node.host].cores * node.sockets
    slots = plan.concurrency
    ctx = int(plan.context) * slots
    derived["ctx_total"] = ctx
    return kv, threads, slots, ctx


def commands(_facts: ModelFacts, plan: Plan, model: Arg, warnings: list[str], derived: dict) -> list[Command]:
    p, h = plan.parallel, plan.hardware
    if p.tp != 1 or p.dp != 1:
        raise ExportError(f"llama.cpp splits layers only (no TP/DP): plan has TP{p.tp} DP{p.dp}")
    kv, threads, slots, ctx = server_basics(plan, KV_TYPES, "llama.cpp", derived)
    a: list[Arg] = ["llama-server", "-m", model, "-c", str(ctx), "-np", str(slots), "-ngl", "all"]
    a += placement_args(plan)
    devices = h.n_nodes * h.gpus_per_node
    if devices > 1:
        a += ["--split-mode", "layer", "--tensor-split", ",".join(["1"] * devices)]
    # MLA / DeepSeek-V4 need K and V cache types equal (src/llama-context.cpp: "model does not support
    # different K and V cache types"); always emit both, equal
    a += ["-fa", "on", "-ctk", kv, "-ctv", kv, "--fit", "off"]
    if plan.offload.nvme_layers:
        # part of the experts does not fit in DRAM: keep the GGUF memory-mapped so the OS pages them from NVMe
        a += ["--load-mode", "mmap"]
        warnings.append(f"{len(plan.offload.nvme_layers)} expert layers are read from NVMe through mmap: keep the "
                        "GGUF on a local NVMe drive")
    elif plan.offload.offloaded_layers:
        a += ["--load-mode", "none"]
    ub = plan.settings.max_num_batched_tokens if plan.settings else int(F.LLAMACPP_UBATCH.value)
    a += ["-t", str(threads), "-b", str(max(2048, ub)), "-ub", str(ub)]
    out: list[Command] = []
    if h.n_nodes > 1:
        servers = ",".join(f"${{NODE{i}_IP}}:{RPC_PORT + g}" for i in range(1, h.n_nodes)
                           for g in range(h.gpus_per_node))
        a += ["--rpc", Var(servers)]
        warnings.append("ggml-rpc-server is insecure by design: bind it to a private network only "
                        "(tools/rpc/README.md)")
        for i in range(1, h.n_nodes):
            for g in range(h.gpus_per_node):
                out.append(Command(i, "rpc", ["ggml-rpc-server", "-H", Var(f"${{NODE{i}_IP}}"),
                                              "-p", str(RPC_PORT + g), "-d", f"CUDA{g}", "-c"],
                                   tool="ggml-rpc-server"))
    a += ["--host", LOCAL_BIND, "--port", str(HTTP_PORT["llamacpp"])]
    return [Command(0, "head", a, tool="llamacpp"), *out]
