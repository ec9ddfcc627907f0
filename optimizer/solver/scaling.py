"""The only place integer scales live. CP-SAT sees integers; everything else uses floats.

Rounding is conservative: quantities that must stay below a limit are rounded up, limits are rounded down,
so a plan feasible in integers is feasible in floats (the independent checker confirms it).
"""

from __future__ import annotations

import math

MIB = 2**20            # memory unit: 1 MiB
NS = 1e-9              # time unit: 1 ns
USD_CENTS = 0.01       # capex unit
MILLI_USD_H = 0.001    # hourly unit: 1/1000 USD per hour
WATT = 1.0             # power unit
GB_DRAM = 10**9        # host-RAM purchase unit: 1 GB (DIMMs are sold in GB)

COST_UNIT = {"capex": USD_CENTS, "hourly": MILLI_USD_H, "power": WATT}


def up(x: float, unit: float) -> int:
    return int(math.ceil(x / unit - 1e-9))


def down(x: float, unit: float) -> int:
    return int(math.floor(x / unit + 1e-9))
