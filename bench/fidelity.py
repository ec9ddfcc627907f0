"""Print rigopt's fidelity table: every published measurement vs rigopt's prediction, and a per-metric summary.

    python bench/fidelity.py              # table + summary
    python bench/fidelity.py --metric decode_tok_s
    python bench/fidelity.py --json
    python bench/fidelity.py --fit        # refit decode + prefill factors on the fit split, write
                                          # optimizer/estimate/factors.yaml and print the decode fit
    python bench/fidelity.py --fit --no-write   # print only
    python bench/fidelity.py --markdown   # summary as a Markdown table (for the README)
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.fidelity.calibrate import fit, write_factors  # noqa: E402
from optimizer.fidelity.report import as_dict, render_markdown_summary, render_text, run, summarize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metric")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="with --fit: print the fit, leave factors.yaml alone")
    ap.add_argument("--date", default=datetime.date.today().isoformat(), help="with --fit: the fitted_on date")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args(argv)
    if a.fit:
        r = fit()
        print(json.dumps({"bw_efficiency": r.bw_efficiency, "layer_overhead_s": r.layer_overhead_s,
                          "moe_layer_overhead_s": r.moe_layer_overhead_s, "rms_log_error": r.rms_log_error,
                          "fit_rows": list(r.rows)}, indent=2))
        if not a.no_write:
            path, changed = write_factors(a.date)
            print(f"{'wrote' if changed else 'unchanged:'} {path}", file=sys.stderr)
        return 0
    cases = run(a.metric)
    summary = summarize(cases)
    if a.json:
        print(json.dumps(as_dict(cases, summary), indent=2))
    elif a.markdown:
        print(render_markdown_summary(summary))
    else:
        print(render_text(cases, summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
