"""`rigopt export`: turn a plan (rigopt.plan/1) into launch commands for vLLM 0.33.0, SGLang 0.5.23 or
llama.cpp 0c1e57098, plus an EXPLAIN.md. Public API: export_plan, load_plan, render_export."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from optimizer.engines import LLAMACPP_COMMIT, SGLANG_VERSION, VLLM_VERSION
from optimizer.export import explain, k8s, llamacpp, sglang, vllm
from optimizer.export.common import (ENGINE_VERSIONS, ExportError, ExportFile, ExportResult, ModelFacts,
                                     check_layout, model_arg, script)
from optimizer.solver.plan import PLAN_SCHEMA, Plan

__all__ = ["export_plan", "load_plan", "render_export", "ExportResult", "ExportError", "ENGINE_VERSIONS"]

_VERSION_CHECK = {
    "vllm": (f"python3 -c 'import sys, vllm; sys.exit(vllm.__version__ != \"{VLLM_VERSION}\")' 2>/dev/null || "
             f"echo 'warning: these flags were checked against vllm {VLLM_VERSION} (pip install vllm=={VLLM_VERSION})' "
             ">&2"),
    "sglang": (f"python3 -c 'import sys, sglang; sys.exit(sglang.__version__ != \"{SGLANG_VERSION}\")' 2>/dev/null || "
               f"echo 'warning: these flags were checked against sglang {SGLANG_VERSION} "
               f"(pip install sglang=={SGLANG_VERSION})' >&2"),
    "llamacpp": (f"llama-server --version 2>&1 | grep -q {LLAMACPP_COMMIT[:7]} || "
                 f"echo 'warning: these flags were checked against llama.cpp commit {LLAMACPP_COMMIT}' >&2"),
}


def load_plan(path: str | os.PathLike) -> Plan:
    """Read a plan written by `rigopt cheapest --out`; one-line errors for anything else."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ExportError(f"{p}: no such plan file") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{p}: not a JSON plan ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict) or raw.get("schema_id") != PLAN_SCHEMA:
        raise ExportError(f"{p}: not a {PLAN_SCHEMA} plan (write one with `rigopt cheapest ... --out plan.json`)")
    try:
        return Plan.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ExportError(f"{p}: field '{'.'.join(str(x) for x in err['loc'])}': {err['msg']}") from None


def export_plan(plan: Plan, engine: str, out_dir: Path | None, model_path: str | None = None, *,
                redundant_experts: int | None = None, expert_location: str | None = None) -> ExportResult:
    """Launch commands + EXPLAIN.md for `plan` on `engine`; files are written to `out_dir` when given."""
    from optimizer.estimate.kv import check_engine
    engine = check_engine(engine)
    check_layout(plan)
    facts = ModelFacts(plan)
    warnings: list[str] = []
    derived: dict = {}
    if plan.engine != engine:
        warnings.append(f"the plan was sized with {plan.engine}'s memory accounting; exporting to {engine} "
                        "reuses its figures (re-plan with --engine for exact numbers)")
    if redundant_experts is None:
        redundant_experts = getattr(plan.parallel, "redundant_experts", None)
    model = model_arg(facts, plan, model_path, warnings, gguf=engine == "llamacpp")
    files: list[ExportFile] = []
    hdr = [f"plan: {plan.candidate_id or plan.model}", "see EXPLAIN.md for the numbers and the log lines to check"]
    if engine == "vllm":
        cmds = vllm.commands(facts, plan, model, warnings, redundant_experts, derived)
        if expert_location:
            raise ExportError("--init-expert-location is an SGLang option; vLLM takes --eplb-config")
    elif engine == "sglang":
        cmds = sglang.commands(facts, plan, model, warnings, derived, expert_location)
    else:
        cmds = llamacpp.commands(facts, plan, model, warnings, derived)
    for c in cmds:
        rpc_name = f"rpc-node{c.node}-{c.argv[-2]}.sh".replace("CUDA", "gpu")
        name = {"rpc": rpc_name}.get(c.role, f"launch-node{c.node}.sh")
        role = {"head": "head node (serves HTTP)", "worker": "worker node", "rpc": "RPC backend"}[c.role]
        files.append(ExportFile(name, script(c, engine, [f"node {c.node}: {role}", *hdr],
                                             None if c.role == "rpc" else _VERSION_CHECK[engine]), True))
    if engine == "vllm" and plan.hardware.n_nodes > 1:
        ray_cmd = vllm.ray_command(facts, plan, model, warnings, redundant_experts)
        files.append(ExportFile("ray.sh", vllm.ray_script(ray_cmd, plan), True))
        files.append(ExportFile("lws.yaml", k8s.lws_manifest(plan, ray_cmd)))
        cmds_for_check = [*cmds, ray_cmd]
    else:
        cmds_for_check = cmds
    files.append(ExportFile("plan.json", plan.model_dump_json(indent=2) + "\n"))
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
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in res.files:
        path = out_dir / f.name
        path.write_text(f.content)
        if f.executable:
            path.chmod(0o755)
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
