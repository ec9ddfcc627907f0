"""Serving fleets: traffic and SLAs in, the cheapest fleet out (`rigopt fleet`).

offers.py (rented shapes, bought servers whole or partly filled) -> capacity.py (per-replica capacity within the
SLA, from evaluate()) -> model.py (CP-SAT over pool counts: replicas, disaggregated prefill/decode, mixed GPU
types) -> solve.py (orchestration, independent check) ; money.py ($/M tokens, break-even volumes)."""

from optimizer.fleet.money import ApiPrice
from optimizer.fleet.solve import FleetQuery, FleetResult, solve_fleet

__all__ = ["ApiPrice", "FleetQuery", "FleetResult", "solve_fleet"]
