"""The only place integer scales live. CP-SAT sees integers; everything else uses floats.

One named unit per quantity (the integer 1 in the solver means one of these):

    quantity                         unit                    name
    device memory (per GPU)          1 MiB  = 2**20 bytes    DEVICE_MEMORY_UNIT_BYTES
    host memory (DRAM, NVMe)         1 MB   = 10**6 bytes    HOST_MEMORY_UNIT_BYTES
    DRAM purchase                    1 GB   = 10**9 bytes    DRAM_PURCHASE_UNIT_BYTES (= DRAM_GB_IN_HOST_UNITS MB)
    time (decode step, TTFT)         1 ns                    TIME_UNIT_S
    cost, by objective               capex: 1 US cent, hourly: 1/1000 USD per hour, power: 1 W     COST_UNIT

Rounding rule (conservative, so that a plan feasible in integers is feasible in floats, which the independent
checker confirms): a quantity that must stay below a limit (memory used, time, cost) is rounded up with
`round_up`; a limit or a capacity (memory budget, installed DRAM, NVMe, target step time, budget cap) is rounded
down with `round_down`; a quantity that is subtracted from a use (memory freed per offloaded layer) is rounded
down in magnitude when it frees and up when it adds. The 1e-9 tolerance keeps exact multiples exact despite
binary floating point (2**20 / 2**20 stays 1, not 2).
"""

from __future__ import annotations

import math

DEVICE_MEMORY_UNIT_BYTES = 2**20     # 1 MiB
HOST_MEMORY_UNIT_BYTES = 10**6       # 1 MB: a purchased GB is exactly DRAM_GB_IN_HOST_UNITS units
DRAM_PURCHASE_UNIT_BYTES = 10**9     # 1 GB: DIMMs are sold in GB
DRAM_GB_IN_HOST_UNITS = DRAM_PURCHASE_UNIT_BYTES // HOST_MEMORY_UNIT_BYTES
TIME_UNIT_S = 1e-9                   # 1 ns

USD_CENTS = 0.01                     # capex unit (USD)
MILLI_USD_H = 0.001                  # hourly unit (USD per hour)
WATT = 1.0                           # power unit (W)
COST_UNIT = {"capex": USD_CENTS, "hourly": MILLI_USD_H, "power": WATT}

_TOLERANCE = 1e-9


def round_up(x: float, unit: float) -> int:
    """x in whole units, rounded up (uses: memory, time, cost)."""
    return int(math.ceil(x / unit - _TOLERANCE))


def round_down(x: float, unit: float) -> int:
    """x in whole units, rounded down (limits and capacities)."""
    return int(math.floor(x / unit + _TOLERANCE))


# Short names kept for existing callers.
MIB = DEVICE_MEMORY_UNIT_BYTES
NS = TIME_UNIT_S
GB_DRAM = DRAM_PURCHASE_UNIT_BYTES
up = round_up
down = round_down
