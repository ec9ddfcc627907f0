"""Run under the vLLM venv: parse `vllm serve` argvs with vLLM's own CLI parser, build AsyncEngineArgs from each
and go as far as `create_engine_config` gets on this machine. Prints one JSON list (one object per request).

    python vllm_check.py REQUESTS.json RESULTS.json   # [{"argv": ["serve", MODEL, ...], "env": {...}}, ...]

On a machine without a GPU the CUDA wheel's platform is "unspecified" and building the parser's defaults fails
("Failed to infer device type"); the caller sets VLLM_TARGET_DEVICE=cpu (vLLM's own switch to its CPU platform)
for this parse-only use.
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
        import vllm
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.cli.serve import ServeSubcommand
        from vllm.usage.usage_lib import UsageContext
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        out["platform"] = os.environ.get("VLLM_TARGET_DEVICE", "auto")
        out["version"] = vllm.__version__
        out["stage"] = "parse"
        parser = FlexibleArgumentParser(description="vLLM CLI")
        subparsers = parser.add_subparsers(required=False, dest="subparser")
        serve = ServeSubcommand()
        serve.subparser_init(subparsers).set_defaults(dispatch_function=serve.cmd)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = parser.parse_args(req["argv"])
        except SystemExit as e:
            last = " / ".join(err.getvalue().strip().splitlines()[-2:])
            out.update(ok=False, error=f"argparse exit {e.code}: {last}")
            return out
        out["stage"] = "validate"
        serve.validate(args)
        if getattr(args, "model_tag", None) is not None:
            args.model = args.model_tag
        out["stage"] = "from_cli_args"
        engine_args = AsyncEngineArgs.from_cli_args(args)
        out["args"] = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                       for k, v in sorted(vars(engine_args).items())}
        out["parsed"] = True
        out["stage"] = "create_engine_config"
        try:
            engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
            out["engine_config"] = "ok"
        except Exception as e:  # how far it gets on a CPU machine: recorded, judged by the test
            out["engine_config"] = f"{type(e).__name__}: {str(e)[:1500]}"
            out["engine_config_where"] = traceback.format_exc()[-3000:]
        out["ok"] = True
    except Exception as e:
        out.update(ok=False, error=f"{type(e).__name__}: {str(e)[:2000]}", trace=traceback.format_exc()[-4000:])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return out


def main() -> None:
    results = [check(r) for r in json.load(open(sys.argv[1]))]
    with open(sys.argv[2], "w") as f:      # stdout carries vLLM's own log lines
        json.dump(results, f)


if __name__ == "__main__":
    main()
