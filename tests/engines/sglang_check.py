"""Run under the SGLang venv: run SGLang's own `prepare_server_args` (its parser; ServerArgs from the CLI) on
`python -m sglang.launch_server` argvs, then go as far as `ServerArgs.resolve_once()` (the launcher's resolution
and validation pipeline) gets on this machine. Writes one JSON list (one object per request).

    python sglang_check.py REQUESTS.json RESULTS.json   # [{"argv": ["--model-path", DIR, ...], "env": {...}}, ...]
"""

import contextlib
import io
import json
import os
import sys
import traceback


def check(req: dict) -> dict:
    saved = dict(os.environ)
    os.environ.update(req.get("env", {}))
    out: dict = {"stage": "import"}
    try:
        import importlib.metadata

        from sglang.srt.server_args import prepare_server_args
        out["version"] = importlib.metadata.version("sglang")
        out["stage"] = "prepare_server_args"
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                sa = prepare_server_args(req["argv"])
        except SystemExit as e:
            last = " / ".join(err.getvalue().strip().splitlines()[-2:])
            out.update(ok=False, error=f"argparse exit {e.code}: {last}")
            return out
        out["args"] = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                       for k in sorted(dir(sa)) if not k.startswith("_")
                       for v in [getattr(sa, k, None)] if not callable(v)}
        out.update(ok=True, parsed=True)
        out["stage"] = "resolve_once"
        try:
            sa.resolve_once()
            out["resolve"] = "ok"
        except Exception as e:   # recorded: the test judges whether it is about rigopt's flags or this machine
            out["resolve"] = f"{type(e).__name__}: {str(e)[:1500]}"
            out["resolve_where"] = traceback.format_exc()[-3000:]
    except Exception as e:
        out.update(ok=False, error=f"{type(e).__name__}: {str(e)[:2000]}", trace=traceback.format_exc()[-4000:])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return out


def main() -> None:
    results = [check(r) for r in json.load(open(sys.argv[1]))]
    with open(sys.argv[2], "w") as f:      # stdout may carry SGLang's own log lines
        json.dump(results, f)


if __name__ == "__main__":
    main()
