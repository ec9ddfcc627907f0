"""Load-aware factors the planner uses (no CP-SAT: replication + LPT + swap local search only).

`expected_imbalance` is the EP step-time factor; `load_aware_gpu_share` the share of token-expert activations
GPU-resident experts serve; `kt_experts_per_layer` how many experts per layer a byte budget buys."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optimizer.arch.spec import ModelSpec
from optimizer.cache import BoundedCache, fingerprint
from optimizer.errors import InputError
from optimizer.moe.balance import greedy_layer, heuristic_layer, slot_caps
from optimizer.place.loads import Loads, resolve_loads

# (load-counts digest, model, ep_size, redundant, baseline) -> mean imbalance; a few hundred entries cover a
# catalogue-wide search (one per EP size and model), each a float.
_IMBALANCE: BoundedCache[tuple[str, str, int, int, bool], float] = BoundedCache("moe.expected_imbalance", 512)


def _loads(spec: ModelSpec, loads: Loads | str | None, seed: int) -> Loads:
    moe = spec.moe_layers
    if not moe:
        raise InputError(f"{spec.name} has no routed experts")
    if isinstance(loads, Loads):
        if loads.counts.shape != (len(moe), moe[0].n_routed_experts):
            raise InputError(f"loads {loads.source}: shape {list(loads.counts.shape)} does not fit {spec.name}")
        return loads
    return resolve_loads(loads, len(moe), moe[0].n_routed_experts, seed, [layer.index for layer in moe])


def expected_imbalance(spec: ModelSpec, ep_size: int, redundant: int, loads: Loads | str | None = "uniform",
                       seed: int = 0, baseline: bool = False) -> float:
    """Mean over MoE layers of (busiest EP rank's expected load / mean rank load) for rigopt's placement
    (baseline=True: the greedy EPLB-style placement). Pass it as `decode_speed(..., expert_imbalance=...)`.
    `redundant` is per layer; (E + redundant) slots are spread over ep_size ranks."""
    if ep_size <= 1:
        return 1.0
    counts = _loads(spec, loads, seed).counts
    key = (fingerprint(counts), spec.name, ep_size, redundant, baseline)
    return _IMBALANCE.get_or_compute(key, lambda: _mean_imbalance(counts, spec, ep_size, redundant, baseline))


def _mean_imbalance(counts: np.ndarray, spec: ModelSpec, ep_size: int, redundant: int, baseline: bool) -> float:
    caps = slot_caps(spec.moe_layers[0].n_routed_experts, redundant, ep_size)
    vals = []
    for w in counts:
        greedy = greedy_layer(w, caps)
        p = greedy if baseline else heuristic_layer(w, caps, baseline=greedy)
        if not p.optimal and greedy.max_load < p.max_load:   # never worse than the greedy baseline
            p = greedy
        vals.append(p.max_load / (w.sum() / ep_size))
    return float(np.mean(vals))


def load_aware_gpu_share(spec: ModelSpec, gpu: int | Sequence[int], loads: Loads | str | None = "uniform",
                         seed: int = 0) -> float:
    """Share of token-expert activations served by GPU-resident experts.

    gpu = an int N: the N most-used experts of every MoE layer stay on the GPU (KTransformers
    --kt-num-gpu-experts N with frequency placement); gpu = a sequence of main-layer indices: those layers'
    whole expert tensors stay on the GPU (llama.cpp / vLLM per-layer granularity). Pass the result as
    `ExpertTiers(gpu=..., cpu=..., activation_share_gpu=share)`."""
    resolved = _loads(spec, loads, seed)
    sh = resolved.shares()
    if isinstance(gpu, (int, np.integer)):
        n = int(gpu)
        if n < 0:
            raise InputError("GPU experts per layer must be >= 0")
        top = -np.sort(-sh, axis=1)[:, :n]
        return float(top.sum() / resolved.n_layers)
    pos = {layer.index: o for o, layer in enumerate(spec.moe_layers)}
    bad = [i for i in gpu if i not in pos]
    if bad:
        raise InputError(f"layers {bad} are not MoE layers of {spec.name}")
    return float(sum(sh[pos[i]].sum() for i in set(gpu)) / resolved.n_layers)


def kt_experts_per_layer(spec: ModelSpec, n_gpu_layers: float) -> int:
    """GPU experts per layer that the byte budget of `n_gpu_layers` whole expert layers buys (equal layers)."""
    moe = spec.moe_layers
    return int(n_gpu_layers * moe[0].n_routed_experts // len(moe))
