"""Shared pieces of `rigopt export`: result objects, safe shell rendering, model facts a launcher needs."""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, field
from functools import cached_property

from optimizer.engines import ENGINE_VERSIONS
from optimizer.errors import InputError
from optimizer.solver.plan import Plan
from optimizer.units import GiB

ENGINES = tuple(ENGINE_VERSIONS)
HTTP_PORT = {"vllm": 8000, "sglang": 30000, "llamacpp": 8080, "ik_llama": 8080}
# every single-plan server listens on the loopback address (an engine's OpenAI API has no authentication by
# default): edit --host in the script to serve other machines. Fleet pools bind 0.0.0.0 (their router reaches them
# from another pod; optimizer/export/fleet.py)
LOCAL_BIND = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"  # a pod's server, reached on the pod's address by a Service or router
VLLM_DP_RPC_PORT = 13345
SGLANG_DIST_PORT = 20000
RPC_PORT = 50052
MAX_SAFE_FRACTION = 0.99


class ExportError(InputError):
    """A plan that cannot be turned into a launch command (inconsistent layout, does not fit, ...)."""


_TEMPLATE = re.compile(r"^(?:\$\{[A-Z][A-Z0-9_]*\}|[A-Za-z0-9:.,_/=+-])*$")


@dataclass(frozen=True)
class Var:
    """A value filled in by the shell at launch time, e.g. Var('${HEAD_IP}:20000').

    Only `${NAME}` references and a small set of inert characters are allowed, and the value is rendered
    inside double quotes, so expansion yields one word and can never run a command."""
    template: str

    def __post_init__(self):
        if not _TEMPLATE.match(self.template):
            raise ValueError(f"unsafe shell template {self.template!r}")

    def render(self) -> str:
        return f'"{self.template}"'

    @property
    def names(self) -> list[str]:
        return re.findall(r"\$\{([A-Z0-9_]+)\}", self.template)

    def __str__(self) -> str:
        return self.template


Arg = str | Var

# The folder the launch script sits in, set by the script itself (`"$(dirname "$0")"`), so a file an export writes
# beside its scripts is named relative to them and the folder can be copied to the server as it is.
EXPORT_DIR = "RIGOPT_EXPORT_DIR"
EXPORT_DIR_LINE = f'{EXPORT_DIR}="$(cd "$(dirname "$0")" && pwd)"'


def in_export_dir(name: str) -> Var:
    """A file written beside the launch scripts, as the script sees it at launch time."""
    return Var(f"${{{EXPORT_DIR}}}/{name}")


def quote(a: Arg) -> str:
    return a.render() if isinstance(a, Var) else shlex.quote(str(a))


@dataclass
class Command:
    """One process to start on one node. `argv[0]` is the program; values are never pre-quoted."""
    node: int
    role: str                  # head | worker | rpc | ray-head | ray-worker
    argv: list[Arg]
    env: dict[str, Arg] = field(default_factory=dict)
    tool: str = ""             # which allow-list checks this argv (vllm, sglang, llamacpp, ggml-rpc-server,
    #                            sglang-router, vllm-proxy; "" none)

    def env_lines(self) -> list[str]:
        return [f"export {k}={quote(v)}" for k, v in self.env.items()]

    def shell(self) -> str:
        return "\n".join([*self.env_lines(), self.argv_shell()])

    def argv_shell(self) -> str:
        parts: list[str] = []
        cur = ""
        first = 3 if self.argv[:2] == ["python3", "-m"] else 1
        for i, tok in enumerate(self.argv):
            q = quote(tok)
            if i >= first and isinstance(tok, str) and tok.startswith("-") and len(tok) > 1:
                parts.append(cur)
                cur = q
            else:
                cur = f"{cur} {q}" if cur else q
        parts.append(cur)
        return " \\\n    ".join(parts)

    def one_line(self) -> str:
        return " ".join(quote(t) for t in self.argv)

    @property
    def env_names(self) -> list[str]:
        out = []
        for a in [*self.argv, *self.env.values()]:
            if isinstance(a, Var):
                out += [n for n in a.names if n not in out and n not in self.env and n != EXPORT_DIR]
        return out

    @property
    def uses_export_dir(self) -> bool:
        return any(isinstance(a, Var) and EXPORT_DIR in a.names for a in [*self.argv, *self.env.values()])


@dataclass
class ExportFile:
    name: str
    content: str
    executable: bool = False


@dataclass
class ExportResult:
    engine: str
    version: str
    plan: Plan
    commands: list[Command]
    files: list[ExportFile]
    explain: str
    warnings: list[str] = field(default_factory=list)
    derived: dict[str, float | int | str] = field(default_factory=dict)   # computed fractions etc.
    out_dir: str | None = None

    def model_dump(self, mode: str = "json") -> dict:  # noqa: ARG002 (pydantic's signature: the CLI's --json path)
        return self.to_dict()

    def file(self, name: str) -> ExportFile:
        return next(f for f in self.files if f.name == name)

    def to_dict(self) -> dict:
        return {"engine": self.engine, "version": self.version, "out_dir": self.out_dir,
                "commands": [{"node": c.node, "role": c.role, "argv": [str(a) for a in c.argv],
                              "env": {k: str(v) for k, v in c.env.items()}, "shell": c.one_line()}
                             for c in self.commands],
                "files": [f.name for f in self.files], "derived": self.derived, "warnings": self.warnings}


# ------------------------------------------------------------------------------------------ model facts
@dataclass
class ModelFacts:
    plan: Plan

    @cached_property
    def resolved(self):
        from optimizer.catalog.models import resolve_model
        return resolve_model(self.plan.model)

    @property
    def spec(self):
        return self.resolved.spec

    @property
    def card(self):
        return self.resolved.card

    @property
    def hf_id(self) -> str:
        if self.card is not None:
            return self.card.hf_id
        from optimizer.catalog.hub import parse_hub_id
        hub = parse_hub_id(self.plan.model)  # a Hub id's repository (engines take the revision as a flag)
        return hub[0] if hub is not None else self.plan.model

    @property
    def is_v4(self) -> bool:
        return self.spec.family == "deepseek_v4"

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def moe_layers(self) -> list[int]:
        return [i for i, l in enumerate(self.spec.main_layers) if l.is_moe]

    @property
    def n_experts(self) -> int:
        return max((l.n_routed_experts for l in self.spec.main_layers), default=0)

    @property
    def n_layers(self) -> int:
        return len(self.spec.main_layers)

    @property
    def native_storage(self) -> dict[str, str]:
        return self.resolved.storage

    @cached_property
    def evaluation(self):
        """The plan re-evaluated by the independent checker (per-sequence KV, in-flight reserve, ...)."""
        from optimizer.solver.query import Query
        from optimizer.solver.validate import evaluate
        q = Query(model=self.plan.model, context=self.plan.context, concurrency=self.plan.concurrency)
        return evaluate(self.plan, q)


def check_layout(plan: Plan) -> None:
    p, h = plan.parallel, plan.hardware
    world = h.n_nodes * h.gpus_per_node
    if p.tp * p.pp * p.dp != world:
        raise ExportError(f"plan layout TP{p.tp}×PP{p.pp}×DP{p.dp} = {p.tp * p.pp * p.dp} GPUs, "
                          f"but the hardware has {world}")
    if p.ep and p.ep_size not in (1, p.tp * p.dp):
        raise ExportError(f"plan EP size {p.ep_size} is not TP×DP = {p.tp * p.dp}")
    if plan.context <= 0 or plan.concurrency <= 0:
        raise ExportError("plan context and concurrency must be positive")
    if plan.memory.capacity_bytes <= 0:
        raise ExportError("plan carries no device memory figures")


def model_arg(facts: ModelFacts, plan: Plan, model_path: str | None, warnings: list[str],
              gguf: bool = False) -> Arg:
    """What to pass as the model: --model-path if given; the official checkpoint for native plans."""
    if model_path is not None:
        from optimizer.limits import MAX_PATH_CHARS, has_control
        if not model_path.strip() or has_control(model_path) or len(model_path) > MAX_PATH_CHARS:
            raise ExportError(f"--model-path must be a non-empty single-line path or repository id of at most "
                              f"{MAX_PATH_CHARS} characters")
        if model_path.startswith("-"):
            raise ExportError("--model-path must not start with '-' (an engine would read it as a flag); use ./" + model_path)
        return model_path
    if gguf:
        warnings.append(f"no --model-path: the launch script reads the GGUF ({plan.quant}) from $MODEL_PATH")
        return Var("${MODEL_PATH}")
    if plan.quant in ("native",) or (plan.quant == "bf16" and facts.native_storage.get("default") == "bf16"):
        return facts.hf_id
    if online_quantization(facts, plan) is not None:
        return facts.hf_id
    warnings.append(f"quant {plan.quant} needs a pre-quantized checkpoint of {facts.hf_id}: pass --model-path; "
                    "the launch script reads it from $MODEL_PATH")
    return Var("${MODEL_PATH}")


def online_quantization(facts: ModelFacts, plan: Plan) -> str | None:
    """`--quantization` value when the engine must quantize a BF16 checkpoint at load time; None otherwise
    (pre-quantized checkpoints carry quantization_config and must not get the flag)."""
    if plan.quant == "fp8" and facts.native_storage.get("default") == "bf16" \
            and all(v == "bf16" for k, v in facts.native_storage.items() if k not in ("norms",)):
        return "fp8"
    return None


def gib(x: float) -> str:
    return f"{x / GiB:,.2f} GiB"


def floor_to(x: float, digits: int) -> float:
    s = 10 ** digits
    return math.floor(x * s + 1e-9) / s


def ceil_to(x: float, digits: int) -> float:
    s = 10 ** digits
    return math.ceil(x * s - 1e-9) / s


def per_replica(plan: Plan) -> int:
    return -(-plan.concurrency // plan.parallel.dp)


def on_amd(plan: Plan) -> bool:
    """The plan's accelerator is an AMD GPU (ROCm builds and environment)."""
    from optimizer.catalog.hardware import load_hardware
    acc = load_hardware().accelerators.get(plan.hardware.accelerator)
    return acc is not None and acc.vendor == "amd"


def script(cmd: Command, engine: str, header: list[str], version_check: str | None = None) -> str:
    """A bash launcher: strict mode, pinned version, required variables checked, then exec."""
    lines = ["#!/usr/bin/env bash", "set -euo pipefail",
             f"# generated by rigopt export for {engine} {ENGINE_VERSIONS.get(engine, '')} (pinned)"]
    lines += [f"# {h}" for h in header]
    for name in cmd.env_names:
        lines.append(f': "${{{name}:?set {name} (see EXPLAIN.md)}}"')
    if cmd.uses_export_dir:
        lines.append(EXPORT_DIR_LINE)
    if version_check:
        lines.append(version_check)
    lines += cmd.env_lines()
    lines.append("exec " + cmd.argv_shell())
    return "\n".join(lines) + "\n"
