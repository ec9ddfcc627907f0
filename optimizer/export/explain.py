"""EXPLAIN.md: why the exported numbers are what they are, and which startup-log lines confirm them."""

from __future__ import annotations

from optimizer.estimate import factors as F
from optimizer.estimate.memory import DeviceMemory
from optimizer.export.common import ENGINE_VERSIONS, Command, ModelFacts
from optimizer.solver.plan import Plan
from optimizer.units import GiB


def _seq_figures(facts: ModelFacts) -> tuple[float | None, float]:
    """(KV bytes per sequence at the plan's context on one GPU, in-flight reserve per replica)."""
    try:
        mem = facts.evaluation.mem
        return mem.kv_per_seq_bytes, mem.reserve_per_seq_bytes
    except Exception:   # a plan whose model/hardware is no longer in the catalogue
        return None, 0.0


def _state_pool(facts: ModelFacts) -> float:
    try:
        mem = facts.evaluation.mem
    except Exception:
        return 0.0
    return mem.state_bytes if mem.state_pool_share is not None else 0.0


def _attention_per_seq(facts: ModelFacts) -> float | None:
    try:
        mem = facts.evaluation.mem
    except Exception:
        return None
    return mem.attention_kv_per_seq_bytes if mem.state_per_seq_bytes else None


def _recurrent_predictions(facts: ModelFacts, engine: str) -> list[tuple[str, str]]:
    """Hybrid models: the engine's recurrent-state log lines (optimizer/estimate/recurrent.py)."""
    try:
        ev = facts.evaluation.physics
    except Exception:   # a plan whose model/hardware is no longer in the catalogue
        return []
    r, mem = ev.recurrent, ev.memory
    if r is None:
        return []
    if engine == "vllm" and r.vllm_block_size and r.vllm_padded_page_bytes:
        state_page = r.conv_bytes_per_layer + r.ssm_bytes_per_layer
        pad = 100.0 * (r.vllm_padded_page_bytes - state_page) / state_page
        return [("`Setting attention block size to N tokens to ensure that attention page size is >= mamba page "
                 "size`", f"N = {r.vllm_block_size} (state page {state_page:,} B per layer; {r.copies:g} pages per "
                          f"request in each of the recurrent groups)"),
                ("`Padding mamba page size by X% ...`", f"X ≈ {pad:.2f}")]
    if engine == "sglang" and mem.state_pool_share is not None and mem.state_set_bytes:
        slots = int((mem.state_bytes - mem.state_set_bytes) // mem.state_set_bytes)  # one spare slot (reference §3)
        return [("`max_mamba_cache_size` (SGLang server args / Mamba cache allocation line)",
                 f"≈ {slots:,} state slots ({mem.state_pool_share:.0%} of the cache memory, "
                 f"{mem.state_set_bytes / 2**20:,.1f} MiB each); max running requests ≤ {slots // 3:,} "
                 "(3 slots per request with the radix cache)")]
    return [("recurrent state buffers (`llama_memory_recurrent`)",
             f"≈ {mem.state_bytes / 2**20:,.1f} MiB: {_slots(mem)} slot(s) × "
             f"{r.set_bytes / 2**20:,.1f} MiB (F32), whatever -c is")]


def _slots(mem: DeviceMemory) -> int:
    return int(round(mem.state_bytes / mem.state_per_seq_bytes)) if mem.state_per_seq_bytes else 0


def predictions(facts: ModelFacts, plan: Plan, engine: str, derived: dict) -> list[tuple[str, str]]:
    """(log line to look for, what the plan predicts)."""
    m = plan.memory
    per_seq, reserve = _seq_figures(facts)
    out: list[tuple[str, str]] = _recurrent_predictions(facts, engine)
    if engine == "vllm":
        gmu = derived["gpu_memory_utilization"]
        avail = gmu * m.capacity_bytes - m.weights_bytes - m.runtime_bytes
        out.append(("`Available KV cache memory: X GiB` (per GPU)",
                    f"≈ {avail / GiB:.2f} GiB = {gmu} × {m.capacity_bytes / GiB:.2f} GiB − weights "
                    f"{m.weights_bytes / GiB:.2f} − runtime {m.runtime_bytes / GiB:.2f} (activations, non-torch, CUDA "
                    "graphs)"))
        if per_seq:
            conc = avail / (per_seq + reserve)
            out.append((f"`Maximum concurrency for {plan.context} tokens per request: X x` (per DP engine)",
                        f"≈ {conc:.2f}× (available KV / ({per_seq / GiB:.2f} GiB per sequence + "
                        f"{reserve / GiB:.2f} GiB in-flight SWA/compressor reserve that vLLM charges to every "
                        "request); "
                        f"a worst-case figure: the plan counts the reserve once per engine and runs "
                        f"{-(-plan.concurrency // plan.parallel.dp)} per DP engine"))
            out.append(("`GPU KV cache size: N tokens`", f"≈ {int(conc * plan.context):,} tokens (= concurrency × "
                                                         "max-model-len)"))
    elif engine == "sglang":
        mfs = derived["mem_fraction_static"]
        pre = m.capacity_bytes - F.CUDA_CONTEXT_BYTES.value
        pool = mfs * pre - m.weights_bytes
        state_pool = _state_pool(facts)
        line = (f"≈ {(pool - state_pool) / 1e9:.2f} GB (= {mfs} × {pre / GiB:.2f} GiB free before load − weights "
                f"{m.weights_bytes / GiB:.2f} GiB" + (f" − recurrent state pool {state_pool / GiB:.2f} GiB)"
                                                       if state_pool else ")"))
        pool -= state_pool
        per_seq = _attention_per_seq(facts) or per_seq
        if per_seq:
            line += f"; #tokens ≈ {int(pool / (per_seq / plan.context)):,} at {per_seq / plan.context:,.0f} B/token"
        out.append(("`KV Cache is allocated. #tokens: N, KV size: X GB` (per GPU)", line))
        out.append(("`max_total_num_tokens=` / `max_running_requests=` in the scheduler line",
                    f"enough tokens for {plan.concurrency} × {plan.context:,}"))
    elif engine == "mlx":
        out.append(("`Peak memory: X GB` of `mlx_lm.generate --model M --max-tokens ...` at the plan's prompt "
                    "length (mlx.core.get_peak_memory)",
                    f"≈ {(m.weights_bytes + m.kv_bytes + m.runtime_bytes) / 1e9:.2f} GB = weights "
                    f"{m.weights_bytes / 1e9:.2f} + KV {m.kv_bytes / 1e9:.2f} ({plan.concurrency} × "
                    f"{plan.context:,} tokens, 256-token steps) + prefill chunk {m.runtime_bytes / 1e9:.2f}"))
    else:
        devices = plan.hardware.n_nodes * plan.hardware.gpus_per_node
        total = m.kv_bytes * plan.parallel.pp
        line = ("`KV self size = X MiB` (ik_llama.cpp src/llama.cpp llama_new_context_with_model)"
                if engine == "ik_llama" else "`llama_kv_cache: size = X MiB (N cells, L layers, S/S seqs)`")
        out.append((line,
                    f"≈ {total / 2**20:,.0f} MiB over {devices} device(s) for {derived['ctx_total']:,} cells "
                    f"({plan.concurrency} slot(s) × {plan.context:,})"))
        cpu_layers = sorted(set(plan.offload.offloaded_layers) | set(plan.offload.nvme_layers))
        if cpu_layers:
            out.append(("`tensor blk.N.ffn_*_exps.weight (...) buffer type overridden to CPU`",
                        f"exactly layers {_ranges(cpu_layers)}"))
    return out


def _ranges(xs: list[int]) -> str:
    xs = sorted(xs)
    out, start = [], None
    for i, x in enumerate(xs):
        if start is None:
            start = x
        if i + 1 == len(xs) or xs[i + 1] != x + 1:
            out.append(f"{start}" if start == x else f"{start}–{x}")
            start = None
    return ", ".join(out)


def render(facts: ModelFacts, plan: Plan, engine: str, commands: list[Command], derived: dict,
           warnings: list[str], files: list[str]) -> str:
    m, s, h, p = plan.memory, plan.speed, plan.hardware, plan.parallel
    used = m.weights_bytes + m.kv_bytes + m.runtime_bytes
    L = [f"# {plan.model} on {h.n_nodes}× {h.node} ({h.n_nodes * h.gpus_per_node}× {h.accelerator}) with "
         f"{engine} {ENGINE_VERSIONS[engine]}", "",
         f"Generated by `rigopt export` from plan `{plan.candidate_id or plan.model}` (schema {plan.schema_id}). "
         f"Engine version pinned: **{engine} {ENGINE_VERSIONS[engine]}**; flags were checked against that version's "
         "argument parser (tests/data/engine_flags/).", "",
         "## The plan", "",
         f"- quantization `{plan.quant}`, KV `{plan.kv_dtype}`, context **{plan.context:,}** tokens × "
         f"{plan.concurrency} concurrent sequence(s)",
         f"- layout TP{p.tp} PP{p.pp} DP{p.dp}" + (f" EP{p.ep_size}" if p.ep else ""),
         f"- offload: {plan.offload.mode}" + (f", routed experts of layers {_ranges(plan.offload.offloaded_layers)} "
                                               f"in host DRAM ({plan.offload.host_bytes / 1e9:,.1f} GB)"
                                               if plan.offload.offloaded_layers else "")
         + (f"; layers {_ranges(plan.offload.nvme_layers)} read from NVMe via mmap "
            f"({plan.offload.nvme_bytes / 1e9:,.1f} GB)" if plan.offload.nvme_layers else ""), "",
         "## Memory per GPU (busiest device, from the plan)", "",
         "| part | GiB |", "|---|---:|",
         f"| weights | {m.weights_bytes / GiB:.2f} |", f"| KV cache | {m.kv_bytes / GiB:.2f} |",
         f"| runtime (activations, graphs, buffers) | {m.runtime_bytes / GiB:.2f} |",
         f"| **used** | **{used / GiB:.2f}** |", f"| engine budget | {m.budget_bytes / GiB:.2f} |",
         f"| device capacity | {m.capacity_bytes / GiB:.2f} |", f"| headroom | {m.headroom_bytes / GiB:.2f} |", ""]
    if engine == "vllm":
        L += [f"`--gpu-memory-utilization {derived['gpu_memory_utilization']}` is the plan's budget / capacity "
              f"({m.budget_bytes / GiB:.2f} / {m.capacity_bytes / GiB:.2f} GiB): a fraction of TOTAL memory that "
              "bounds "
              f"weights + activations + non-torch + CUDA graphs + KV; it contains the plan's {used / GiB:.2f} GiB. "
              f"`--max-num-batched-tokens {derived['max_num_batched_tokens']}` pins the activation estimate. "
              "`--max-num-seqs` is per DP rank.", ""]
        if "cpu_offload_gb" in derived:
            L += [f"`--cpu-offload-gb {derived['cpu_offload_gb']:g}` per GPU streams routed experts over PCIe (UVA); "
                  "vLLM offloads the first matching parameters in layer order, so which layers move differs from the "
                  "plan, the bytes do not.", ""]
    elif engine == "sglang":
        L += [f"`--mem-fraction-static {derived['mem_fraction_static']}` is SGLang's own accounting: a fraction of the "
              "free memory measured before loading that holds weights + KV only; the rest "
              f"({m.runtime_bytes / GiB:.2f} GiB in the plan) is SGLang's activation/CUDA-graph reserve. "
              "It is (capacity − reserve) / capacity and covers weights + KV = "
              f"{(m.weights_bytes + m.kv_bytes) / GiB:.2f} GiB. "
              "Not interchangeable with vLLM's gpu_memory_utilization.", ""]
    elif engine == "ollama":
        L += [f"`PARAMETER num_ctx {plan.context}` is per request; Ollama starts llama-server with "
              f"`-c {derived['ctx_total']}` = num_ctx × OLLAMA_NUM_PARALLEL ({plan.concurrency}) and `-np` "
              f"{plan.concurrency} (llm/llama_server.go). `PARAMETER num_gpu` = every layer + the output layer: "
              "all on the GPU(s), as the plan assumes (without it llama-server's fit chooses). `num_batch` below "
              "1024 adds no generation-batch surcharge to Ollama's own prediction (server/sched.go "
              "generationBatchSurcharge: 768 MiB at 1024, 2 GiB at 2048); that prediction (file size + f16 KV, "
              "llm/llama_server.go PredictServerVRAM) only picks GPUs and evicts other models above 80% of free "
              "memory; OLLAMA_MAX_LOADED_MODELS=1 keeps this model alone.", ""]
    elif engine == "lmstudio":
        L += [f"`--context-length {plan.context}` per prediction, `--parallel {plan.concurrency}`, `--gpu max` "
              "(every layer on the GPU, as the plan assumes). `lms load` sets no KV cache type: f16.", ""]
    elif engine == "mlx":
        L += [f"mlx-lm allocates KV per request in 256-token steps; `--decode-concurrency {plan.concurrency}` caps "
              "the sequences decoding together; `--prompt-cache-bytes` caps the reuse cache at the plan's headroom. "
              f"The budget ({m.budget_bytes / GiB:.2f} GiB) is the Metal wired limit.", ""]
    elif engine == "ik_llama":
        L += [f"`-c {derived['ctx_total']}` is the TOTAL context over {plan.concurrency} slot(s) (`-np`). "
              "`-ot ...=CPU` keeps exactly the plan's offloaded expert layers in host memory; fused MoE and flash "
              "attention are ik_llama.cpp's defaults (common/common.h), `-mla 3` for MLA models; `-rtr` is not used "
              "(its README: not for hybrid CPU/GPU MoE). Speeds below use llama.cpp's physics and fitted factors "
              "(ik_llama has no fit of its own yet).", ""]
    else:
        L += [f"`-c {derived['ctx_total']}` is the TOTAL context over {plan.concurrency} slot(s) (`-np`). "
              "`--fit off` stops llama.cpp from re-placing tensors; `-ctk` = `-ctv` as MLA/V4 require.", ""]
    L += ["## Expected speed (from the plan)", "",
          f"- decode: **{s.tok_s_per_seq:.1f} tok/s per sequence** expected (roofline bound "
          f"{s.tok_s_bound_per_seq:.1f}); "
          f"aggregate {s.tok_s_aggregate:.1f} tok/s; binding term: {s.binding}",
          f"- time to first token for a full-context prompt: {s.ttft_s:.1f} s (bound {s.ttft_bound_s:.1f} s)", "",
          "## What to check in the startup log", "", "| log line | the plan predicts |", "|---|---|"]
    L += [f"| {k} | {v} |" for k, v in predictions(facts, plan, engine, derived)]
    L += ["", "If the logged KV figure is much lower, the engine's runtime overhead is larger than the plan assumed: "
          "lower the concurrency or context, or re-plan with more memory.", "", "## Commands", ""]
    for c in commands:
        L += [f"node {c.node} ({c.role}):", "", "```bash", c.shell(), "```", ""]
    needed = sorted({n for c in commands for n in c.env_names})
    if needed:
        L += ["Set before launching: " + ", ".join(f"`{n}`" for n in needed) +
              " (HEAD_IP = node 0's address; IFACE_NAME = the NIC for NCCL/Gloo; MODEL_PATH = the checkpoint).", ""]
    if warnings:
        L += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    if plan.notes:
        L += ["## Planner notes", ""] + [f"- {n}" for n in plan.notes] + [""]
    L += ["## Files", ""] + [f"- `{f}`" for f in files] + [""]
    return "\n".join(L)
