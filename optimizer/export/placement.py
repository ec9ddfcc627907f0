"""`rigopt export PLAN --placement PLACEMENT.json`: a `rigopt place` result turned into the launch flags that
carry it, and the files those flags reference (written beside the launch scripts, so nothing points at a file
that does not exist).

- vLLM: the placement's redundancy as `--enable-eplb --eplb-config` (vLLM builds its own map online).
- SGLang EP: `--ep-num-redundant-experts R --init-expert-location "${RIGOPT_EXPORT_DIR}/expert-location.json"`
  (the launch script's own folder, so the export can be copied), the file holding exactly
  `{"physical_to_logical_map": [...]}`.
- SGLang + KTransformers: `--kt-num-gpu-experts N` from the placement's tiering.
- llama.cpp: the layers whose expert tensors the placement keeps in host memory (`-ot` / `--n-cpu-moe`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from optimizer.errors import InputError
from optimizer.export.common import Arg, in_export_dir
from optimizer.limits import MAX_EXPERTS, MAX_GPUS, MAX_LAYERS, check_int, clip_for_message, read_text_bounded
from optimizer.place import export as place_export
from optimizer.place.report import PLACE_SCHEMA, PlacementResult
from optimizer.solver.plan import Plan

EXPERT_LOCATION_FILE = "expert-location.json"
MAX_PLACEMENT_BYTES = 64 * 2**20


@dataclass
class AppliedPlacement:
    plan: Plan
    redundant_experts: int | None = None
    expert_location: Arg | None = None      # path the SGLang flag names (beside the launch script)
    kt_gpu_experts: int | None = None
    files: list[tuple[str, str]] = field(default_factory=list)  # (file name in the out dir, content)


def read_placement(path: str) -> PlacementResult:
    text = read_text_bounded(Path(path), MAX_PLACEMENT_BYTES, "placement")
    try:
        r = PlacementResult.model_validate_json(text)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "placement"
        raise InputError(f"placement {clip_for_message(path)}: {loc}: {err['msg']}") from None
    if r.schema_id != PLACE_SCHEMA:
        raise InputError(f"placement {clip_for_message(path)}: not a rigopt place result ({PLACE_SCHEMA})")
    _check_ranges(r, f"placement {clip_for_message(path)}")
    return r


def _check_ranges(r: PlacementResult, label: str) -> None:
    """Every count and index a launch flag or written file takes from the placement, within the input limits
    (pydantic checked only the types: n_gpus 10**18 or -1 was read as given)."""
    check_int(r.n_gpus, f"{label}: n_gpus", 1, MAX_GPUS)
    if r.ep is not None:
        ep = r.ep
        check_int(ep.ep_size, f"{label}: ep.ep_size", 1, MAX_GPUS)
        check_int(ep.domain_size, f"{label}: ep.domain_size", 1, MAX_GPUS)
        check_int(ep.redundant_per_layer, f"{label}: ep.redundant_per_layer", 0, MAX_EXPERTS)
        if len(ep.layers) > MAX_LAYERS:
            raise InputError(f"{label}: ep.layers holds {len(ep.layers):,} layers (limit {MAX_LAYERS})")
        for x in ep.layers:
            check_int(x.layer, f"{label}: ep.layers[].layer", 0, MAX_LAYERS - 1)
            if len(x.slots) != ep.ep_size:
                raise InputError(f"{label}: layer {x.layer}: {len(x.slots)} ranks of slots, ep_size is {ep.ep_size}")
            for rank in x.slots:
                if len(rank) > 2 * MAX_EXPERTS or any(not 0 <= e < MAX_EXPERTS for e in rank):
                    raise InputError(f"{label}: layer {x.layer}: slots must be expert ids within 0..{MAX_EXPERTS - 1}")
    if r.tiers is not None:
        t = r.tiers
        if t.gpu_experts_per_layer is not None:
            check_int(t.gpu_experts_per_layer, f"{label}: tiers.gpu_experts_per_layer", 0, MAX_EXPERTS)
        if len(t.layers) > MAX_LAYERS:
            raise InputError(f"{label}: tiers.layers holds {len(t.layers):,} layers (limit {MAX_LAYERS})")
        for tl in t.layers:
            check_int(tl.layer, f"{label}: tiers.layers[].layer", 0, MAX_LAYERS - 1)
            for name, ids in (("gpu", tl.gpu), ("dram", tl.dram), ("nvme", tl.nvme)):
                if len(ids) > MAX_EXPERTS or any(not 0 <= e < MAX_EXPERTS for e in ids):
                    raise InputError(f"{label}: layer {tl.layer}: {name} must list expert ids within "
                                     f"0..{MAX_EXPERTS - 1}")


def apply(plan: Plan, placement: PlacementResult, engine: str, out_dir: Path | None) -> AppliedPlacement:
    if placement.model != plan.model:
        raise InputError(f"the placement is for {clip_for_message(placement.model)}, the plan for "
                         f"{clip_for_message(plan.model)}")
    if placement.engine not in (None, engine):
        raise InputError(f"the placement was made for {placement.engine}; export it with --engine {placement.engine}")
    out = AppliedPlacement(plan=plan)
    if placement.ep is not None:
        # 0 is a placement too (a rebalanced map without spare slots): exported as `place` prints it
        out.redundant_experts = placement.ep.redundant_per_layer
        if engine == "sglang":
            if out_dir is None:
                raise InputError("an SGLang expert placement is a file its flag names: give --out DIR")
            out.files.append((EXPERT_LOCATION_FILE,
                              place_export.sglang_map_json([x.slots for x in placement.ep.layers]) + "\n"))
            out.expert_location = in_export_dir(EXPERT_LOCATION_FILE)  # relative to the script: portable
    if placement.tiers is not None:
        t = placement.tiers
        if engine == "sglang" and t.gpu_experts_per_layer is not None:
            out.kt_gpu_experts = t.gpu_experts_per_layer
        if engine == "llamacpp":
            dram = sorted(x.layer for x in placement.tiers.layers if not x.gpu and x.dram)
            nvme = sorted(x.layer for x in placement.tiers.layers if not x.gpu and not x.dram and x.nvme)
            off = plan.offload.model_copy(update={"offloaded_layers": dram, "nvme_layers": nvme,
                                                  "expert_layers_offloaded": len(dram)})
            out.plan = plan.model_copy(update={"offload": off})
    return out
