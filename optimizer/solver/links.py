"""Re-export: the plan-links query moved to `optimizer.topology_links` (next to `optimizer.topology`).

TODO(issue 11): the lead switches `solver/candidates.py`, `solver/validate.py`, `report/estimate.py`,
`fidelity/predict.py` and `place/inputs.py` to `optimizer.topology_links` and removes this module."""

from __future__ import annotations

from optimizer.topology_links import plan_links

__all__ = ["plan_links"]
