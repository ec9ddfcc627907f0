"""Integer units of the mixed-hardware model (one named unit per quantity) and the rounding rule.

Rounding is conservative, as in `optimizer/solver/scaling.py`: every quantity that must stay below a limit
(bytes used, time taken, money spent) is rounded UP per coefficient, every limit (device budget, DRAM, NVMe, time
target, money budget) is rounded DOWN. A plan feasible in integers is therefore feasible in floats, and its integer
decode time is an upper bound of the float time (by at most one unit per coefficient summed); the independent check
(`optimizer/hetero/validate.py`) re-evaluates every plan in floats.
"""

from __future__ import annotations

from optimizer.solver.scaling import down, up  # the same rounding functions as the single-type table

DEV_MEM_UNIT = 2**20  # device memory: 1 MiB
HOST_MEM_UNIT = 10**6  # host DRAM / NVMe: 1 MB, so a purchased GB is exactly 1000 units
GB_UNITS = 1000  # host units per purchased GB
TIME_UNIT = 1e-8  # decode time: 10 ns (a 61-layer plan sums ~300 coefficients: <= 3 us of rounding)
COST_UNIT = 1.0  # purchases: whole USD (prices are street-price estimates; cents would be false precision)

__all__ = ["DEV_MEM_UNIT", "HOST_MEM_UNIT", "GB_UNITS", "TIME_UNIT", "COST_UNIT", "up", "down"]
