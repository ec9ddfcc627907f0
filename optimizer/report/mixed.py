"""`rigopt mixed`: solve a mixed-hardware question, print it (or JSON), write the launch script."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from optimizer.catalog.hardware import get_accelerator
from optimizer.export.hetero import launch_scripts
from optimizer.hetero.api import cheapest_mixed, describe
from optimizer.limits import MAX_PATH_CHARS, check_text, write_file


def script_paths(export_script: str, scripts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The engine box's script at `export_script`; each ggml-rpc-server box's beside it as `<stem>.<box>.sh`
    (box names are [A-Za-z][A-Za-z0-9_-]*, checked by the inventory parser)."""
    base = Path(export_script)
    out = [(export_script, scripts[0][1])]
    for box, text in scripts[1:]:
        out.append((str(base.with_name(f"{base.stem}.{box}.sh")), text))
    return out


def run_mixed(
    model: str,
    owned: str,
    *,
    context: int,
    tok_s: float,
    concurrency: int,
    buy: bool,
    buy_types: str | None,
    min_bits: float,
    quant: str | None,
    max_budget: float | None,
    export_script: str | None,
    as_json: bool,
    engine: str = "llamacpp",
    confidence: float = 0.8,
    host: str | None = None,
) -> int:
    """What `rigopt mixed` does: solve, print (or JSON), optionally write the llama.cpp launch script. Exit code 0
    with a plan, 3 without one."""
    kinds: bool | tuple[str, ...] = buy
    if buy_types:
        kinds = tuple(get_accelerator(k.strip()).key for k in buy_types.split(",") if k.strip())
    res = cheapest_mixed(
        model,
        owned,
        context=context,
        tok_s=tok_s,
        concurrency=concurrency,
        buy=kinds,
        min_bits=min_bits,
        quants=[q.strip() for q in quant.split(",")] if quant else None,
        max_budget=max_budget,
        workers=1,
        engine=engine,
        confidence=confidence,
        host=host,
    )
    if as_json:
        sys.stdout.write(
            json.dumps(
                res.plan.to_json() if res.plan else {"plan": None, "reason": res.reason, "tried": res.tried}, indent=2
            )
            + "\n"
        )
    else:
        sys.stdout.write(describe(res) + "\n")
    if res.plan is not None and export_script:
        check_text(export_script, "--export", MAX_PATH_CHARS)
        for path, text in script_paths(export_script, launch_scripts(res.plan)):
            write_file(path, text, "--export")
            if not as_json:
                sys.stdout.write(f"wrote {path}\n")
    return 0 if res.plan is not None else 3
