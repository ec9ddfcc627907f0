"""A bounded, seeded subset of bench/fuzz.py (the full run is `python bench/fuzz.py`, run by .ci/run)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fuzz_subset_has_no_violation():
    # timeout: a guard against a hung harness, not a limit (the harness limits each case by CPU time)
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "fuzz.py"), "--cases", "120", "--seed", "7", "--json"],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    s = json.loads(p.stdout)
    assert s["cases"] == 120 and sum(s["by_command"].values()) == 120
    assert len(s["by_command"]) >= 10, s["by_command"]  # the subset still spans the commands
    bad = {k: s[k] for k in ("tracebacks", "internal_errors", "injections", "escapes", "network_attempts",
                             "other_host_requests", "over_10s", "over_1GiB",
                             "bad_exit_codes", "bad_error_lines", "harness_errors", "failed_cases")}
    assert not any(bad.values()), (bad, s["failures"][:5])
    assert p.returncode == 0
