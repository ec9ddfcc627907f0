"""Launch scripts for mixed-hardware plans (`optimizer/hetero`), one process over the plan's devices in stage order.

vLLM (0.33.0): `--pipeline-parallel-size k --tensor-parallel-size 1`, `VLLM_PP_LAYER_PARTITION` = the stages' layer
counts (vllm/distributed/utils.py get_pp_indices: stage i owns layers [sum(p[:i]), sum(p[:i+1]))),
`CUDA_VISIBLE_DEVICES` in stage order (PP rank i = the i-th visible GPU on one node), one `--gpu-memory-utilization`
(the 0.92 default the plan assumes, a fraction of each card's own memory).

llama.cpp (0c1e57098): one `llama-server`:

- Device order: `CUDA_VISIBLE_DEVICES` lists the stages' CUDA indices in stage order (unused cards hidden), so
  llama.cpp's CUDA<i> is the i-th stage. Cards the plan buys get the indices after the owned ones (install them
  after the owned cards, or edit the list).
- Layer ranges: `--split-mode layer --tensor-split n_0,...,n_{k-1}+1`. llama.cpp gives layer il to the first device
  whose cumulative share exceeds il / (n_layer + 1) (src/llama-model.cpp, `act_gpu_layers` = n_layer + 1 with the
  output layer last), so integer layer counts with the output counted on the last device reproduce the plan's
  ranges exactly (integer sums divided by the same total: no rounding ambiguity).
- Experts: `-ot` per device pins the routed-expert tensors of each stage's GPU-expert layers to `CUDA<i>`, and the
  DRAM/NVMe ones to `CPU` (llama.cpp computes CPU-buffer experts on the CPU); with NVMe layers the GGUF stays
  memory-mapped (`--load-mode mmap`) so the OS pages them from the drive.
"""

from __future__ import annotations

from optimizer.catalog.hardware import load_hardware
from optimizer.export.common import HTTP_PORT, Command, ExportError, script
from optimizer.export.llamacpp import KV_TYPES, offload_regex
from optimizer.hetero.inventory import Inventory, parse_inventory
from optimizer.hetero.plan import MixedPlan


def cuda_indices(plan: MixedPlan, inv: Inventory) -> list[int]:
    """Physical CUDA index of each stage's device (bought cards numbered after the owned ones)."""
    box = inv.boxes[plan.stages[0].box]
    nxt = len(box.gpus)
    out = []
    for s in plan.stages:
        if s.owned:
            out.append(next(g.cuda for g in box.gpus if g.uid == s.uid))
        else:
            out.append(nxt)
            nxt += 1
    return out


def tensor_split(plan: MixedPlan) -> list[int]:
    counts = [s.end - s.start for s in plan.stages]
    counts[-1] += 1  # the output layer goes with the last device
    return counts


def layer_of_split(split: list[float], n_layer: int) -> list[int]:
    """Which device llama.cpp gives each layer for a --tensor-split (its upper_bound rule over cumulative shares)."""
    import bisect

    total = sum(split)
    cum, acc = [], 0.0
    for x in split:
        acc += x
        cum.append(acc / total)
    act = n_layer + 1
    return [bisect.bisect_right(cum, il / act) for il in range(n_layer)]


def command(plan: MixedPlan, model_path: str = "${MODEL_PATH}") -> Command:
    inv = parse_inventory(plan.inventory)
    if len({s.box for s in plan.stages}) > 1:
        raise ExportError("mixed plans over several boxes need llama.cpp RPC servers: not exported yet")
    if plan.engine != "llamacpp":
        raise ExportError(f"mixed-hardware export is for llama.cpp; plan engine is {plan.engine}")
    try:
        kv = KV_TYPES[plan.kv_dtype]
    except KeyError:
        raise ExportError(f"llama.cpp has no KV cache type for '{plan.kv_dtype}'") from None
    box = inv.boxes[plan.stages[0].box]
    threads = box.host.cores
    from optimizer.export.common import Var

    model = Var(model_path) if model_path.startswith("${") else model_path
    ctx = plan.context * plan.concurrency
    a = [
        "llama-server",
        "-m",
        model,
        "-c",
        str(ctx),
        "-np",
        str(plan.concurrency),
        "-ngl",
        "all",
        "--split-mode",
        "layer",
        "--tensor-split",
        ",".join(str(x) for x in tensor_split(plan)),
    ]
    host_layers = []
    for i, s in enumerate(plan.stages):
        if s.gpu_expert_layers:
            a += ["-ot", offload_regex(list(s.gpu_expert_layers)) + f"=CUDA{i}"]
        host_layers += list(s.cpu_expert_layers) + list(s.nvme_expert_layers)
    if host_layers:
        a += ["-ot", offload_regex(host_layers) + "=CPU"]
    a += ["-fa", "on", "-ctk", kv, "-ctv", kv, "--fit", "off"]
    if any(s.nvme_expert_layers for s in plan.stages):
        a += ["--load-mode", "mmap"]
    elif host_layers:
        a += ["--load-mode", "none"]
    a += ["-t", str(threads), "--host", "127.0.0.1", "--port", str(HTTP_PORT["llamacpp"])]
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(c) for c in cuda_indices(plan, inv))}
    return Command(0, "head", a, env=env, tool="llamacpp")


def vllm_command(plan: MixedPlan, model_path: str = "${MODEL_PATH}") -> Command:
    from optimizer.catalog.models import resolve_model
    from optimizer.estimate import factors as F
    from optimizer.export.common import Var
    from optimizer.export.vllm import KV_DTYPE

    inv = parse_inventory(plan.inventory)
    if len({s.box for s in plan.stages}) > 1:
        raise ExportError("mixed vLLM plans over several boxes need a Ray cluster: not exported yet")
    m = resolve_model(plan.model)
    model = Var(model_path) if model_path.startswith("${") else model_path
    a = ["vllm", "serve", model]
    if m.spec.family in ("deepseek_v4", "deepseek_v32"):
        a.append("--trust-remote-code")
    a += [
        "--tensor-parallel-size",
        "1",
        "--pipeline-parallel-size",
        str(len(plan.stages)),
        "--max-model-len",
        str(plan.context),
        "--max-num-seqs",
        str(plan.concurrency),
        "--gpu-memory-utilization",
        f"{F.VLLM_GPU_MEMORY_UTILIZATION.value:.2f}",
    ]
    storage = dict(m.storage or {}) if isinstance(m.storage, dict) else {}
    if plan.quant == "fp8" and storage.get("default") == "bf16":
        a += ["--quantization", "fp8"]
    try:
        a += ["--kv-cache-dtype", "fp8" if m.spec.family == "deepseek_v4" else KV_DTYPE[plan.kv_dtype]]
    except KeyError:
        raise ExportError(f"vLLM has no KV dtype for '{plan.kv_dtype}'") from None
    a += ["--host", "127.0.0.1", "--port", str(HTTP_PORT["vllm"])]
    env = {
        "CUDA_VISIBLE_DEVICES": ",".join(str(c) for c in cuda_indices(plan, inv)),
        "VLLM_PP_LAYER_PARTITION": ",".join(str(s.end - s.start) for s in plan.stages),
    }
    return Command(0, "head", a, env=env, tool="vllm")


def launch_script(plan: MixedPlan, model_path: str = "${MODEL_PATH}") -> str:
    cmd = vllm_command(plan, model_path) if plan.engine == "vllm" else command(plan, model_path)
    hw = load_hardware()
    header = [f"mixed plan: {plan.model} {plan.quant}, {plan.tok_s:.1f} tok/s expected; stages in device order:"]
    for i, s in enumerate(plan.stages):
        header.append(
            f"  CUDA{i} = {s.uid} ({hw.accelerators[s.accelerator].name}): layers {s.start}-{s.end - 1}, "
            f"experts on GPU {list(s.gpu_expert_layers)}, CPU {list(s.cpu_expert_layers)}, "
            f"NVMe {list(s.nvme_expert_layers)}"
        )
    return script(cmd, plan.engine, header)
