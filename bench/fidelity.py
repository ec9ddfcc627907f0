"""Print rigopt's fidelity: every sourced measurement vs rigopt's prediction, cross-validated by source, model
family and hardware class.

    python bench/fidelity.py              # leave-one-source-out CV summary per metric and regime, and per scheme
                                          # (source / family / hardware class) median, p90, signed median and 80%
                                          # interval coverage (last fit's)
    python bench/fidelity.py --recompute  # ... re-running the three cross-validations (about a minute of CPU)
    python bench/fidelity.py --rows       # ... and every row (measured, in-sample, cross-validated)
    python bench/fidelity.py --json
    python bench/fidelity.py --markdown   # the per-metric and per-scheme summaries as Markdown tables (the README's)
    python bench/fidelity.py --fit        # refit every factor on all rows, write optimizer/estimate/factors.yaml
                                          # (and factors_mlx.yaml), then cross-validate and write
                                          # optimizer/estimate/uncertainty.yaml and fidelity/crossval_results.yaml
    python bench/fidelity.py --fit --no-write   # print the fit only
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.fidelity import crossval  # noqa: E402
from optimizer.fidelity.calibrate import fit_all, write_factors  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metric")
    ap.add_argument("--rows", action="store_true")
    ap.add_argument("--recompute", action="store_true",
                    help="re-run the three cross-validations (about a minute of CPU) instead of reading the last "
                         "fit's results")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="with --fit: print the fit, leave the data files alone")
    ap.add_argument("--date", default=datetime.date.today().isoformat(), help="with --fit: the fitted_on date")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args(argv)
    if a.fit:
        fs = fit_all()
        r = fs.decode
        print(json.dumps({"bw_efficiency": r.bw_efficiency, "engine": r.engine, "rms_log_error": r.rms_log_error,
                          "prefill_mfu": fs.prefill_mfu, "ttft_overhead_s": fs.ttft_overhead_s,
                          "fit_rows": list(r.rows)}, indent=2))
        if not a.no_write:
            path, changed = write_factors(a.date)
            print(f"{'wrote' if changed else 'unchanged:'} {path}", file=sys.stderr)
            import importlib

            from optimizer.estimate import factors as F
            importlib.reload(F)  # the written factors, so the cross-validation's in-sample column uses them
            from optimizer.fidelity import mlx_fit  # mlx-lm's own two factors sit on the shared physics: refit
            text = mlx_fit.stored_text(mlx_fit.fit())
            changed = text != F.MLX_FACTORS_FILE.read_text()
            F.MLX_FACTORS_FILE.write_text(text)
            print(f"{'wrote' if changed else 'unchanged:'} {F.MLX_FACTORS_FILE}", file=sys.stderr)
            importlib.reload(F)
            cases = crossval.run()
            for path, changed in (crossval.write_uncertainty(a.date, cases), crossval.write_results(a.date, cases)):
                print(f"{'wrote' if changed else 'unchanged:'} {path}", file=sys.stderr)
        return 0
    cases = crossval.run() if a.recompute else crossval.stored()[0]
    if a.metric:
        cases = [c for c in cases if c.metric == a.metric]
    summary, by_scheme = crossval.summarize(cases), crossval.summarize_schemes(cases)
    if a.json:
        print(json.dumps(crossval.as_dict(cases, summary, by_scheme), indent=2))
    elif a.markdown:
        print(crossval.render_markdown(summary))
        print()
        print(crossval.render_schemes_markdown(by_scheme))
    else:
        if a.rows:
            print(f"{'id':60s} {'regime':30s} {'measured':>10s} {'in-sample':>10s} {'CV':>10s} {'CV err':>7s}")
            for c in cases:
                print(f"{c.id[:60]:60s} {c.regime[:30]:30s} {c.measured:10.4g} {c.predicted:10.4g} "
                      f"{c.predicted_cv:10.4g} {c.cv_error:+7.0%}")
            print()
        print(crossval.render_summary(summary))
        print()
        print(crossval.render_schemes(by_scheme))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
