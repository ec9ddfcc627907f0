"""MoE expert placement across GPUs, host DRAM and NVMe (`rigopt place`).

Public API (import from the modules; this package file imports nothing, so `optimizer.place.loads` can be used
by lower layers without loading the placement code):
    optimizer.place.report: run(plan_json, loads, seed, redundant) -> PlacementResult, place(PlaceInput, Loads,
        redundant) -> PlacementResult, render, write_outputs
    optimizer.place.loads: Loads, generate, read_loads, resolve_loads
    optimizer.moe.imbalance: expected_imbalance, load_aware_gpu_share, kt_experts_per_layer (for `cheapest`)
"""
