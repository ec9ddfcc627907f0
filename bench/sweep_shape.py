"""Which per-sequence decode cost do the published batch sweeps imply, once a base-step error common to a sweep
cancels? (issue 21: fit the batched decode step on published sweeps.)

    python bench/sweep_shape.py        # per (N_sat, cost) on a grid: the median |shape error| over every later point
                                       # of every sweep with 3+ TPOT points, and the median level error at each
                                       # sweep's lowest concurrency; then the grid point with the lowest shape error

Reads nothing but measurements/serving_measurements.yaml and writes nothing. The decode and prefill factors are
refitted in memory on the current rows (calibrate.fit_all, as `bench/fidelity.py --fit` would, without writing)
and the per-sequence cost and its saturation point are then set by the grid, not fitted. Under a minute of CPU.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.fidelity import calibrate as C  # noqa: E402
from optimizer.fidelity.serving import predict, run, serving_rows, sweep_shape, sweeps  # noqa: E402

COSTS_MS = (0.0, 0.05, 0.1, 0.144, 0.2, 0.3, 0.4, 0.5, 0.6)


def main() -> None:
    fs = C.fit_all()
    found = [s for s in sweeps(run()[0]) if sweep_shape(s) is not None]
    ids = {c.id for s in found for c in s}
    rows = [r for r in serving_rows() if r["id"] in ids]
    print(f"{len(found)} sweeps with 3+ TPOT points ({len(rows)} rows); in-memory refit: per-sequence cost "
          f"{fs.seq_step_s * 1e3:.3f} ms, N_sat {fs.seq_saturation:g}")
    print(f"{'N_sat':>6} {'cost ms/seq':>11} {'median |shape err|':>19} {'mean |shape err|':>17} "
          f"{'median level err':>17}")
    best: tuple[float, float, float] | None = None
    for sat in C.SEQ_SATURATION_GRID:
        for cost_ms in COSTS_MS:
            with C.applied(C.FitSet(fs.decode, fs.prefill_mfu, fs.ttft_overhead_s, cost_ms / 1e3, seq_saturation=sat)):
                pred = {r["id"]: predict(r).predicted["tpot_ms"] for r in rows}
            shapes = [sh for s in found if (sh := sweep_shape(s, pred)) is not None]
            errs = [abs(e) for sh in shapes for e in sh.shape]
            med = statistics.median(errs)
            print(f"{sat:6g} {cost_ms:11.3f} {med:19.1%} {statistics.mean(errs):17.1%} "
                  f"{statistics.median(sh.level for sh in shapes):+17.0%}")
            if best is None or med < best[0]:
                best = (med, sat, cost_ms)
    assert best is not None
    print(f"\nlowest median |shape error| {best[0]:.1%} at N_sat {best[1]:g}, {best[2]:.3f} ms per sequence")


if __name__ == "__main__":
    main()
