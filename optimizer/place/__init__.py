"""MoE expert placement across GPUs, host DRAM and NVMe (`rigopt place`).

Public API:
    run(plan_json, loads, seed, redundant) -> PlacementResult     (the CLI's whole job before printing)
    place(PlaceInput, Loads, redundant) -> PlacementResult
    expected_imbalance(spec, ep_size, redundant, loads) -> float  (for `cheapest`: EP step-time factor)
    load_aware_gpu_share(spec, gpu_layers_or_experts, loads) -> float  (for `cheapest`: ExpertTiers share)
"""

from __future__ import annotations

from optimizer.place.api import expected_imbalance, load_aware_gpu_share
from optimizer.place.loads import Loads, generate, read_loads, resolve_loads
from optimizer.place.report import PlacementResult, place, render, run, write_outputs

__all__ = ["Loads", "PlacementResult", "expected_imbalance", "generate", "load_aware_gpu_share", "place",
           "read_loads", "render", "resolve_loads", "run", "write_outputs"]
