"""ik_llama.cpp `llama-server` commands (ikawrakow/ik_llama.cpp at optimizer/engines.py IK_LLAMA_COMMIT).

Flags come from that commit's own parser, common/common.cpp gpt_params_find_arg (allow-list in
tests/data/engine_flags/ik_llama-<commit>.txt). Differences from upstream llama.cpp's exporter (llamacpp.py):
- `-ngl` takes an integer there (std::stoi), not `all`; `--fit` and `--load-mode` do not exist.
- Routed experts of the offloaded layers go to the CPU with `-ot <regex>=CPU` (parse_buft_overrides).
- Fused MoE (up and gate in one op) is on by default (common.h `fused_moe_up_gate = true`; only `-no-fmoe`
  exists), and so are flash attention (`flash_attn = true`) and MLA mode 3 (`mla_attn = 3`, "the best of both
  worlds"); `-mla 3` is written for MLA models so the KV layout the plan assumes (latent K only, no V cache
  with flash attention: llama.cpp `needs_v_cache = mla_attn == 1 && !flash_attn`) is explicit.
- `-amb` only applies without flash attention (common.h: "only applicable if flash_attn = false"): not written.
- `-rtr` is not written for plans with experts in host memory: its README says "If you are running hybrid CPU/GPU
  inference for MoE models with all or some experts left on the CPU, do not use -rtr".
"""

from __future__ import annotations

from optimizer.estimate import factors as F
from optimizer.export.common import HTTP_PORT, LOCAL_BIND, Arg, Command, ExportError, ModelFacts
from optimizer.export.llamacpp import KV_TYPES, offload_regex, server_basics
from optimizer.solver.plan import Plan

# ik_llama -ctk/-ctv types (its ggml type names) rigopt's KV dtypes map to
IK_KV_TYPES = {**KV_TYPES, "q6_0": "q6_0"}


def commands(facts: ModelFacts, plan: Plan, model: Arg, warnings: list[str], derived: dict) -> list[Command]:
    p, h = plan.parallel, plan.hardware
    if p.tp != 1 or p.dp != 1:
        raise ExportError(f"ik_llama.cpp is exported with layer split only (no TP/DP): plan has TP{p.tp} DP{p.dp}")
    if h.n_nodes > 1:
        raise ExportError("ik_llama.cpp plans are exported for one machine (no RPC backends)")
    kv, threads, slots, ctx = server_basics(plan, IK_KV_TYPES, "ik_llama.cpp", derived)
    n_layers = len(facts.spec.layers) + 1  # every repeating layer and the output layer
    a: list[Arg] = ["llama-server", "-m", model, "-c", str(ctx), "-np", str(slots), "-ngl", str(n_layers)]
    layers = sorted(set(plan.offload.offloaded_layers) | set(plan.offload.nvme_layers))
    if layers:
        if plan.offload.mode != "cpu":
            raise ExportError(f"ik_llama.cpp computes offloaded experts on the CPU; offload mode "
                              f"'{plan.offload.mode}' cannot be expressed")
        a += ["-ot", offload_regex(layers) + "=CPU"]
        warnings.append("ik_llama.cpp: -rtr (run-time repack) is left out on purpose: its README advises against it "
                        "for hybrid CPU/GPU MoE inference (repacked CPU tensors are never offloaded to the GPU)")
    devices = h.gpus_per_node
    if devices > 1:
        a += ["--split-mode", "layer", "--tensor-split", ",".join(["1"] * devices)]
    a += ["-fa", "on", "-ctk", kv, "-ctv", kv]
    if any(layer.attn_kind == "mla" for layer in facts.spec.layers):
        a += ["-mla", "3"]
    if plan.offload.nvme_layers:
        warnings.append(f"{len(plan.offload.nvme_layers)} expert layers are read from NVMe through mmap (the "
                        "default): keep the GGUF on a local NVMe drive")
    ub = plan.settings.max_num_batched_tokens if plan.settings else int(F.LLAMACPP_UBATCH.value)
    a += ["-t", str(threads), "-b", str(max(2048, ub)), "-ub", str(ub)]
    a += ["--host", LOCAL_BIND, "--port", str(HTTP_PORT["ik_llama"])]
    return [Command(0, "head", a, tool="ik_llama")]
