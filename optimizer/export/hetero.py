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

Several boxes (llama.cpp RPC, tools/rpc/README.md of 0c1e57098): the first box runs `llama-server`, every other box
holding layers runs one `ggml-rpc-server -H ${NODE<b>_IP} -p 50052 -d CUDA<i>,...` exposing its stage GPUs in stage
order. The main command lists them with `--rpc` (host:port, in box order) and fixes the device order with
`--device` = the stages in order: local GPUs are `CUDA<k>` (k-th visible), remote ones `RPC<j>`, numbered across the
servers in `--rpc` order and each server's `-d` order (ggml-rpc.cpp ggml_backend_rpc_add_server); with `--device`
given, llama.cpp splits layers over exactly that list, in that order (src/llama.cpp, params.devices). Expert
tensors of a remote stage are pinned with `-ot ...=RPC<i>[host:port]`, the buffer-type name
(ggml_backend_rpc_buffer_type: `"RPC" + device index on that server + "[" + endpoint + "]"`). `--rpc` comes before
`--device` and `-ot` on the command line: arguments are handled in order (common/arg.cpp common_params_parse_ex)
and both look the RPC devices up by name.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, fields
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import catalogue_key, resolve_model
from optimizer.errors import RigoptError
from optimizer.estimate.layers import model_layers
from optimizer.export.common import HTTP_PORT, LOCAL_BIND, RPC_PORT, Arg, Command, ExportError, Var, script
from optimizer.export.llamacpp import KV_TYPES, offload_regex
from optimizer.hetero.inventory import Inventory, parse_inventory
from optimizer.hetero.plan import MixedPlan, Stage
from optimizer.hetero.validate import check_plan
from optimizer.limits import (
    MAX_CONCURRENCY,
    MAX_CONTEXT_TOKENS,
    clip_for_message,
    has_control,
    prepare_out_dir,
    under,
    write_file,
)


def cuda_indices(plan: MixedPlan, inv: Inventory, box: int | None = None) -> list[int]:
    """Physical CUDA index of each stage's device in its own box (bought cards numbered after that box's owned
    ones), for the stages on `box` (default: all stages, in stage order)."""
    nxt = {k: len(b.gpus) for k, b in enumerate(inv.boxes)}
    out = []
    for s in plan.stages:
        if s.owned:
            c = next(g.cuda for g in inv.boxes[s.box].gpus if g.uid == s.uid)
        else:
            c = nxt[s.box]
            nxt[s.box] += 1
        if box is None or s.box == box:
            out.append(c)
    return out


def rpc_endpoint(box: int) -> str:
    """`host:port` of the ggml-rpc-server of inventory box `box` (its address from NODE<box>_IP at launch)."""
    return f"${{NODE{box}_IP}}:{RPC_PORT}"


def remote_boxes(plan: MixedPlan) -> list[int]:
    """Inventory indices of the boxes other than the first that hold stages, in box order (= `--rpc` order)."""
    return sorted({s.box for s in plan.stages if s.box > 0})


def device_names(plan: MixedPlan) -> list[tuple[str, str]]:
    """(llama.cpp device name, buffer-type name) of each stage in the main process: CUDA<k> for the first box's
    stages (k-th visible GPU), RPC<j> / RPC<i>[endpoint] for the other boxes' (see the module doc)."""
    out: list[tuple[str, str]] = [("", "")] * len(plan.stages)
    j = 0
    for b in remote_boxes(plan):
        on_b = [i for i, s in enumerate(plan.stages) if s.box == b]
        for local, i in enumerate(on_b):
            out[i] = (f"RPC{j}", f"RPC{local}[{rpc_endpoint(b)}]")
            j += 1
    k = 0
    for i, s in enumerate(plan.stages):
        if s.box == 0:
            out[i] = (f"CUDA{k}", f"CUDA{k}")
            k += 1
    return out


@dataclass(frozen=True)
class _Joined(Var):
    """One shell word: a literal prefix (single-quoted), a `${NAME}` template (double-quoted, as Var), a literal
    suffix (single-quoted): an `-ot` regex whose buffer type names an RPC endpoint given at launch."""

    prefix: str = ""
    suffix: str = ""

    def render(self) -> str:
        return shlex.quote(self.prefix) + super().render() + shlex.quote(self.suffix)

    def __str__(self) -> str:
        return self.prefix + self.template + self.suffix


def _target(regex: str, buft: str) -> Arg:
    """`regex=buft` for -ot; an RPC buffer type carries the endpoint variable."""
    if "[" not in buft:
        return f"{regex}={buft}"
    head, rest = buft.split("[", 1)
    return _Joined(rest[:-1], prefix=f"{regex}={head}[", suffix="]")


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
    """The `llama-server` command (on the first box) of a llama.cpp mixed plan."""
    return commands(plan, model_path)[0]


def commands(plan: MixedPlan, model_path: str = "${MODEL_PATH}") -> list[Command]:
    """`llama-server` on the first box, then one `ggml-rpc-server` per other box holding stages (box order)."""
    inv = parse_inventory(plan.inventory)
    if plan.engine != "llamacpp":
        raise ExportError(f"mixed-hardware export is for llama.cpp; plan engine is {plan.engine}")
    try:
        kv = KV_TYPES[plan.kv_dtype]
    except KeyError:
        raise ExportError(f"llama.cpp has no KV cache type for '{plan.kv_dtype}'") from None
    for s in plan.stages:
        if s.box > 0 and (s.cpu_expert_layers or s.nvme_expert_layers):
            raise ExportError(f"{s.uid}: a ggml-rpc-server box keeps its routed experts on its GPUs")
    box = inv.boxes[0]
    threads = box.host.cores
    remotes = remote_boxes(plan)
    names = device_names(plan)

    model = Var(model_path) if model_path.startswith("${") else model_path
    ctx = plan.context * plan.concurrency
    a: list[Arg] = ["llama-server", "-m", model, "-c", str(ctx), "-np", str(plan.concurrency), "-ngl", "all"]
    if remotes:
        a += ["--rpc", Var(",".join(rpc_endpoint(b) for b in remotes))]
        a += ["--device", ",".join(n for n, _ in names)]
    a += ["--split-mode", "layer", "--tensor-split", ",".join(str(x) for x in tensor_split(plan))]
    host_layers = []
    for (_, buft), s in zip(names, plan.stages, strict=True):
        if s.gpu_expert_layers:
            a += ["-ot", _target(offload_regex(list(s.gpu_expert_layers)), buft)]
        host_layers += list(s.cpu_expert_layers) + list(s.nvme_expert_layers)
    if host_layers:
        a += ["-ot", offload_regex(host_layers) + "=CPU"]
    a += ["-fa", "on", "-ctk", kv, "-ctv", kv, "--fit", "off"]
    if any(s.nvme_expert_layers for s in plan.stages):
        a += ["--load-mode", "mmap"]
    elif host_layers:
        a += ["--load-mode", "none"]
    a += ["-t", str(threads), "--host", LOCAL_BIND, "--port", str(HTTP_PORT["llamacpp"])]
    env: dict[str, Arg] = {"CUDA_VISIBLE_DEVICES": ",".join(str(c) for c in cuda_indices(plan, inv, 0))}
    out = [Command(0, "head", a, env=env, tool="llamacpp")]
    for b in remotes:
        devs = ",".join(f"CUDA{c}" for c in cuda_indices(plan, inv, b))
        out.append(
            Command(
                b,
                "rpc",
                ["ggml-rpc-server", "-H", Var(f"${{NODE{b}_IP}}"), "-p", str(RPC_PORT), "-d", devs, "-c"],
                tool="ggml-rpc-server",
            )
        )
    return out


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
    a += ["--host", LOCAL_BIND, "--port", str(HTTP_PORT["vllm"])]
    env: dict[str, str | Var] = {
        "CUDA_VISIBLE_DEVICES": ",".join(str(c) for c in cuda_indices(plan, inv)),
        "VLLM_PP_LAYER_PARTITION": ",".join(str(s.end - s.start) for s in plan.stages),
    }
    return Command(0, "head", a, env=env, tool="vllm")


def _header(plan: MixedPlan) -> list[str]:
    hw = load_hardware()
    names = [n for n, _ in device_names(plan)] if plan.engine == "llamacpp" else [f"CUDA{i}" for i in range(99)]
    header = [f"mixed plan: {plan.model} {plan.quant}, {plan.tok_s:.1f} tok/s expected; stages in device order:"]
    for i, s in enumerate(plan.stages):
        header.append(
            f"  {names[i]} = {s.uid} ({hw.accelerators[s.accelerator].name}): layers {s.start}-{s.end - 1}, "
            f"experts on GPU {list(s.gpu_expert_layers)}, CPU {list(s.cpu_expert_layers)}, "
            f"NVMe {list(s.nvme_expert_layers)}"
        )
    return header


def launch_scripts(plan: MixedPlan, model_path: str = "${MODEL_PATH}") -> list[tuple[str, str]]:
    """(box name, bash script) per box: the engine's box first, then each ggml-rpc-server box (start those
    first). A one-box plan has one script."""
    if plan.engine == "vllm":
        if len({s.box for s in plan.stages}) > 1:
            raise ExportError("mixed vLLM plans over several boxes need a Ray cluster: not exported")
        return [
            (
                parse_inventory(plan.inventory).boxes[0].name,
                script(vllm_command(plan, model_path), "vllm", _header(plan)),
            )
        ]
    inv = parse_inventory(plan.inventory)
    cmds = commands(plan, model_path)
    header = _header(plan)
    out = []
    for c in cmds:
        if c.role == "head":
            addrs = ", ".join(f"NODE{x.node}_IP = {inv.boxes[x.node].name}" for x in cmds[1:])
            h = header + (
                [f"start the ggml-rpc-server script of every other box first; set each box's private address: {addrs}"]
                if len(cmds) > 1
                else []
            )
            out.append((inv.boxes[0].name, script(c, "llamacpp", h)))
        else:
            h = header + [
                f"this box ({inv.boxes[c.node].name}) serves its GPUs to llama-server on "
                f"{inv.boxes[0].name}; ggml-rpc-server is insecure by design: bind it to a private network "
                "only (tools/rpc/README.md)"
            ]
            out.append((inv.boxes[c.node].name, script(c, "llamacpp", h)))
    return out


def launch_script(plan: MixedPlan, model_path: str = "${MODEL_PATH}") -> str:
    """The script of the engine's box (the only one for a one-box plan)."""
    return launch_scripts(plan, model_path)[0][1]


# ------------------------------------------------------------------------------------------ plan files
MIXED_PLAN_SCHEMA = "rigopt.mixed-plan/1"


def load_mixed_plan(raw: dict, label: str) -> MixedPlan:
    """A `rigopt.mixed-plan/1` JSON object (from `rigopt mixed --json` or `rigopt solve`) as a MixedPlan, checked
    before any of it reaches a script: field types, no control characters, a catalogue model, an inventory that
    parses, stage devices of that inventory (bought ones named as the planner names them), and the independent
    float check of the whole plan (memory per device, DRAM, power, layer and expert coverage). ExportError else."""
    if not isinstance(raw, dict) or raw.get("schema_id") != MIXED_PLAN_SCHEMA:
        raise ExportError(f"{label}: not a {MIXED_PLAN_SCHEMA} plan")

    def walk(v, loc: str) -> None:
        if isinstance(v, str) and has_control(v):
            raise ExportError(f"{label}: field '{loc}' contains a control character: {clip_for_message(v)}")
        if isinstance(v, dict):
            for k, x in v.items():
                walk(str(k), loc)
                walk(x, f"{loc}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{loc}[{i}]")

    walk(raw, "plan")
    body = {k: v for k, v in raw.items() if k != "schema_id"}

    def known(d, cls, where: str) -> None:  # the dataclasses take no unknown keys
        extra = set(d) - {f.name for f in fields(cls)} if isinstance(d, dict) else set()
        if extra:
            raise ExportError(f"{label}: {where}: unknown field '{clip_for_message(sorted(extra)[0])}'")

    known(body, MixedPlan, "plan")
    for i, st in enumerate(body.get("stages") or []):
        known(st, Stage, f"stages[{i}]")
    try:
        plan = TypeAdapter(MixedPlan).validate_python(body)
    except ValidationError as e:
        err = e.errors()[0]
        raise ExportError(f"{label}: field '{'.'.join(str(x) for x in err['loc'])}': {err['msg']}") from None
    try:
        if catalogue_key(plan.model) != plan.model:
            raise ExportError(f"{label}: model '{clip_for_message(plan.model)}' is not a catalogue key")
        if not (1 <= plan.context <= MAX_CONTEXT_TOKENS and 1 <= plan.concurrency <= MAX_CONCURRENCY):
            raise ExportError(f"{label}: context or concurrency out of range")
        if plan.engine not in ("llamacpp", "vllm") or not plan.stages:
            raise ExportError(f"{label}: a mixed plan runs llama.cpp or vLLM over at least one stage")
        inv = parse_inventory(plan.inventory)
        hw = load_hardware()
        if len(plan.dram_bought_gb) != len(inv.boxes) or any(not 0 <= g <= 10**6 for g in plan.dram_bought_gb):
            raise ExportError(f"{label}: dram_bought_gb needs one non-negative figure per box")
        uids = {g.uid for g in inv.gpus}
        for s in plan.stages:
            if not 0 <= s.box < len(inv.boxes) or s.accelerator not in hw.accelerators:
                raise ExportError(f"{label}: stage {clip_for_message(s.uid)}: unknown box or accelerator")
            box = inv.boxes[s.box]
            own = s.owned and s.uid in uids and next(g for g in inv.gpus if g.uid == s.uid).acc.key == s.accelerator
            bought = not s.owned and re.fullmatch(rf"{re.escape(box.name)}/buy-{re.escape(s.accelerator)}-\d+", s.uid)
            if not (own or bought) or not s.uid.startswith(f"{box.name}/"):
                raise ExportError(f"{label}: stage {clip_for_message(s.uid)} is not a device of the inventory")
        if len({s.uid for s in plan.stages}) != len(plan.stages):
            raise ExportError(f"{label}: a device holds two stages")
        m = resolve_model(plan.model)
        ml = model_layers(m, plan.quant, plan.engine, plan.context, plan.concurrency)
        chk = check_plan(m, ml, inv, plan.stages, plan.dram_bought_gb)
    except ExportError:
        raise
    except RigoptError as e:
        raise ExportError(f"{label}: {e}") from None
    if not chk.ok:
        raise ExportError(f"{label}: the plan fails the independent check: {chk.violations[0]}")
    return plan


def export_mixed_plan(raw: dict, label: str, out_dir=None, model_path: str | None = None) -> list[tuple[str, str]]:
    """(file name, text) of a mixed plan file's launch scripts (`launch-<box>.sh`, the engine's box first) and a copy
    of the plan; written into `out_dir` when given (nothing is written otherwise)."""
    plan = load_mixed_plan(raw, label)
    files = [(f"launch-{box}.sh", text) for box, text in launch_scripts(plan, model_path or "${MODEL_PATH}")]
    files.append(("plan.json", json.dumps(plan.to_json(), indent=2) + "\n"))
    if out_dir is not None:
        out = prepare_out_dir(out_dir)
        for name, text in files:
            path = under(out, Path(out) / name)
            write_file(path, text, "--out")
            if name.endswith(".sh"):
                try:
                    path.chmod(0o755)
                except OSError:
                    pass  # the script is written; `bash launch-<box>.sh` runs it either way
    return files
