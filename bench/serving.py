"""Published serving benchmarks vs rigopt's serving model: TPOT, TTFT and output tok/s per GPU.

    python bench/serving.py            # table of every comparable row, then the median |error| per metric,
                                       # then each batch sweep (TPOT and output tok/s vs concurrency)
    python bench/serving.py --refit    # the same with every factor refitted in memory on the current rows (what
                                       # `bench/fidelity.py --fit` would store; writes nothing)

Rows: measurements/serving_measurements.yaml (each quoted and sourced); how a row is predicted is in
optimizer/fidelity/serving.py. Two serving factors (the per-sequence step and the TTFT cost) are fitted on these
rows, so this table is in sample; the cross-validated errors (each source predicted without its own rows) are what
`python bench/fidelity.py` prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.fidelity.serving import METRICS, concurrency_of, medians, run, sweeps  # noqa: E402


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refit", action="store_true",
                    help="predict with factors refitted in memory on the current rows (writes nothing)")
    if ap.parse_args(argv).refit:
        from optimizer.fidelity import calibrate as C
        fs = C.fit_all()
        print(f"in-memory refit: per-sequence cost {(fs.seq_step_s or 0.0) * 1e3:.3f} ms, N_sat {fs.seq_saturation}, "
              f"TTFT overhead {fs.ttft_overhead_s} s\n")
        with C.applied(fs):
            report()
    else:
        report()


def report() -> None:
    cases, skipped = run()
    print(f"{'id':58} {'engine':7} {'hardware':28} {'workload':16} "
          + " ".join(f"{m + ' meas/pred/err':>30}" for m in METRICS))
    for c in cases:
        cells = []
        for m in METRICS:
            e = c.error(m)
            cells.append(f"{_fmt(c.measured.get(m)):>9}/{_fmt(c.predicted.get(m)):>9}/"
                         f"{'-' if e is None else f'{e:+.0%}':>7}".rjust(30))
        print(f"{c.id[:58]:58} {c.engine:7} {c.hardware[:28]:28} {c.workload:16} " + " ".join(cells))
    for rid, why in skipped:
        print(f"skipped {rid}: {why}")
    print()
    sources = len({c.source for c in cases})
    print(f"{len(cases)} published serving benchmarks from {sources} sources "
          f"({len({c.engine for c in cases})} engines, {len({c.hardware.split()[1] for c in cases})} GPU types)")
    for m, (n, med) in medians(cases).items():
        print(f"median |error| {m:22} {med:7.1%}  (n={n})")
    found = sweeps(cases)
    print()
    print(f"{len(found)} batch sweeps (one source, model, engine and GPU type at 3+ concurrencies): "
          "measured / predicted / error per point")
    for sw in found:
        c0 = sw[0]
        print(f"\n{c0.model} on {c0.hardware.split(' ')[1]}, {c0.engine}, {c0.workload.rsplit(' ', 1)[0]}  "
              f"({c0.source.split(' ')[0]})")
        print(f"  {'conc':>5} {'layout':16} {'TPOT ms meas/pred/err':>30} {'out tok/s/GPU meas/pred/err':>34}")
        for c in sw:
            cells = []
            for m, w in (("tpot_ms", 30), ("output_tok_s_per_gpu", 34)):
                e = c.error(m)
                cells.append(f"{_fmt(c.measured.get(m)):>9}/{_fmt(c.predicted.get(m)):>9}/"
                             f"{'-' if e is None else f'{e:+.0%}':>7}".rjust(w))
            print(f"  {concurrency_of(c):>5} {' '.join(c.hardware.split(' ')[2:])[:16]:16} " + " ".join(cells))


if __name__ == "__main__":
    main()
