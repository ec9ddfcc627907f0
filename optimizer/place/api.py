"""Small functions `cheapest` can call to use load statistics (no CP-SAT: greedy + local search only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optimizer.arch.spec import ModelSpec
from optimizer.errors import InputError
from optimizer.place.ep import greedy_layer, place_layer, slot_caps
from optimizer.place.loads import Loads, resolve_loads

_MEMO: dict = {}


def _loads(spec: ModelSpec, loads: Loads | str | None, seed: int) -> Loads:
    moe = spec.moe_layers
    if not moe:
        raise InputError(f"{spec.name} has no routed experts")
    if isinstance(loads, Loads):
        if loads.counts.shape != (len(moe), moe[0].n_routed_experts):
            raise InputError(f"loads {loads.source}: shape {list(loads.counts.shape)} does not fit {spec.name}")
        return loads
    return resolve_loads(loads, len(moe), moe[0].n_routed_experts, seed, [l.index for l in moe])


def expected_imbalance(spec: ModelSpec, ep_size: int, redundant: int, loads: Loads | str | None = "uniform",
                       seed: int = 0, baseline: bool = False) -> float:
    """Mean over MoE layers of (busiest EP rank's expected load / mean rank load) for rigopt's placement
    (baseline=True: the greedy EPLB-style placement). Pass it as `decode_speed(..., expert_imbalance=...)`.
    `redundant` is per layer; (E + redundant) slots are spread over ep_size ranks."""
    if ep_size <= 1:
        return 1.0
    L = _loads(spec, loads, seed)
    key = (id(L.counts), L.counts.shape, float(L.counts.sum()), spec.name, ep_size, redundant, baseline)
    if key in _MEMO:
        return _MEMO[key]
    E = spec.moe_layers[0].n_routed_experts
    caps = slot_caps(E, redundant, ep_size)
    vals = []
    for i in range(L.n_layers):
        w = L.counts[i]
        b = greedy_layer(w, caps)
        p = b if baseline else place_layer(w, caps, time_limit=0.0, baseline=b)
        vals.append(p.max_load / (w.sum() / ep_size))
    _MEMO[key] = out = float(np.mean(vals))
    return out


def load_aware_gpu_share(spec: ModelSpec, gpu: int | Sequence[int], loads: Loads | str | None = "uniform",
                         seed: int = 0) -> float:
    """Share of token-expert activations served by GPU-resident experts.

    gpu = an int N: the N most-used experts of every MoE layer stay on the GPU (KTransformers
    --kt-num-gpu-experts N with frequency placement); gpu = a sequence of main-layer indices: those layers'
    whole expert tensors stay on the GPU (llama.cpp / vLLM per-layer granularity). Pass the result as
    `ExpertTiers(gpu=..., cpu=..., activation_share_gpu=share)`."""
    L = _loads(spec, loads, seed)
    sh = L.shares()
    if isinstance(gpu, (int, np.integer)):
        n = int(gpu)
        if n < 0:
            raise InputError("GPU experts per layer must be >= 0")
        top = -np.sort(-sh, axis=1)[:, :n]
        return float(top.sum() / L.n_layers)
    pos = {l.index: o for o, l in enumerate(spec.moe_layers)}
    bad = [i for i in gpu if i not in pos]
    if bad:
        raise InputError(f"layers {bad} are not MoE layers of {spec.name}")
    return float(sum(sh[pos[i]].sum() for i in set(gpu)) / L.n_layers)


def kt_experts_per_layer(spec: ModelSpec, n_gpu_layers: float) -> int:
    """GPU experts per layer that the byte budget of `n_gpu_layers` whole expert layers buys (equal layers)."""
    moe = spec.moe_layers
    return int(n_gpu_layers * moe[0].n_routed_experts // len(moe))
