"""Offload placement: which routed experts stay on the GPU, which live in host DRAM and which on NVMe.

Granularity follows the engine: llama.cpp (and vLLM's weight offload) move whole per-layer expert tensors
(`blk.N.ffn_{gate,up,down}_exps`), so a layer's experts are all on one tier; KTransformers (SGLang
`--kt-num-gpu-experts N`) keeps N experts *per layer* on the GPU and picks them by frequency. The fastest
tier gets the most-used units; the rest go to DRAM, and only what DRAM cannot hold goes to NVMe (coldest
first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TierPlacement:
    granularity: str                 # "layer" | "expert"
    tier: np.ndarray                 # [layers, experts]: 0 GPU, 1 DRAM, 2 NVMe
    shares: np.ndarray               # [layers, experts] activation shares (rows sum to 1)
    expert_bytes: np.ndarray         # [layers] bytes of one expert
    gpu_experts_per_layer: int | None = None  # expert granularity: N of --kt-num-gpu-experts

    def activation_share(self, t: int) -> float:
        """Share of all token-expert activations served by tier t."""
        return float((self.shares * (self.tier == t)).sum() / self.shares.shape[0])

    def byte_fraction(self, t: int) -> float:
        b = (self.tier == t) * self.expert_bytes[:, None]
        return float(b.sum() / (self.expert_bytes.sum() * self.tier.shape[1]))

    def layers_on(self, t: int) -> list[int]:
        """Layer ordinals whose experts all sit on tier t."""
        return [l for l in range(self.tier.shape[0]) if np.all(self.tier[l] == t)]


def layer_work(shares: np.ndarray, k: int, batch: int, expert_bytes: np.ndarray) -> np.ndarray:
    """Expected routed-expert bytes a layer reads per decode step at `batch` tokens (distinct experts
    touched). At batch 1 every layer reads k experts, so layers tie; skew matters from batch > 1 on."""
    p = np.minimum(1.0, shares * k)
    touched = 1.0 - (1.0 - p) ** max(batch, 1)
    return touched.sum(axis=1) * expert_bytes


def _spill(tier: np.ndarray, value: np.ndarray, size: np.ndarray, dram_bytes: float | None) -> None:
    """Move the coldest off-GPU units from DRAM to NVMe until DRAM holds the rest."""
    if dram_bytes is None:
        return
    off = np.argwhere(tier == 1)
    used = float(size[tuple(off.T)].sum()) if len(off) else 0.0
    if used <= dram_bytes:
        return
    order = sorted(map(tuple, off), key=lambda ix: (value[ix], ix))
    for ix in order:
        if used <= dram_bytes:
            break
        tier[ix] = 2
        used -= size[ix]


def place_layers(shares: np.ndarray, expert_bytes: np.ndarray, k: int, batch: int, gpu_bytes: float,
                 dram_bytes: float | None = None, prefer: list[int] | None = None) -> TierPlacement:
    """Per-layer granularity: the layers with the most expected expert work per byte stay on the GPU (ties:
    `prefer` order, e.g. the plan's own choice, then lowest layer first)."""
    L, E = shares.shape
    work = layer_work(shares, k, batch, expert_bytes)
    size = expert_bytes * E
    rank = {l: i for i, l in enumerate(prefer or [])}
    order = sorted(range(L), key=lambda l: (-round(work[l] / size[l], 9), rank.get(l, L + l)))
    tier = np.ones((L, E), dtype=int)
    used = 0.0
    for l in order:
        if used + size[l] <= gpu_bytes * (1 + 1e-12):
            tier[l] = 0
            used += size[l]
    layer_tier = tier[:, 0].copy()
    _spill(layer_tier, work / size, size, dram_bytes)
    tier[:] = layer_tier[:, None]
    return TierPlacement("layer", tier, shares, expert_bytes)


def place_experts(shares: np.ndarray, expert_bytes: np.ndarray, gpu_bytes: float,
                  dram_bytes: float | None = None, per_layer: bool = True) -> TierPlacement:
    """Per-expert granularity. per_layer=True: the same count N on the GPU in every layer (KTransformers
    `--kt-num-gpu-experts N`), the N most-used of each layer; False: the most-used (layer, expert) pairs
    overall, by share per byte."""
    L, E = shares.shape
    tier = np.ones((L, E), dtype=int)
    n = None
    if per_layer:
        n = int(min(E, gpu_bytes // float(expert_bytes.sum()))) if expert_bytes.sum() > 0 else 0
        for l in range(L):
            tier[l, np.argsort(-shares[l], kind="stable")[:n]] = 0
    else:
        dens = shares / expert_bytes[:, None]
        used = 0.0
        for ix in np.dstack(np.unravel_index(np.argsort(-dens, axis=None, kind="stable"), dens.shape))[0]:
            l, e = int(ix[0]), int(ix[1])
            if used + expert_bytes[l] <= gpu_bytes * (1 + 1e-12):
                tier[l, e] = 0
                used += expert_bytes[l]
    size = np.repeat(expert_bytes[:, None], E, axis=1)
    _spill(tier, shares / size, size, dram_bytes)
    return TierPlacement("expert", tier, shares, expert_bytes, n)


def uniform_split(shares: np.ndarray, expert_bytes: np.ndarray, gpu_layers: list[int]) -> TierPlacement:
    """The load-blind reference: a fixed layer range on the GPU, everything else in DRAM."""
    L, E = shares.shape
    tier = np.ones((L, E), dtype=int)
    tier[gpu_layers] = 0
    return TierPlacement("layer", tier, shares, expert_bytes)
