"""Re-export of the load-aware factors, which live in `optimizer.moe.imbalance` (below solver/ and place/).

Kept so existing callers (`solver/candidates.py`, `solver/validate.py`) work unchanged.
TODO(issue 11): the lead switches those imports to `optimizer.moe.imbalance` and removes this module."""

from __future__ import annotations

from optimizer.moe.imbalance import expected_imbalance, kt_experts_per_layer, load_aware_gpu_share

__all__ = ["expected_imbalance", "kt_experts_per_layer", "load_aware_gpu_share"]
