"""`rigopt export`: turn a plan (rigopt.plan/1) into launch commands for vLLM 0.33.0, SGLang 0.5.23 or
llama.cpp 0c1e57098, plus an EXPLAIN.md. Public API: export_plan, load_plan, render_export."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from optimizer.engines import IK_LLAMA_COMMIT, LLAMACPP_COMMIT, SGLANG_VERSION, VLLM_VERSION
from optimizer.export import desktop, explain, ik_llama, k8s, llamacpp, sglang, vllm
from optimizer.export.common import (
    ALL_INTERFACES,
    ENGINE_VERSIONS,
    LOCAL_BIND,
    Arg,
    ExportError,
    ExportFile,
    ExportResult,
    ModelFacts,
    check_layout,
    model_arg,
    on_amd,
    script,
)
from optimizer.limits import (
    MAX_PLAN_BYTES,
    clip_for_message,
    has_control,
    prepare_out_dir,
    read_json_bounded,
    safe_component,
    under,
    write_file,
)
from optimizer.solver.plan import PLAN_SCHEMA, Plan

__all__ = ["export_plan", "load_plan", "render_export", "ExportResult", "ExportError", "ENGINE_VERSIONS"]

def _python_version_check(pkg: str, version: str, rocm_docs: str | None = None) -> str:
    """The launch script's check of a pip-installed engine's version. rocm_docs: on AMD GPUs, where the ROCm build
    comes from (ROCm builds report '0.33.0+rocm...', and pip's wheel is the CUDA build), else the pip command."""
    got = f"{pkg}.__version__" + ('.split("+")[0]' if rocm_docs else "")
    hint = (f"; on AMD GPUs use a ROCm build of it (the pip wheel is the CUDA build; see {rocm_docs})" if rocm_docs
            else f" (pip install {pkg}=={version})")
    return (f"python3 -c 'import sys, {pkg}; sys.exit({got} != \"{version}\")' 2>/dev/null || "
            f"echo 'warning: these flags were checked against {pkg} {version}{hint}' >&2")


_VERSION_CHECK = {
    "vllm": _python_version_check("vllm", VLLM_VERSION),
    # docs.vllm.ai getting_started/installation/gpu, ROCm tab: build from source or use the ROCm docker image
    "vllm-rocm": _python_version_check("vllm", VLLM_VERSION, "the ROCm tab of vLLM GPU installation docs"),
    "sglang": _python_version_check("sglang", SGLANG_VERSION),
    "sglang-rocm": _python_version_check("sglang", SGLANG_VERSION, "the AMD GPU page of the SGLang install docs"),
    "llamacpp": (f"llama-server --version 2>&1 | grep -q {LLAMACPP_COMMIT[:7]} || "
                 f"echo 'warning: these flags were checked against llama.cpp commit {LLAMACPP_COMMIT}' >&2"),
    "ik_llama": (f"llama-server --version 2>&1 | grep -q {IK_LLAMA_COMMIT[:7]} || "
                 f"echo 'warning: these flags were checked against ik_llama.cpp commit {IK_LLAMA_COMMIT}' >&2"),
}


def load_plan(path: str | os.PathLike) -> Plan:
    """Read a plan written by `rigopt cheapest --out`; one-line errors for anything else."""
    raw = read_plan_json(path)
    p = clip_for_message(str(path))
    if not isinstance(raw, dict) or raw.get("schema_id") != PLAN_SCHEMA:
        raise ExportError(f"{p}: not a {PLAN_SCHEMA} plan (write one with `rigopt cheapest ... --out plan.json`)")
    try:
        return Plan.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ExportError(f"{p}: field '{'.'.join(str(x) for x in err['loc'])}': {err['msg']}") from None


def read_plan_json(path: str | os.PathLike):
    """A plan file's JSON (bounded size and nesting; regular files only)."""
    return read_json_bounded(path, MAX_PLAN_BYTES, "plan file", clip_for_message(str(path)), ExportError)


def check_plan_text(plan: Plan) -> None:
    """Refuse control characters (newlines, NUL, escapes) in every string field of a plan before anything of it
    reaches a launch script, and a node type the catalogue does not know."""
    def walk(v, loc):
        if isinstance(v, str):
            if has_control(v):
                raise ExportError(f"plan field '{loc}' contains a control character: {clip_for_message(v)}")
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(str(k), f"{loc}.{k}")
                walk(x, f"{loc}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{loc}[{i}]")
    for name, value in plan.model_dump(mode="json").items():
        walk(value, name)
    from optimizer.catalog.hardware import load_hardware
    hw = load_hardware()
    node = hw.nodes.get(plan.hardware.node)
    if node is None:
        raise ExportError(f"plan hardware.node '{clip_for_message(plan.hardware.node)}' is not a node type of the "
                          "catalogue (rigopt catalog nodes)")
    if node.accelerator != plan.hardware.accelerator:
        raise ExportError(f"plan hardware.accelerator '{clip_for_message(plan.hardware.accelerator)}' is not "
                          f"the accelerator of node {plan.hardware.node} ({node.accelerator})")


def export_plan(plan: Plan, engine: str | None, out_dir: Path | None, model_path: str | None = None, *,
                redundant_experts: int | None = None, expert_location: Arg | None = None,
                placement=None, host: str = LOCAL_BIND) -> ExportResult:
    """Launch commands + EXPLAIN.md for `plan` on `engine` (None: the plan's own engine); files are written to
    `out_dir` when given. `placement` (a `rigopt place` result) adds its flags and the files they name. `host`: the
    address a vLLM / SGLang server listens on (the loopback one unless a router on another machine must reach it:
    fleet pools pass ALL_INTERFACES; the LeaderWorkerSet pod always listens on it)."""
    from optimizer.estimate.kv import check_engine
    engine = check_engine(engine or plan.engine)
    check_plan_text(plan)
    extra_files: list[tuple[str, str]] = []
    kt_gpu_experts = None
    if placement is not None:
        from optimizer.export.placement import apply
        applied = apply(plan, placement, engine, out_dir)
        plan = applied.plan
        redundant_experts = applied.redundant_experts if redundant_experts is None else redundant_experts
        expert_location = applied.expert_location or expert_location
        kt_gpu_experts = applied.kt_gpu_experts
        extra_files = applied.files
    check_layout(plan)
    facts = ModelFacts(plan)
    _check_support(plan, engine, facts)
    warnings: list[str] = []
    derived: dict = {}
    if plan.engine != engine:
        warnings.append(f"the plan was sized with {plan.engine}'s memory accounting; exporting to {engine} "
                        "reuses its figures (re-plan with --engine for exact numbers)")
    if redundant_experts is None:
        redundant_experts = getattr(plan.parallel, "redundant_experts", None)
    if engine in DESKTOP:
        if placement is not None or redundant_experts or expert_location:
            raise ExportError(f"{engine} takes no expert placement (--loads / redundant experts)")
        cmds, files = DESKTOP[engine](facts, plan, model_path, warnings, derived)
        return _finish(plan, engine, facts, cmds, cmds, files, [], warnings, derived, out_dir)
    model = model_arg(facts, plan, model_path, warnings, gguf=engine in ("llamacpp", "ik_llama"))
    files = []
    # fixed text only: nothing from the plan or the model is written into a script except shell-quoted argv values
    hdr = ["plan: plan.json in this folder", "see EXPLAIN.md for the numbers and the log lines to check"]
    if engine == "vllm":
        cmds = vllm.commands(facts, plan, model, warnings, redundant_experts, derived, host)
        if expert_location:
            raise ExportError("--init-expert-location is an SGLang option; vLLM takes --eplb-config")
    elif engine == "sglang":
        cmds = sglang.commands(facts, plan, model, warnings, derived, expert_location,
                               redundant_experts=redundant_experts, kt_gpu_experts=kt_gpu_experts, host=host)
    elif engine == "ik_llama":
        if expert_location or redundant_experts:
            raise ExportError("ik_llama.cpp takes no expert placement beyond -ot (no redundant experts)")
        cmds = ik_llama.commands(facts, plan, model, warnings, derived)
    else:
        cmds = llamacpp.commands(facts, plan, model, warnings, derived)
    check_key = f"{engine}-rocm" if engine in ("vllm", "sglang") and on_amd(plan) else engine
    for c in cmds:
        rpc_name = f"rpc-node{c.node}-{c.argv[-2]}.sh".replace("CUDA", "gpu")
        name = {"rpc": rpc_name}.get(c.role, f"launch-node{c.node}.sh")
        role = {"head": "head node (serves HTTP)", "worker": "worker node", "rpc": "RPC backend"}[c.role]
        files.append(ExportFile(name, script(c, engine, [f"node {c.node}: {role}", *hdr],
                                             None if c.role == "rpc" else _VERSION_CHECK[check_key]), True))
    if engine == "vllm" and plan.hardware.n_nodes > 1:
        ray_cmd = vllm.ray_command(facts, plan, model, warnings, redundant_experts, host)
        files.append(ExportFile("ray.sh", vllm.ray_script(ray_cmd, plan), True))
        pod_cmd = vllm.ray_command(facts, plan, model, warnings, redundant_experts, host=ALL_INTERFACES)
        files.append(ExportFile("lws.yaml", k8s.lws_manifest(plan, pod_cmd)))
        cmds_for_check = [*cmds, ray_cmd]
    else:
        cmds_for_check = cmds
    return _finish(plan, engine, facts, cmds, cmds_for_check, files, extra_files, warnings, derived, out_dir)


def _check_support(plan: Plan, engine: str, facts: ModelFacts) -> None:
    """The one support rule `estimate`, `cheapest` and its checker apply (optimizer/solver/support.py): no launch
    plan for what they would refuse or warn about."""
    from optimizer.catalog.hardware import load_hardware
    from optimizer.estimate.schemes import get_scheme
    from optimizer.solver.support import plan_unsupported
    hw = load_hardware()
    node = hw.nodes.get(plan.hardware.node)
    acc = hw.accelerators.get(plan.hardware.accelerator)
    if acc is None:
        return
    why = plan_unsupported(engine, facts.spec, acc.arch, get_scheme(plan.quant, facts.resolved.storage),
                           plan.offload.mode, plan.offload.expert_layers_offloaded,
                           hw.hosts[node.host].isa if node is not None else None)
    if why:
        raise ExportError(f"{engine} cannot run this plan: {why}")


DESKTOP = {"ollama": desktop.ollama, "lmstudio": desktop.lmstudio, "mlx": desktop.mlx}


def _finish(plan: Plan, engine: str, facts: ModelFacts, cmds: list, cmds_for_check: list, files: list[ExportFile],
            extra_files: list[tuple[str, str]], warnings: list[str], derived: dict,
            out_dir: Path | None) -> ExportResult:
    files.append(ExportFile("plan.json", plan.model_dump_json(indent=2) + "\n"))
    files += [ExportFile(name, content) for name, content in extra_files]
    names = [f.name for f in files] + ["EXPLAIN.md"]
    text = explain.render(facts, plan, engine, cmds, derived, warnings, names)
    files.append(ExportFile("EXPLAIN.md", text))
    res = ExportResult(engine=engine, version=ENGINE_VERSIONS[engine], plan=plan, commands=cmds, files=files,
                       explain=text, warnings=warnings, derived=derived)
    # TODO(issue 14): a checked_commands field on ExportResult (export/common.py) instead of this attribute
    res.checked_commands = cmds_for_check  # type: ignore[attr-defined]
    if out_dir is not None:
        res.out_dir = str(write(res, Path(out_dir)))
    return res


def write(res: ExportResult, out_dir: Path) -> Path:
    from optimizer.errors import InputError
    prepare_out_dir(out_dir)
    for f in res.files:
        if safe_component(f.name) != f.name:
            raise ExportError(f"refusing to write {clip_for_message(f.name)}: not a plain file name")
        path = under(out_dir, out_dir / f.name)
        write_file(path, f.content)
        if f.executable:
            try:
                path.chmod(0o755)
            except OSError as e:
                raise InputError(f"{clip_for_message(str(path))}: cannot make executable ({e.strerror})") from None
    return out_dir


def render_export(res: ExportResult, console) -> None:
    """Rich/text summary for the CLI."""
    from rich.markup import escape
    console.print(f"[bold]export[/bold] {escape(res.plan.model)} -> {res.engine} {res.version} "
                  f"({res.plan.hardware.n_nodes}× {escape(res.plan.hardware.node)})")
    for k, v in res.derived.items():
        console.print(f"  {k}: {v}")
    for c in res.commands:
        console.print(f"\n[bold]node {c.node} ({c.role})[/bold]")
        console.print(escape(c.shell()), soft_wrap=True, highlight=False)
    for w in res.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")
    if res.out_dir:
        console.print(f"\nwrote {', '.join(f.name for f in res.files)} to {escape(res.out_dir)}")
