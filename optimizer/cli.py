"""Thin typer CLI: parse, call one function, render. No physics here."""

from __future__ import annotations

import gc
import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from optimizer.errors import RigoptError
from optimizer.limits import MAX_MESSAGE_CHARS, check_out_dir, clip_line
from optimizer.units import parse_tokens

if TYPE_CHECKING:
    from optimizer.catalog.host_spec import HostSpec

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="rigopt: exact memory/speed estimates and the cheapest hardware for running an LLM.")
catalog_app = typer.Typer(add_completion=False, no_args_is_help=True, help="List what the catalogue knows, with sources.")
app.add_typer(catalog_app, name="catalog")
schema_app = typer.Typer(add_completion=False, no_args_is_help=True, help="JSON Schemas of rigopt's input files.")
app.add_typer(schema_app, name="schema")

# ---- issue 17: Hugging Face ids; `--offline` is global (any command that reads a model), also after the command ----
@app.callback()
def _global(offline: Annotated[bool, typer.Option("--offline", help="Never touch the network: Hugging Face ids are "
                                                  "read from the local Hub cache only (as HF_HUB_OFFLINE=1)")] = False
            ) -> None:
    if offline:
        import os
        os.environ["HF_HUB_OFFLINE"] = "1"  # read by optimizer/catalog/hub.py; inherited by `solve` workers


def _hoist_offline(argv: list[str]) -> list[str]:
    """`rigopt estimate X --offline` means `rigopt --offline estimate X` (options after `--` are left alone)."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--offline" not in argv[:end]:
        return argv
    return ["--offline"] + [a for i, a in enumerate(argv) if not (a == "--offline" and i < end)]
# ---- end issue 17 block ----


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to bind (default 127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port")] = 8765,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Worker processes that solve questions")] = 2,
) -> None:
    """The main job as a local web page and JSON API (needs the `serve` extra: pip install 'rigopt[serve]')."""
    from optimizer.errors import InputError
    try:
        from optimizer.serve.app import serve as run
    except ImportError as e:
        raise InputError(f"rigopt serve needs the serve extra: pip install 'rigopt[serve]' ({e.name} is missing)") from None
    Console().print(f"rigopt serve: http://{host}:{port}/ (API docs at /docs; Ctrl-C to stop)")
    run(host=host, port=port, workers=workers)


@app.command()
def detect(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (schema rigopt.detect/1)")] = False
           ) -> None:
    """This machine's GPUs (memory, PCIe link), CPU, DRAM and NVMe, as an inventory `--owned` reads
    (`--owned local` uses it directly). Reads nvidia-smi / rocm-smi / system_profiler, sysfs, /proc, lscpu and
    dmidecode where present; says what it could not read."""
    from optimizer.detect import detect as run
    from optimizer.report.detect import render_detect
    _out(run(), as_json, render_detect)


def _local_owned(owned: str | None, quiet: bool) -> str | None:
    """`--owned local` -> the detected inventory (printed unless --json), anything else unchanged."""
    if owned is None or owned.strip().lower() != "local":
        return owned
    from optimizer.report.detect import local_inventory
    inv = local_inventory()
    if not quiet:
        Console().print(f"--owned local: {inv}")
    return inv
# ---- end issue 17 block (detect) ----


def _query_defaults() -> dict:
    """`cheapest`'s defaults are the Query's own (solver/query.py): the question is defined once."""
    from optimizer.solver.query import Query
    return {k: f.default for k, f in Query.model_fields.items()}


_QUERY_DEFAULT = _query_defaults()


# Query field -> the `rigopt cheapest` option that sets it (error messages name real options).
CHEAPEST_OPTION = {"ttft_s": "--ttft", "prompt_tokens": "--prompt", "min_expert_bits": "--min-bits", "min_bits": "--min-bits",
                   "isl": "--isl", "osl": "--osl", "rate_rps": "--rate", "prefix_hit": "--prefix-hit", "tier": "--tier",
                   "spec": "--spec", "time_limit_s": "--time-limit", "gpus": "--gpus", "engines": "--engine",
                   "quants": "--quant", "kv_dtypes": "--kv-dtype", "model": "MODEL", "max_budget": "--max-budget",
                   "owned": "--owned", "tok_s": "--tok-s", "tpot_s": "--tpot", "percentile": "--percentile",
                   "objective": "--objective", "context": "--context", "concurrency": "--concurrency",
                   "loads": "--loads", "max_nodes": "--max-nodes", "top": "--top", "min_attn_bits": "--min-attn-bits",
                   "confidence": "--confidence", "api_price": "--api-price", "disagg": "--no-disagg",
                   "amortize_months": "--amortize-months", "usd_per_kwh": "--usd-per-kwh", "buy": "--buy",
                   "buy_types": "--buy-types", "out": "--out"}

PROFILE_HELP = ("Calibration profile from `rigopt calibrate` (default: $XDG_CONFIG_HOME/rigopt/profile.yaml, used "
                "when it exists)")
HOST_HELP = ("Host CPU + DRAM for experts in host memory: a hardware/hosts.yaml key, KEY:k=v,... or cpu=MODEL,k=v,... "
             "(sockets, cores, isa, clock, channels populated per socket, dpc, mt, dram GB, numa "
             "auto|single|interleave|per-socket, bw measured GB/s, threads), or a YAML file (default: the node's host)")


def _host(text: str | None) -> HostSpec | None:
    """The --host option parsed once, for every command that takes it (optimizer/catalog/host_spec.py)."""
    if not text:
        return None
    from optimizer.catalog.host_spec import parse_host
    return parse_host(text)


CONTEXT_HELP = "Context per sequence in tokens: 393216, 384K (=393216) or 1M (=1048576). K and M are binary."


def _tokens(value: str) -> int:
    return parse_tokens(value)


def _out(obj, as_json: bool, render) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj.model_dump(mode="json"), indent=2) + "\n")
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
        render(obj, console)


@app.command()
def estimate(
    model: Annotated[str, typer.Argument(help="Catalogue name/alias, a config.json, a model folder, a .gguf file or a Hugging Face id org/name[@rev]")],
    context: Annotated[str, typer.Option("--context", "-c", help=CONTEXT_HELP)] = "32K",
    concurrency: Annotated[int, typer.Option("--concurrency", "-b", help="Concurrent sequences at that context")] = 1,
    quant: Annotated[list[str] | None, typer.Option("--quant", "-q", help="Weight quantization(s): native, bf16, fp8, int8, nvfp4, mxfp4, int4, q8_0, q4_k_m, q2_k, iq2_xxs, ... (repeatable)")] = None,
    kv_dtype: Annotated[str | None, typer.Option("--kv-dtype", help="KV cache dtype: bf16, fp16, fp8, q8_0, q4_0 (default: the engine's)")] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="vllm | sglang | llamacpp | ik_llama | ollama | lmstudio | mlx (default vllm; GGUF quants use llamacpp, ik_llama.cpp types ik_llama, MLX quants mlx)")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="Accelerator type, e.g. h200, rtx-4090, m3-ultra-512gb")] = None,
    gpus: Annotated[int, typer.Option("--gpus", "-n", help="Number of accelerators")] = 1,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Prompt length for TTFT (default: the context)")] = None,
    isl: Annotated[str | None, typer.Option("--isl", help="Workload: input tokens per request (with --osl; serving figures need --gpu)")] = None,
    osl: Annotated[str | None, typer.Option("--osl", help="Workload: output tokens per request")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Workload: requests/s arriving (open loop); default: --concurrency requests in flight")] = None,
    prefix_hit: Annotated[float, typer.Option("--prefix-hit", help="Workload: share of prompt tokens served from the prefix cache (0-0.99)")] = 0.0,
    layout: Annotated[str, typer.Option("--layout", help="tp (TP inside a node, DP/EP across) | dp-attn (attention data parallel + EP: MLA KV not replicated)")] = "tp",
    spec: Annotated[str | None, typer.Option("--spec", help="Speculative decoding: mtp[:N] or eagle3[:N] (N draft tokens; default the model card's)")] = None,
    accept_len: Annotated[float | None, typer.Option("--accept-len", help="Mean tokens accepted per verification step, bonus included (overrides the card's)")] = None,
    gmu: Annotated[float | None, typer.Option("--gpu-memory-utilization", help="vLLM: fraction of total device memory (default 0.92)")] = None,
    max_num_seqs: Annotated[int | None, typer.Option("--max-num-seqs", help="vLLM --max-num-seqs / SGLang --max-running-requests / llama.cpp -np")] = None,
    mnbt: Annotated[int | None, typer.Option("--max-num-batched-tokens", help="vLLM token budget per step / SGLang --chunked-prefill-size / llama.cpp -ub")] = None,
    mfs: Annotated[float | None, typer.Option("--mem-fraction-static", help="SGLang: fraction of memory for weights + KV")] = None,
    block_size: Annotated[int | None, typer.Option("--block-size", help="Tokens per KV block (vLLM --block-size, SGLang --page-size)")] = None,
    n_cpu_moe: Annotated[int | None, typer.Option("--n-cpu-moe", help="MoE layers whose experts stay in host DRAM (llama.cpp --n-cpu-moe / KTransformers: computed on the CPU; vLLM: streamed over PCIe)")] = None,
    host: Annotated[str | None, typer.Option("--host", help=HOST_HELP)] = None,
    confidence: Annotated[float, typer.Option("--confidence", help="Level of the prediction intervals shown beside each speed figure (rigopt's cross-validated errors in the regime)")] = 0.8,
    ssm_dtype: Annotated[str | None, typer.Option("--mamba-ssm-cache-dtype", help="Hybrid models: recurrent (SSM / delta-rule) state dtype, auto | float32 | bfloat16 | float16 (vLLM --mamba-ssm-cache-dtype, SGLang --mamba-ssm-dtype; llama.cpp always F32)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (schema rigopt.estimate/1)")] = False,
    profile: Annotated[str | None, typer.Option("--profile", help=PROFILE_HELP)] = None,
    no_profile: Annotated[bool, typer.Option("--no-profile", help="Ignore the calibration profile")] = False,
) -> None:
    """Weights, KV cache, runtime memory and decode/prefill speed for a model (and serving figures for a workload)."""
    from optimizer.catalog.models import resolve_model
    from optimizer.estimate.deployment import EngineSettings
    from optimizer.fidelity.profile import load_calibration
    from optimizer.report.estimate import estimate as run
    from optimizer.report.render import render_estimate

    calibration = load_calibration(profile, no_profile)
    m = resolve_model(model)
    wl = _workload(isl, osl, concurrency, rate, prefix_hit)
    ctx = _tokens(context) if (wl is None or context != "32K") else wl.max_len
    r = run(m, context=ctx, concurrency=concurrency if rate is None else 1, quants=quant, kv_dtype=kv_dtype,
            engine=engine or "vllm", engine_explicit=engine is not None, gpu=gpu, gpus=gpus,
            prompt_tokens=_tokens(prompt) if prompt else None, workload=wl,
            settings=EngineSettings(gpu_memory_utilization=gmu, max_num_seqs=max_num_seqs,
                                    max_num_batched_tokens=mnbt, mem_fraction_static=mfs, block_size=block_size,
                                    mamba_ssm_cache_dtype=None if ssm_dtype in (None, "auto") else ssm_dtype),
            spec_decode=_spec(m, spec, accept_len), layout=layout, cpu_moe_layers=n_cpu_moe,
            host=_host(host), confidence=_confidence(confidence, allow_zero=False), calibration=calibration)
    _out(r, as_json, render_estimate)


def _confidence(v: float, allow_zero: bool = True) -> float:
    from optimizer.errors import InputError
    lo = 0 if allow_zero else 0.05
    if not (lo <= v <= 0.95) or v != v:
        raise InputError(f"--confidence must lie between {lo:g} and 0.95 (got {v:g})")
    return v


def _workload(isl: str | None, osl: str | None, concurrency: int, rate: float | None, prefix_hit: float):
    """A Workload from --isl/--osl/--rate (None when neither length is given)."""
    from optimizer.errors import InputError
    from optimizer.estimate.serving import Workload
    if isl is None and osl is None:
        if rate is not None:
            raise InputError("--rate needs a workload: give --isl and --osl")
        return None
    if isl is None or osl is None:
        raise InputError("a workload needs both --isl and --osl")
    if rate is not None and not (0 < rate <= 1e6):
        raise InputError(f"--rate must be between 0 and 1,000,000 requests/s, got {rate}")
    if not 0.0 <= prefix_hit < 1.0:
        raise InputError(f"--prefix-hit must be in [0, 1), got {prefix_hit}")
    return Workload(isl=_tokens(isl), osl=_tokens(osl), concurrency=None if rate is not None else concurrency,
                    rate_rps=rate, prefix_hit=prefix_hit)


def _spec(m, spec: str | None, accept_len: float | None):
    """--spec mtp[:N] | eagle3[:N] -> SpecDecode (card defaults filled in), None without --spec."""
    from optimizer.errors import InputError
    from optimizer.estimate.deployment import default_spec_decode
    if spec is None:
        if accept_len is not None:
            raise InputError("--accept-len needs --spec")
        return None
    method, _, n = spec.strip().lower().partition(":")
    if method not in ("mtp", "eagle3"):
        raise InputError(f"--spec must be mtp[:N] or eagle3[:N], got {spec!r}")
    if n and not (n.isdigit() and 1 <= int(n) <= 16):
        raise InputError(f"--spec draft tokens must be an integer from 1 to 16, got {n!r}")
    return default_spec_decode(m, method, int(n) if n else None, accept_len)


@app.command()
def cheapest(
    model: Annotated[str, typer.Argument(help="Catalogue name/alias, a config.json, a model folder, a .gguf file or a Hugging Face id org/name[@rev]")],
    context: Annotated[str | None, typer.Option("--context", "-c", help=CONTEXT_HELP + " Default 384K (every form of the question), or isl + osl with a workload.")] = None,
    tok_s: Annotated[float, typer.Option("--tok-s", help="Decode tokens/s per sequence at that context (0 = no target); with --isl/--osl: 1/TPOT")] = _QUERY_DEFAULT["tok_s"],
    concurrency: Annotated[int, typer.Option("--concurrency", "-b", help="Concurrent sequences at that context")] = _QUERY_DEFAULT["concurrency"],
    ttft: Annotated[float | None, typer.Option("--ttft", help="Max seconds to first token for a full-context prompt (with --isl/--osl: the served TTFT, queueing included)")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Prompt length for --ttft (default: the context)")] = None,
    isl: Annotated[str | None, typer.Option("--isl", help="Workload: input tokens per request (with --osl)")] = None,
    osl: Annotated[str | None, typer.Option("--osl", help="Workload: output tokens per request")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Workload: requests/s to sustain (open loop); default --concurrency requests in flight")] = None,
    prefix_hit: Annotated[float | None, typer.Option("--prefix-hit", help="Workload: share of prompt tokens served from the prefix cache (default 0)")] = None,
    spec: Annotated[str | None, typer.Option("--spec", help="Speculative decoding with the model card's MTP/EAGLE-3 setup: off (default) | auto (try both) | on")] = None,
    confidence: Annotated[float, typer.Option("--confidence", help="Targets must hold at the low end of this prediction interval (rigopt's cross-validated errors in each plan's regime); 0 = plan on the expected figures")] = _QUERY_DEFAULT["confidence"],
    objective: Annotated[str | None, typer.Option("--objective", help=f"capex (buy) | hourly (rent) | power (watts); default {_QUERY_DEFAULT['objective']}")] = None,
    max_budget: Annotated[float | None, typer.Option("--max-budget", help="Cap on the objective (USD, USD/h or W)")] = None,
    min_bits: Annotated[float | None, typer.Option("--min-bits", help="Quality floor: minimum bits per weight for experts/FFN (default: the headline is the cheapest 4-bit-class plan or wider, cheaper tiers listed in the frontier; 0 = any width)")] = None,
    tier: Annotated[str | None, typer.Option("--tier", help="Headline from one quality tier: 1.5-bit, 2-bit, 3-bit, 4-bit, 5-6-bit, 8-bit, 16-bit")] = None,
    min_attn_bits: Annotated[float | None, typer.Option("--min-attn-bits", help="Quality floor for attention weights (default 0)")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="Allowed accelerators, comma-separated (e.g. h100,h200)")] = None,
    owned: Annotated[str | None, typer.Option("--owned", help="Hardware you own, e.g. '2x rtx-4090, 256GB ddr5'")] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="vllm | sglang | llamacpp | ik_llama | ollama | lmstudio | mlx, comma-separated (default: vllm, sglang, llamacpp)")] = None,
    quant: Annotated[str | None, typer.Option("--quant", "-q", help="Allowed quantizations, comma-separated")] = None,
    kv_dtype: Annotated[str | None, typer.Option("--kv-dtype", help="Allowed KV dtypes, comma-separated")] = None,
    loads: Annotated[str | None, typer.Option("--loads", help="Expert loads for load-aware speed: a JSON/CSV file, 'uniform' or 'zipf:S'")] = None,
    max_nodes: Annotated[int | None, typer.Option("--max-nodes", help=f"Most nodes a plan may use (default {_QUERY_DEFAULT['max_nodes']})")] = None,
    top: Annotated[int | None, typer.Option("--top", help=f"Plans to show: the optimum and next-cheapest alternatives (default {_QUERY_DEFAULT['top']})")] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", help=f"Solver time limit per solve, seconds (default {_QUERY_DEFAULT['time_limit_s']:g})")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Write the best plan as JSON here (for rigopt export)")] = None,
    export_engine: Annotated[str | None, typer.Option("--export", help="Also export the best plan: auto (its own engine) or vllm|sglang|llamacpp (must be the plan's), next to --out; with --loads the placement's flags and files too")] = None,
    plot: Annotated[str | None, typer.Option("--plot", help="Write the cost-quality frontier to this PNG (and <stem>.memory.png, <stem>.layers.png for offload plans)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (schema rigopt.cheapest/1)")] = False,
    profile: Annotated[str | None, typer.Option("--profile", help=PROFILE_HELP)] = None,
    no_profile: Annotated[bool, typer.Option("--no-profile", help="Ignore the calibration profile")] = False,
    tpot: Annotated[float | None, typer.Option("--tpot", help="SLA form: time per output token, seconds; with --isl/--osl/--rate/--ttft the answer is the cheapest fleet (rigopt fleet)")] = None,
    percentile: Annotated[float | None, typer.Option("--percentile", help="SLA form: --ttft holds at this percentile (50-99.9, default 90)")] = None,
) -> None:
    """Cheapest hardware + quantization + parallelism that meets the targets (CP-SAT, proven optimal). With SLAs
    (--tpot or --percentile, or --rate with --ttft and --tok-s): the cheapest serving fleet, as `rigopt fleet`."""
    from optimizer.fidelity.profile import load_calibration
    from optimizer.front import Ask, question, solve

    ask = Ask(model=model, context=_tokens(context) if context else None, tok_s=tok_s, concurrency=concurrency,
              ttft_s=ttft, prompt_tokens=_tokens(prompt) if prompt else None,
              isl=_tokens(isl) if isl is not None else None, osl=_tokens(osl) if osl is not None else None,
              rate_rps=rate, prefix_hit=prefix_hit or None, spec=None if spec in (None, "off") else spec,
              confidence=_confidence(confidence), objective=objective, max_budget=max_budget, min_bits=min_bits,
              tier=tier, min_attn_bits=min_attn_bits or None, gpus=_csv(gpus), owned=_local_owned(owned, as_json),
              engines=_csv(engine), quants=_csv(quant), kv_dtypes=_csv(kv_dtype), loads=loads, max_nodes=max_nodes,
              top=top, time_limit_s=time_limit, calibration=load_calibration(profile, no_profile), tpot_s=tpot,
              percentile=percentile, outputs=_given({"--out": out, "--export": export_engine, "--plot": plot}),
              names=CHEAPEST_OPTION)
    q = question(ask)
    if q.kind == "owned" and not as_json:
        Console().print("owned inventory: planned per device (as rigopt mixed)")
    if q.kind == "fleet":
        check_out_dir(out)  # the fleet's export folder: checked before the solve, not after
    ans = solve(q)
    if ans.backend == "solver":
        _cheapest_files(ans.cheapest_result(), out, plot)
    elif ans.backend == "fleet" and out and ans.feasible:
        from optimizer.export.fleet import export_fleet
        export_fleet(ans.fleet_result(), out)
    _answer(ans, as_json)
    if ans.backend == "solver" and export_engine:
        _cheapest_export(ans.cheapest_result(), out, export_engine, loads, as_json)
    if not ans.feasible:
        raise typer.Exit(code=3)


def _csv(v: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in v.split(",") if x.strip()) if v else None


def _given(options: dict) -> tuple[str, ...]:
    return tuple(k for k, v in options.items() if v)


def _answer(ans, as_json: bool) -> None:
    """Print an answer: its JSON (every back end's carries a schema_id, `rigopt schema answer`), or its text."""
    if as_json:
        sys.stdout.write(json.dumps(ans.to_json(), indent=2) + "\n")
        return
    if ans.backend == "hetero":
        from optimizer.hetero.api import describe
        sys.stdout.write(describe(ans.result) + "\n")
        return
    if ans.backend == "fleet":
        from optimizer.fleet.report import render_fleet
        _out(ans.result, False, render_fleet)
        return
    from optimizer.report.cheapest import render_cheapest
    _out(ans.result, False, render_cheapest)


def _cheapest_files(r, out: str | None, plot: str | None) -> None:
    """--out (the plan file) and --plot of a single-deployment answer."""
    from optimizer.errors import InputError
    if out:
        from optimizer.limits import MAX_PATH_CHARS, check_text, write_file
        check_text(out, "--out", MAX_PATH_CHARS)
        if r.plan is None:
            raise InputError("no plan to write: nothing meets the targets (see the relaxations)")
        write_file(out, r.plan.model_dump_json(indent=2) + "\n", "--out")
    if plot:
        _plot_cheapest(r, plot)


def _cheapest_export(r, out: str | None, export_engine: str, loads: str | None, as_json: bool) -> None:
    """--export: launch scripts of the best plan (with --loads, the expert placement's flags and files too)."""
    from pathlib import Path

    from optimizer.errors import InputError
    if r.plan is None:
        raise InputError("no plan to export: nothing meets the targets")
    from optimizer.estimate.kv import check_engine
    from optimizer.export import export_plan, render_export
    eng = r.plan.engine if export_engine.strip().lower() == "auto" else check_engine(export_engine)
    if eng != r.plan.engine:
        raise InputError(f"the plan runs on {r.plan.engine} (its quantization and memory are {r.plan.engine}'s): "
                         f"use --export auto or --export {r.plan.engine}, or re-plan with --engine {eng}")
    d = Path(out).with_suffix("") if out else Path(f"rigopt-export-{eng}")
    pl = None
    if loads and (r.plan.parallel.ep_size > 1 or r.plan.offload.mode != "none"):
        pl = _placement_for(r.plan, loads)
    res = export_plan(r.plan, eng, d, placement=pl)
    if not as_json:
        render_export(res, Console(width=200))


def _plot_cheapest(r, plot: str) -> None:
    """The frontier PNG at `plot`, the memory (and layer placement) PNGs beside it."""
    from pathlib import Path

    from optimizer.errors import InputError
    from optimizer.limits import MAX_PATH_CHARS, check_text, clip_for_message
    from optimizer.scenarios.plot import plot_question
    check_text(plot, "--plot", MAX_PATH_CHARS)
    p = Path(plot)
    if p.suffix.lower() != ".png":
        raise InputError("--plot needs a .png file name")
    if not p.parent.is_dir():
        raise InputError(f"--plot: folder {p.parent} does not exist")
    stem = p.name[:-4]
    try:
        written = plot_question(r, p.parent, stem, f"{r.query.model}")
        if written and written[0] != p:  # plot_question names the frontier <stem>.pareto.png
            written[0].replace(p)
    except OSError as e:
        raise InputError(f"--plot: cannot write into {clip_for_message(str(p.parent))} ({e.strerror})") from None


def _placement_for(plan, loads: str):
    """`rigopt place` on the plan with the same loads (the plan goes through its own file, as `place` reads)."""
    import tempfile
    from pathlib import Path

    from optimizer.place.report import run as place_run
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "plan.json"
        p.write_text(plan.model_dump_json(indent=2) + "\n")
        return place_run(str(p), loads=loads)


@app.command()
def export(
    plan_json: Annotated[str, typer.Argument(help="Plan written by `rigopt cheapest --out plan.json`")],
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="vllm | sglang | llamacpp | ik_llama | ollama | lmstudio | mlx (default: the plan's own engine)")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Directory for launch scripts + EXPLAIN.md")] = None,
    model_path: Annotated[str | None, typer.Option("--model-path", help="Checkpoint dir / HF id / .gguf to serve")] = None,
    placement: Annotated[str | None, typer.Option("--placement", help="A `rigopt place --out` result: its flags go into the launch scripts, with every file they name")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Launch commands for vLLM 0.33.0, SGLang 0.5.23 or llama.cpp 0c1e57098 from a plan."""
    from pathlib import Path

    from optimizer.export import export_plan, load_plan, read_plan_json, render_export
    raw = read_plan_json(plan_json)
    if isinstance(raw, dict) and raw.get("schema_id") == "rigopt.mixed-plan/1":  # issue 15: a mixed-hardware plan
        raise typer.Exit(code=_export_mixed(raw, plan_json, engine, out, model_path, placement, as_json))
    pl = None
    if placement:
        from optimizer.export.placement import read_placement
        pl = read_placement(placement)
    r = export_plan(load_plan(plan_json), engine, Path(out) if out else None, model_path=model_path, placement=pl)
    _out(r, as_json, render_export)


def _export_mixed(raw: dict, plan_json: str, engine, out, model_path, placement, as_json: bool) -> int:
    """`rigopt export` of a rigopt.mixed-plan/1 file (from `rigopt mixed --json` or `rigopt solve`)."""
    from optimizer.errors import InputError
    from optimizer.estimate.kv import check_engine
    from optimizer.export.hetero import export_mixed_plan
    from optimizer.limits import clip_for_message
    if placement:
        raise InputError("--placement applies to rigopt.plan/1 plans, not to mixed-hardware plans")
    if engine and check_engine(engine) != raw.get("engine"):
        raise InputError(f"this mixed plan runs on {clip_for_message(str(raw.get('engine')))}: re-plan with "
                         f"`rigopt mixed --engine {check_engine(engine)}`")
    files = export_mixed_plan(raw, clip_for_message(plan_json), out, model_path)
    if as_json:
        sys.stdout.write(json.dumps({"files": [n for n, _ in files], "out": out}, indent=2) + "\n")
    elif out:
        sys.stdout.write("".join(f"wrote {out}/{n}\n" for n, _ in files))
    else:
        sys.stdout.write("".join(f"# ---- {n}\n{t}" for n, t in files if n.endswith(".sh")))
    return 0


@app.command()
def place(
    plan: Annotated[str, typer.Argument(help="Plan JSON from `rigopt cheapest --out`, or a hand-written placement input (see README)")],
    loads: Annotated[str | None, typer.Option("--loads", help="Expert loads: a JSON/CSV file, 'uniform' or 'zipf:S' (default uniform)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for generated loads")] = 0,
    redundant: Annotated[str | None, typer.Option("--redundant-experts", help="Redundant experts per layer R, or total:N (default: one per EP rank, within memory headroom)")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Write the placement JSON here (and <stem>.sglang.json for SGLang --init-expert-location)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (schema rigopt.place/1)")] = False,
) -> None:
    """MoE expert placement across GPUs, host DRAM and NVMe for a plan and expert load statistics."""
    from optimizer.place.report import render, run, write_outputs
    r = run(plan, loads=loads, seed=seed, redundant=redundant)
    if out:
        write_outputs(r, out)
    _out(r, as_json, render)


@app.command()
def solve(
    paths: Annotated[list[str], typer.Argument(help="Scenario files (.yaml, .yml, .json) or folders of them")],
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Parallel solver processes (default: CPU count)")] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder: <file-stem>/<question>.plan.json, summary.{md,csv,json}, plots, .cache/")] = "rigopt-out",
    fmt: Annotated[str, typer.Option("--format", "-f", help="Summary printed to stdout: table | json | csv | md")] = "table",
    plot: Annotated[bool, typer.Option("--plot", help="Also write PNGs per question: cost vs tok/s (Pareto front) and memory per device")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Solve every question again; neither read nor write the cache")] = False,
    executor: Annotated[str, typer.Option("--executor", help="local (a process pool of --jobs) | ray (a Ray instance on this machine, --jobs CPUs) | ray=ADDRESS (join a Ray cluster) | auto (a running cluster, else local)")] = "local",
) -> None:
    """Solve every question in scenario files. Exit 0 if all got a plan; 1 if any is infeasible, failed or unreadable."""
    from optimizer.scenarios import solve as run

    rep = run(paths, jobs=jobs, out_dir=out, fmt=fmt, plot=plot, use_cache=not no_cache, executor=executor)
    for line in rep.errors:  # file:line: field: message, one per line
        sys.stderr.write(clip_line(line, MAX_MESSAGE_CHARS) + "\n")
    if rep.exit_code:
        raise typer.Exit(code=rep.exit_code)


@schema_app.command("scenario")
def schema_scenario() -> None:
    """JSON Schema of scenario files (rigopt.scenario/1)."""
    from optimizer.scenarios import scenario_json_schema

    sys.stdout.write(json.dumps(scenario_json_schema(), indent=2) + "\n")


@app.command()
def validate(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (schema rigopt.validate/3)")] = False,
    metric: Annotated[str | None, typer.Option("--metric", help="decode_tok_s, prefill_tok_s, tpot_ms, ttft_ms, output_tok_s_per_gpu, weights_per_gpu_bytes, gguf_file_bytes, kv_tokens_for_bytes")] = None,
    recompute: Annotated[bool, typer.Option("--recompute", help="Re-run the three cross-validations (about a minute of CPU) instead of reading the last fit's results")] = False,
) -> None:
    """Check rigopt's numbers against published measurements, cross-validated by source, model family and hardware
    class (each row predicted by factors fitted without its own group): measured, in-sample and cross-validated
    predictions, summary per metric and regime against the targets, and per scheme the median, p90, signed
    median and held-out coverage of the 80% interval."""
    from optimizer.errors import InputError
    from optimizer.fidelity.report import METRICS, as_dict, coverage, render_text, run, summarize, summarize_schemes
    metric = {"decode": "decode_tok_s", "prefill": "prefill_tok_s"}.get(metric or "", metric)
    if metric and metric not in METRICS:
        raise InputError(f"unknown metric '{metric}' (use {', '.join(sorted(METRICS))}, decode or prefill)")
    every, fitted_on = run(None, recompute)
    # held-out coverage needs every row (the intervals are built from all metrics of a kind): filter afterwards
    by_scheme = {k: [s for s in v if not metric or s.metric == metric] for k, v in summarize_schemes(every).items()}
    cases = [c for c in every if not metric or c.metric == metric]
    summary = summarize(cases, cover=coverage(every, "source"))  # cov80 per regime, held out by source
    sys.stdout.write((json.dumps(as_dict(cases, summary, fitted_on, by_scheme), indent=2) if as_json
                      else render_text(cases, summary, fitted_on, by_scheme)) + "\n")


@schema_app.command("plan")
def schema_plan() -> None:
    """JSON Schema of plan files (rigopt.plan/1: written by cheapest --out, read by export and place)."""
    from optimizer.solver.plan import Plan

    sys.stdout.write(json.dumps(Plan.model_json_schema(), indent=2) + "\n")


@schema_app.command("cheapest")
def schema_cheapest() -> None:
    """JSON Schema of `rigopt cheapest --json` output (rigopt.cheapest/1)."""
    from optimizer.solver.search import CheapestResult

    sys.stdout.write(json.dumps(CheapestResult.model_json_schema(), indent=2) + "\n")


@schema_app.command("answer")
def schema_answer() -> None:
    """JSON Schema of every `--json` answer of cheapest, fleet and mixed (rigopt.cheapest/1, rigopt.fleet/1,
    rigopt.mixed-plan/1 or rigopt.mixed-result/1, told apart by schema_id)."""
    from optimizer.front import answer_json_schema

    sys.stdout.write(json.dumps(answer_json_schema(), indent=2) + "\n")


@schema_app.command("estimate")
def schema_estimate() -> None:
    """JSON Schema of `rigopt estimate --json` output (rigopt.estimate/1)."""
    from optimizer.report.estimate import EstimateResult

    sys.stdout.write(json.dumps(EstimateResult.model_json_schema(), indent=2) + "\n")


@catalog_app.command("models")
def catalog_models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Models in the catalogue."""
    from optimizer.report.catalog import list_models, render_models
    _out(list_models(), as_json, render_models)


@catalog_app.command("gpus")
def catalog_gpus(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Accelerators with memory, bandwidth, compute, price and sources."""
    from optimizer.report.catalog import list_gpus, render_gpus
    _out(list_gpus(), as_json, render_gpus)


@catalog_app.command("nodes")
def catalog_nodes(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Node types (servers, workstations, unified-memory boxes)."""
    from optimizer.report.catalog import list_nodes, render_nodes
    _out(list_nodes(), as_json, render_nodes)


# ---- issue 12: rigopt calibrate (logic in optimizer/fidelity/logs.py, usercal.py, profile.py) ----
@app.command()
def calibrate(
    logs: Annotated[list[str], typer.Argument(help="Your logs: llama-bench tables (or -o json/jsonl/csv), llama-server timing lines, vllm bench serve / sglang.bench_serving results (or their JSON), vLLM/SGLang startup logs")],
    profile: Annotated[str | None, typer.Option("--profile", help="Profile to update (default: $XDG_CONFIG_HOME/rigopt/profile.yaml)")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Catalogue model the logs ran (overrides the log)")] = None,
    gpu: Annotated[str | None, typer.Option("--gpu", help="Accelerator the logs ran on (overrides the log)")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", min=1, max=65536, help="Number of accelerators")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="vllm | sglang | llamacpp (overrides the log)")] = None,
    quant: Annotated[str | None, typer.Option("--quant", help="Quantization, e.g. q4_k_m, fp8 (overrides the log)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the comparison and factors; write nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (schema rigopt.calibrate/1)")] = False,
) -> None:
    """Compare your own measurements with rigopt's prediction and store per-system correction factors that later
    `estimate` / `cheapest` runs on the same system apply (and say so)."""
    from optimizer.fidelity.usercal import Overrides, render_calibrate, run_calibrate
    r = run_calibrate(logs, Overrides(model=model, gpu=gpu, gpus=gpus, engine=engine, quant=quant), profile, dry_run)
    _out(r, as_json, render_calibrate)
# ---- end issue 12 calibrate block ----
@app.command()
def verify(
    plan_json: Annotated[str, typer.Argument(help="Plan written by `rigopt cheapest --out plan.json`")],
    endpoint: Annotated[str, typer.Option("--endpoint", help="The running OpenAI-compatible server, e.g. http://10.0.0.5:8000 (the only address contacted)")],
    model: Annotated[str | None, typer.Option("--model", help="Model name the requests carry (default: the first of GET /v1/models)")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="RIGOPT_API_KEY", help="Bearer token, if the server wants one (env RIGOPT_API_KEY)")] = None,
    isl: Annotated[str | None, typer.Option("--isl", help="Prompt tokens per request (default: the plan's workload)")] = None,
    osl: Annotated[str | None, typer.Option("--osl", help="Output tokens per request (default: the plan's workload)")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", "-b", min=1, max=4096, help="Requests in flight, closed loop (default: the plan's)")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Requests/s, Poisson arrivals (default: the plan's, if it has one)")] = None,
    requests: Annotated[int | None, typer.Option("--requests", help="Request cap (default: 8 rounds of the concurrency, or a minute of arrivals; at least 32, at most 2,000)")] = None,
    max_time: Annotated[float, typer.Option("--max-time", help="Time cap, seconds: no request runs past it")] = 300.0,
    ttft: Annotated[float | None, typer.Option("--ttft", help="SLA: TTFT at --percentile, seconds")] = None,
    tpot: Annotated[float | None, typer.Option("--tpot", help="SLA: mean time per output token, seconds")] = None,
    percentile: Annotated[float, typer.Option("--percentile", help="Percentile of the --ttft SLA")] = 90.0,
    confidence: Annotated[float, typer.Option("--confidence", help="Width of the plan's prediction interval")] = 0.8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated prompts and arrivals")] = 0,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Store the run in the calibration profile, as `rigopt calibrate` does for logs")] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="Profile --calibrate updates (default: $XDG_CONFIG_HOME/rigopt/profile.yaml)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (schema rigopt.verify/1)")] = False,
) -> None:
    """Check a plan against its running server: a bounded benchmark of the plan's workload, measured TTFT, TPOT and
    throughput beside the plan's prediction and interval, a verdict per figure and SLA."""
    from optimizer.export import load_plan
    from optimizer.verify import render_verify, run_verify_with_progress
    r = run_verify_with_progress(
        load_plan(plan_json), endpoint, show=not as_json, model=model, api_key=api_key,
        isl=_tokens(isl) if isl else None, osl=_tokens(osl) if osl else None, concurrency=concurrency, rate=rate,
        requests=requests, max_time_s=max_time, ttft_sla_s=ttft, tpot_sla_s=tpot, percentile=percentile,
        confidence=confidence, seed=seed, calibrate=calibrate, profile=profile)
    _out(r, as_json, render_verify)
@app.command()
def mixed(
    model: Annotated[str, typer.Argument(help="catalogue key/alias, config.json, model folder or .gguf")],
    owned: Annotated[str, typer.Option("--owned", help="'1x rtx-4090, 1x rtx-3090, 128GB ddr5' or 'box1: ...; box2: ...; net: 10gbe' (llama.cpp RPC; default 1 GbE)")],
    context: Annotated[str | None, typer.Option("--context", help=CONTEXT_HELP + " Default 384K (every form of the question).")] = None,
    tok_s: Annotated[float, typer.Option("--tok-s", help="decode tokens/s per sequence")] = 0.0,
    concurrency: Annotated[int, typer.Option("--concurrency", "-b")] = 1,
    buy: Annotated[bool, typer.Option("--buy", help="allow buying GPUs/DRAM on top of what you own")] = False,
    buy_types: Annotated[str | None, typer.Option("--buy-types", help="GPUs offered for purchase, e.g. rtx-5090,rtx-4090")] = None,
    min_bits: Annotated[float | None, typer.Option("--min-bits", help="least routed-expert bits per weight")] = None,
    quant: Annotated[str | None, typer.Option("--quant", "-q", help="GGUF presets to try, e.g. q4_k_m,q3_k_m")] = None,
    max_budget: Annotated[float | None, typer.Option("--max-budget", help="USD for purchases")] = None,
    export_script: Annotated[str | None, typer.Option("--export", help="write the launch script (llama.cpp or vLLM) here; several boxes: also <stem>.<box>.sh per other box")] = None,
    engine: Annotated[str | None, typer.Option("--engine", help="llamacpp (any mix; the default for several GPU types) or vllm (uneven PP stages); without it, one GPU type is planned as `rigopt cheapest --owned` (every engine)")] = None,
    confidence: Annotated[float, typer.Option("--confidence", help="The --tok-s target holds at the low end of this prediction interval (mixed plans: the all-rows cross-validated interval); 0 = the expected figure")] = _QUERY_DEFAULT["confidence"],
    host: Annotated[str | None, typer.Option("--host", help=HOST_HELP + "; mixed: the main box's host")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (rigopt.mixed-plan/1, or rigopt.mixed-result/1 without a plan; `rigopt schema answer`)")] = False,
) -> None:
    """Best plan over mixed GPUs you own (CP-SAT layer/expert assignment), or the cheapest additions with --buy.
    The same question as `rigopt cheapest --owned`: one GPU type without --engine gets the same answer."""
    from optimizer.errors import InputError
    from optimizer.fidelity.profile import load_calibration
    from optimizer.front import Ask, question, solve
    ask = Ask(model=model, owned=_local_owned(owned, as_json) or owned, calibration=load_calibration(None, False), context=_tokens(context) if context else None,
              tok_s=tok_s, concurrency=concurrency, buy=buy or None, buy_types=_csv(buy_types), min_bits=min_bits,
              quants=_csv(quant), max_budget=max_budget, engines=(engine,) if engine else None,
              confidence=_confidence(confidence), host=host, names=CHEAPEST_OPTION | {"engines": "--engine", "host": "--host"})
    q = question(ask)
    if export_script and q.kind != "owned":
        raise InputError("--export writes a per-device launch script: give --engine llamacpp or vllm, or use "
                         "`rigopt cheapest --owned ... --export auto` for this one-GPU-type inventory")
    ans = solve(q)
    _answer(ans, as_json)
    if export_script and ans.feasible:
        from optimizer.export.hetero import launch_scripts
        from optimizer.limits import MAX_PATH_CHARS, check_text, write_file
        from optimizer.report.mixed import script_paths
        check_text(export_script, "--export", MAX_PATH_CHARS)
        for path, text in script_paths(export_script, launch_scripts(ans.mixed_plan())):
            write_file(path, text, "--export")
            if not as_json:
                sys.stdout.write(f"wrote {path}\n")
    if not ans.feasible:
        raise typer.Exit(code=3)


@app.command()
def fleet(
    model: Annotated[str, typer.Argument(help="Catalogue name/alias or a config.json / model folder")],
    isl: Annotated[str, typer.Option("--isl", help="Input tokens per request")],
    osl: Annotated[str, typer.Option("--osl", help="Output tokens per request")],
    rate: Annotated[float, typer.Option("--rate", help="Requests per second (Poisson arrivals)")],
    ttft: Annotated[float, typer.Option("--ttft", help="Time to first token SLA, seconds, at --percentile")],
    tpot: Annotated[float, typer.Option("--tpot", help="Time per output token SLA, seconds")],
    percentile: Annotated[float | None, typer.Option("--percentile", help="TTFT percentile, 50-99.9 (default 90)")] = None,
    api_price: Annotated[str | None, typer.Option("--api-price", help="Hosted API price per M tokens, in:X,out:Y")] = None,
    objective: Annotated[str | None, typer.Option("--objective", help=f"hourly (rent cloud shapes) | capex (buy servers, partly filled allowed); default {_QUERY_DEFAULT['objective']}, as every form of the question")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="Allowed accelerators, e.g. h100,h200")] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="vllm | sglang, comma-separated (default both)")] = None,
    quant: Annotated[str | None, typer.Option("--quant", "-q", help="Allowed quantizations, comma-separated (default native, fp8)")] = None,
    no_disagg: Annotated[bool, typer.Option("--no-disagg", help="Aggregated replicas only")] = False,
    months: Annotated[float | None, typer.Option("--amortize-months", help="Capex amortisation period (default 36)")] = None,
    kwh: Annotated[float | None, typer.Option("--usd-per-kwh", help="Electricity price (default 0.12)")] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", help="Solver time limit, seconds (default 10, at most 60)")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Write launch scripts, k8s.yaml, router.sh to DIR")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (rigopt.fleet/1)")] = False,
) -> None:
    """The cheapest fleet that serves a request rate within TTFT/TPOT SLAs: replicas, disaggregated
    prefill/decode pools, mixed GPU types, with $/M tokens and own-vs-rent-vs-API break-even volumes. The same
    question as `rigopt cheapest --isl --osl --rate --ttft --tpot`, with the same options and defaults."""
    from optimizer.fleet import ApiPrice
    from optimizer.front import Ask, question, solve
    ask = Ask(model=model, isl=_tokens(isl), osl=_tokens(osl), rate_rps=rate, ttft_s=ttft, tpot_s=tpot,
              percentile=percentile, objective=objective, gpus=_csv(gpus), engines=_csv(engine), quants=_csv(quant),
              api_price=ApiPrice.parse(api_price) if api_price else None, disagg=False if no_disagg else None,
              amortize_months=months, usd_per_kwh=kwh, time_limit_s=time_limit, names=CHEAPEST_OPTION)
    check_out_dir(out)
    ans = solve(question(ask))
    if out and ans.feasible:
        from optimizer.export.fleet import export_fleet
        export_fleet(ans.fleet_result(), out)
    _answer(ans, as_json)
    if not ans.feasible:
        raise typer.Exit(3)


def _fail(msg: str, code: int) -> None:
    sys.stderr.write(clip_line(msg, MAX_MESSAGE_CHARS) + "\n")  # exactly one line, never wrapped
    sys.exit(code)


def user_error(e: BaseException) -> str | None:
    """The one place that decides what counts as bad input: the message for an expected failure (rigopt's own
    errors, raised where input is checked against optimizer.limits, and usage errors of click/typer), None for a
    real bug (reported as `internal error`, exit 1; a pydantic ValidationError of an internal object is one)."""
    if isinstance(e, RigoptError):
        return str(e)
    if hasattr(e, "format_message") and hasattr(e, "exit_code"):
        return e.format_message()
    return None


LONG_RUNNING = ("serve", "solve")  # a server and a batch of questions: the garbage collector stays on


def main() -> None:
    """Entry point: typer app with one-line errors and exit code 2 for bad input. A one-shot command runs with
    Python's cyclic garbage collector off (its imports and its one answer allocate much and leave few cycles, and the
    process ends with the command: optimizer/cache.py without_gc says what that saves)."""
    args = _hoist_offline(sys.argv[1:])
    if not any(a in LONG_RUNNING for a in args[:2]):
        gc.disable()
    try:
        rc = app(args=args, standalone_mode=False)  # returns the exit code of typer.Exit in non-standalone mode
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code or 0)
    except Exception as e:  # usage errors (click or typer's own click copy) and anything unexpected
        if type(e).__name__ == "NoArgsIsHelpError":
            fmt = getattr(e, "format_message", None)
            sys.stderr.write((fmt() if fmt else str(e)) + "\n")
            sys.exit(2)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        msg = user_error(e)
        if msg is not None:
            _fail(f"error: {msg}", 2)
        _fail(f"internal error: {type(e).__name__}: {e}", 1)
