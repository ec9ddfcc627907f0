"""rigopt against the single-stream (and serving) measurements, row by row, IN SAMPLE: the factors are fitted on
these rows too. The honest, cross-validated errors (each source predicted by factors fitted without it) are what
`python bench/fidelity.py` prints; this script lists every row and every row that cannot be compared, with why.

    python bench/heldout.py          # per-row table, rows skipped with the reason, median |error| per metric

Single-stream decode and prefill rows: measurements/local_measurements.yaml (llama-bench tables, server timing
lines); serving rows: measurements/serving_measurements.yaml (also printed by bench/serving.py).
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.fidelity import heldout, serving  # noqa: E402


def main() -> None:
    cases, skipped = heldout.run()
    print(f"{'id':64} {'engine':9} {'hardware':24} {'measured':>10} {'predicted':>10} {'error':>7}")
    for c in cases:
        print(f"{c.id[:64]:64} {c.engine:9} {c.hardware:24} {c.measured:10.1f} {c.predicted:10.1f} {c.error:+7.0%}")
    print()
    reasons = collections.Counter(why for _, why in skipped)
    print(f"{len(skipped)} local rows not compared:")
    for why, n in reasons.most_common():
        print(f"  {n:3}  {why}")
    print()
    print(f"single-stream rows (in sample; cross-validated: python bench/fidelity.py): {len(cases)} from "
          f"{len({c.source for c in cases})} sources")
    for metric, (n, med) in heldout.medians(cases).items():
        print(f"median |error| {metric:22} {med:7.1%}  (n={n})")
    scases, sskipped = serving.run()
    print(f"serving rows (in sample): {len(scases)} from {len({c.source for c in scases})} sources "
          f"(python bench/serving.py for the table)")
    for metric, (n, med) in serving.medians(scases).items():
        print(f"median |error| {metric:22} {med:7.1%}  (n={n})")


if __name__ == "__main__":
    main()
