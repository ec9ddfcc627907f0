"""What `rigopt place` reads: a `cheapest` plan (rigopt.plan/1) or a hand-written description, turned into
the few numbers placement needs; plus the plan's decode speed for a given expert placement."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from optimizer.catalog.hardware import get_node, load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.errors import InputError
from optimizer.estimate.deployment import Deployment, Hardware, Offload, evaluate, resident_weights
from optimizer.estimate.speed import ExpertTiers, SpeedEstimate
from optimizer.layout import Parallel
from optimizer.limits import (
    MAX_CONCURRENCY,
    MAX_CONTEXT_TOKENS,
    MAX_GPUS,
    MAX_LAYERS,
    MAX_NAME_CHARS,
    MAX_NESTING,
    MAX_NODES,
    MAX_PATH_CHARS,
    MAX_PLAN_BYTES,
    MAX_SIZE_BYTES,
    clip_for_message,
    exists,
    has_control,
    json_depth_ok,
    read_text_bounded,
)
from optimizer.solver.plan import PLAN_SCHEMA, Plan

_Gpus = Annotated[int, Field(ge=1, le=MAX_GPUS)]
_Bytes = Annotated[float, Field(ge=-MAX_SIZE_BYTES, le=MAX_SIZE_BYTES, allow_inf_nan=False)]
_Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class PlaceInput(BaseModel):
    """Hand-written form (JSON). Only `model` and `n_gpus` are required.

    ep_size: EP degree (experts spread over this many ranks; 1 = no EP). headroom_bytes: free device memory
    per GPU for redundant experts (None = not limited). offload_mode none|cpu|stream with gpu_expert_layers =
    MoE layers whose experts fit on the GPUs (the byte budget; per-expert engines may spend it on any experts)
    and host_expert_bytes = host DRAM available for experts (None = unlimited; the rest goes to NVMe)."""
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=MAX_PATH_CHARS)
    engine: _Name | None = None          # vllm | sglang | llamacpp | None (engine-neutral)
    quant: _Name = "native"
    kv_dtype: _Name | None = None
    context: int = Field(32768, ge=1, le=MAX_CONTEXT_TOKENS)
    concurrency: int = Field(1, ge=1, le=MAX_CONCURRENCY)
    node: _Name | None = None
    n_nodes: int = Field(1, ge=1, le=MAX_NODES)
    n_gpus: _Gpus
    tp: _Gpus = 1
    pp: _Gpus = 1
    dp: _Gpus = 1
    ep_size: _Gpus = 1
    domain_size: _Gpus | None = None     # GPUs per fast (NVLink) domain; default from the node topology
    headroom_bytes: _Bytes | None = None
    offload_mode: _Name = "none"
    gpu_expert_layers: int | None = Field(None, ge=0, le=MAX_LAYERS)
    offloaded_layers: list[Annotated[int, Field(ge=0, le=MAX_LAYERS)]] | None = Field(None, max_length=MAX_LAYERS)
    host_expert_bytes: _Bytes | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.n_gpus < 1 or self.ep_size < 1 or self.ep_size > self.n_gpus:
            raise ValueError("need 1 <= ep_size <= n_gpus")
        if self.engine not in (None, "vllm", "sglang", "llamacpp"):
            raise ValueError("engine must be vllm, sglang, llamacpp or null")
        if self.offload_mode not in ("none", "cpu", "stream"):
            raise ValueError("offload_mode must be none, cpu or stream")
        if has_control(self.model):
            raise ValueError(f"model contains a control character: {clip_for_message(self.model)}")
        if self.headroom_bytes is not None and self.headroom_bytes < 0:
            self.headroom_bytes = 0.0
        return self

    @classmethod
    def from_plan(cls, p: Plan, n_moe: int) -> PlaceInput:
        off = p.offload
        return cls(model=p.model, engine=p.engine, quant=p.quant, kv_dtype=p.kv_dtype, context=p.context,
                   concurrency=p.concurrency, node=p.hardware.node, n_nodes=p.hardware.n_nodes,
                   n_gpus=p.hardware.n_nodes * p.hardware.gpus_per_node, tp=p.parallel.tp, pp=p.parallel.pp,
                   dp=p.parallel.dp, ep_size=p.parallel.ep_size if p.parallel.ep else 1,
                   headroom_bytes=p.memory.headroom_bytes, offload_mode=off.mode,
                   gpu_expert_layers=(n_moe - off.expert_layers_offloaded) if off.mode != "none" else None,
                   offloaded_layers=off.offloaded_layers or None,
                   host_expert_bytes=(p.memory.host_capacity_bytes - (p.memory.host_used_bytes - off.host_bytes))
                   if off.mode != "none" else None)

    @cached_property
    def resolved(self):
        return resolve_model(self.model)


def read_input(path: str) -> PlaceInput:
    """A plan JSON from `cheapest --out`, or a hand-written PlaceInput JSON."""
    path = clip_for_message(str(path), MAX_PATH_CHARS) if len(str(path)) > MAX_PATH_CHARS else path
    p = Path(path)
    if not exists(p):
        raise InputError(f"plan {clip_for_message(path)}: not found")
    text = read_text_bounded(p, MAX_PLAN_BYTES, "plan")
    path = clip_for_message(str(path))
    if not json_depth_ok(text):
        raise InputError(f"plan {path}: nested deeper than {MAX_NESTING} levels")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"plan {path}: not valid JSON ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise InputError(f"plan {path}: expected a JSON object")
    try:
        if obj.get("schema_id") == PLAN_SCHEMA or "hardware" in obj:
            plan = Plan.model_validate(obj)
            spec = resolve_model(plan.model).spec
            return PlaceInput.from_plan(plan, len(spec.moe_layers))
        return PlaceInput.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "plan"
        raise InputError(f"plan {path}: {loc}: {err['msg']}") from None


def expert_bytes_per_layer(inp: PlaceInput) -> np.ndarray:
    """Bytes of one routed expert in each MoE layer, as the engine holds them (a GGUF file's exact bytes when the
    model is a file; the same weights `evaluate()` uses)."""
    m = inp.resolved
    _, w = resident_weights(m, inp.quant, inp.engine or "vllm", include_mtp=False)
    out = [w.per_layer_experts[i] / l.n_routed_experts for i, l in enumerate(m.spec.main_layers) if l.is_moe]
    return np.array(out, dtype=float)


def plan_deployment(inp: PlaceInput, tiers: ExpertTiers | None = None,
                    expert_imbalance: float | None = None) -> Deployment | None:
    """The deployment a placement input describes, with an expert tiering (ExpertTiers byte fractions) and/or
    a known EP step imbalance; None when no node is known."""
    if inp.node is None:
        return None
    m = inp.resolved
    node = get_node(inp.node)
    acc = load_hardware().accelerators[node.accelerator]
    n_moe = len(m.spec.moe_layers)
    off = Offload()
    if tiers is not None and n_moe and tiers.gpu < 1.0:
        mode = "stream" if tiers.stream else "cpu"
        off = Offload(mode=mode, dram_layers=(tiers.stream or tiers.cpu) * n_moe, nvme_layers=tiers.nvme * n_moe,
                      activation_share_gpu=tiers.activation_share_gpu)
    per_node = inp.n_gpus // max(inp.n_nodes, 1)
    return Deployment(model=m, quant=inp.quant, engine=inp.engine or "vllm",
                      hardware=Hardware(acc, node, inp.n_nodes, per_node),
                      parallel=Parallel(tp=inp.tp, pp=inp.pp, dp=inp.dp, ep=inp.ep_size > 1), context=inp.context,
                      concurrency=inp.concurrency, kv_dtype=inp.kv_dtype, offload=off,
                      expert_imbalance=expert_imbalance)


def plan_speed(inp: PlaceInput, tiers: ExpertTiers | None = None,
               expert_imbalance: float | None = None) -> SpeedEstimate:
    """Decode speed of the plan with a given ExpertTiers / EP imbalance (callers check that a node is known)."""
    d = plan_deployment(inp, tiers, expert_imbalance)
    if d is None:
        raise InputError("the placement input names no node type: no speed to report")
    return evaluate(d).decode
