"""Thin typer CLI: parse, call one function, render. No physics here."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from optimizer.errors import RigoptError
from optimizer.limits import MAX_MESSAGE_CHARS, clip_line
from optimizer.units import parse_tokens

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
CHEAPEST_OPTION = {"ttft_s": "--ttft", "prompt_tokens": "--prompt", "min_expert_bits": "--min-bits", "isl": "--isl", "osl": "--osl", "rate_rps": "--rate",
                   "prefix_hit": "--prefix-hit", "tier": "--tier", "spec": "--spec",
                   "time_limit_s": "--time-limit", "gpus": "--gpus", "engines": "--engine", "quants": "--quant",
                   "kv_dtypes": "--kv-dtype", "model": "MODEL", "max_budget": "--max-budget", "owned": "--owned"}

PROFILE_HELP = ("Calibration profile from `rigopt calibrate` (default: $XDG_CONFIG_HOME/rigopt/profile.yaml, used "
                "when it exists)")
HOST_HELP = ("Host CPU + DRAM for experts in host memory: a hardware/hosts.yaml key, KEY:k=v,... or cpu=MODEL,k=v,... "
             "(sockets, cores, isa, clock, channels populated per socket, dpc, mt, dram GB, numa "
             "auto|single|interleave|per-socket, bw measured GB/s, threads), or a YAML file (default: the node's host)")


def _host(text: str | None):  # type: ignore[no-untyped-def]
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
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="vllm | sglang | llamacpp | ollama | lmstudio | mlx (default vllm; GGUF quants use llamacpp, MLX quants mlx)")] = None,
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
    context: Annotated[str | None, typer.Option("--context", "-c", help=CONTEXT_HELP + " Default 384K, or isl + osl with a workload.")] = None,
    tok_s: Annotated[float, typer.Option("--tok-s", help="Decode tokens/s per sequence at that context (0 = no target); with --isl/--osl: 1/TPOT")] = _QUERY_DEFAULT["tok_s"],
    concurrency: Annotated[int, typer.Option("--concurrency", "-b", help="Concurrent sequences at that context")] = _QUERY_DEFAULT["concurrency"],
    ttft: Annotated[float | None, typer.Option("--ttft", help="Max seconds to first token for a full-context prompt (with --isl/--osl: the served TTFT, queueing included)")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Prompt length for --ttft (default: the context)")] = None,
    isl: Annotated[str | None, typer.Option("--isl", help="Workload: input tokens per request (with --osl)")] = None,
    osl: Annotated[str | None, typer.Option("--osl", help="Workload: output tokens per request")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="Workload: requests/s to sustain (open loop); default --concurrency requests in flight")] = None,
    prefix_hit: Annotated[float, typer.Option("--prefix-hit", help="Workload: share of prompt tokens served from the prefix cache")] = _QUERY_DEFAULT["prefix_hit"],
    spec: Annotated[str, typer.Option("--spec", help="Speculative decoding with the model card's MTP/EAGLE-3 setup: off | auto (try both) | on")] = _QUERY_DEFAULT["spec"],
    confidence: Annotated[float, typer.Option("--confidence", help="Targets must hold at the low end of this prediction interval (rigopt's cross-validated errors in each plan's regime); 0 = plan on the expected figures")] = _QUERY_DEFAULT["confidence"],
    objective: Annotated[str, typer.Option("--objective", help="capex (buy) | hourly (rent) | power (watts)")] = _QUERY_DEFAULT["objective"],
    max_budget: Annotated[float | None, typer.Option("--max-budget", help="Cap on the objective (USD, USD/h or W)")] = None,
    min_bits: Annotated[float | None, typer.Option("--min-bits", help="Quality floor: minimum bits per weight for experts/FFN (default: the headline is the cheapest 4-bit-class plan or wider, cheaper tiers listed in the frontier; 0 = any width)")] = None,
    tier: Annotated[str | None, typer.Option("--tier", help="Headline from one quality tier: 1.5-bit, 2-bit, 3-bit, 4-bit, 5-6-bit, 8-bit, 16-bit")] = None,
    min_attn_bits: Annotated[float, typer.Option("--min-attn-bits", help="Quality floor for attention weights")] = _QUERY_DEFAULT["min_attn_bits"],
    gpus: Annotated[str | None, typer.Option("--gpus", help="Allowed accelerators, comma-separated (e.g. h100,h200)")] = None,
    owned: Annotated[str | None, typer.Option("--owned", help="Hardware you own, e.g. '2x rtx-4090, 256GB ddr5'")] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="vllm | sglang | llamacpp | ollama | lmstudio | mlx, comma-separated (default: vllm, sglang, llamacpp)")] = None,
    quant: Annotated[str | None, typer.Option("--quant", "-q", help="Allowed quantizations, comma-separated")] = None,
    kv_dtype: Annotated[str | None, typer.Option("--kv-dtype", help="Allowed KV dtypes, comma-separated")] = None,
    loads: Annotated[str | None, typer.Option("--loads", help="Expert loads for load-aware speed: a JSON/CSV file, 'uniform' or 'zipf:S'")] = None,
    max_nodes: Annotated[int, typer.Option("--max-nodes", help="Most nodes a plan may use")] = _QUERY_DEFAULT["max_nodes"],
    top: Annotated[int, typer.Option("--top", help="Plans to show: the optimum and next-cheapest alternatives")] = _QUERY_DEFAULT["top"],
    time_limit: Annotated[float, typer.Option("--time-limit", help="Solver time limit per solve, seconds")] = _QUERY_DEFAULT["time_limit_s"],
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
    from pathlib import Path

    from optimizer.errors import InputError
    from optimizer.fidelity.profile import load_calibration
    from optimizer.report.cheapest import render_cheapest
    from optimizer.solver.frontier import DEFAULT_HEADLINE_MIN_BITS
    from optimizer.solver.query import Owned, Query
    from optimizer.solver.search import cheapest as run

    def csv(v):
        return [x.strip() for x in v.split(",") if x.strip()] if v else None

    def _owned(v):
        try:
            return Owned.parse(v)
        except RigoptError as e:
            raise InputError(f"--owned: {e}") from None

    if objective not in ("capex", "hourly", "power"):
        raise InputError(f"unknown objective '{objective}' (use capex, hourly or power)")
    if (isl is None) != (osl is None):
        raise InputError("a workload needs both --isl and --osl")
    if rate is not None and isl is None:
        raise InputError("--rate needs a workload: give --isl and --osl")
    wl_isl, wl_osl = (_tokens(isl), _tokens(osl)) if isl is not None and osl is not None else (None, None)
    from optimizer.fleet.sla import SlaFields, wants_fleet
    sla = SlaFields(model=model, isl=wl_isl, osl=wl_osl, rate_rps=rate, ttft_s=ttft, tpot_s=tpot, tok_s=tok_s,
                    percentile=percentile, objective=objective, gpus=tuple(csv(gpus)) if gpus else None,
                    engines=tuple(csv(engine)) if engine else None, quants=tuple(csv(quant)) if quant else None,
                    time_limit_s=time_limit)
    if wants_fleet(sla):
        extra = {"--owned": owned, "--plot": plot, "--export": export_engine, "--loads": loads,
                 "--context": context, "--prompt": prompt, "--max-budget": max_budget, "--tier": tier,
                 "--min-bits": min_bits, "--kv-dtype": kv_dtype, "--spec": None if spec == "off" else spec,
                 "--prefix-hit": prefix_hit or None}
        _cheapest_fleet(sla, [k for k, v in extra.items() if v is not None], out, as_json)
        return
    owned = _local_owned(owned, as_json)
    if owned and _mixed_inventory(owned):
        # cards of several types (or several boxes): the per-device assignment model plans them (`rigopt mixed`)
        from optimizer.report.mixed import run_mixed
        if wl_isl is not None or out or export_engine or plot or loads:
            raise InputError("an inventory of mixed GPU types is planned by `rigopt mixed` (per-device layer "
                             "assignment); --isl/--osl/--out/--export/--plot/--loads are not supported with it yet")
        if not as_json:
            Console().print("mixed inventory: planned per device (rigopt mixed)")
        ctx_mixed = _tokens(context) if context else _tokens("384K")
        raise typer.Exit(code=run_mixed(model, owned, context=ctx_mixed, tok_s=tok_s, concurrency=concurrency,
                                        buy=False, buy_types=None, min_bits=min_bits or 0.0,
                                        quant=quant, max_budget=max_budget, export_script=None, as_json=as_json,
                                        confidence=_confidence(confidence)))
    ctx = _tokens(context) if context else (wl_isl + wl_osl if wl_isl and wl_osl else _tokens("384K"))
    try:
        q = Query(model=model, context=ctx, concurrency=concurrency, tok_s=tok_s, ttft_s=ttft,
                  isl=wl_isl, osl=wl_osl, rate_rps=rate, prefix_hit=prefix_hit, spec=spec,
                  confidence=_confidence(confidence),
                  prompt_tokens=_tokens(prompt) if prompt else None, objective=objective, max_budget=max_budget,
                  min_expert_bits=min_bits or 0.0, min_attn_bits=min_attn_bits, gpus=csv(gpus),
                  headline_min_bits=DEFAULT_HEADLINE_MIN_BITS if (min_bits is None and tier is None) else None,
                  tier=tier,
                  owned=_owned(owned) if owned else None, engines=csv(engine), quants=csv(quant),
                  kv_dtypes=csv(kv_dtype), loads=loads, max_nodes=max_nodes, top=top, time_limit_s=time_limit,
                  calibration=load_calibration(profile, no_profile))
    except ValidationError as e:
        err = e.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a rule across fields (e.g. isl needs osl)
            raise InputError(msg) from None
        field = str(err["loc"][0])
        raise InputError(f"{CHEAPEST_OPTION.get(field, '--' + field.replace('_', '-'))}: {msg}") from None
    r = run(q)
    if out:
        from optimizer.limits import MAX_PATH_CHARS, check_text, write_file
        check_text(out, "--out", MAX_PATH_CHARS)
        if r.plan is None:
            raise InputError("no plan to write: nothing meets the targets (see the relaxations)")
        write_file(out, r.plan.model_dump_json(indent=2) + "\n", "--out")
    if plot:
        _plot_cheapest(r, plot)
    _out(r, as_json, render_cheapest)
    if export_engine:
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
            pl = _placement_for(r.plan, loads, d)
        res = export_plan(r.plan, eng, d, placement=pl)
        if not as_json:
            render_export(res, Console(width=200))
    if r.plan is None:
        raise typer.Exit(code=3)


def _mixed_inventory(owned: str) -> bool:
    """An --owned inventory of several GPU types or several boxes (for the mixed-hardware planner)."""
    from optimizer.errors import RigoptError
    from optimizer.hetero.inventory import parse_inventory
    if ";" in owned:
        return True
    try:
        inv = parse_inventory(owned)
    except RigoptError:
        return False  # let the single-type parser report it
    return len({g.acc.key for g in inv.gpus}) > 1


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


def _placement_for(plan, loads: str, out_dir):
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
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="vllm | sglang | llamacpp | ollama | lmstudio | mlx (default: the plan's own engine)")] = None,
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
) -> None:
    """Solve every question in scenario files. Exit 0 if all got a plan; 1 if any is infeasible, failed or unreadable."""
    from optimizer.scenarios import solve as run

    rep = run(paths, jobs=jobs, out_dir=out, fmt=fmt, plot=plot, use_cache=not no_cache)
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
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (schema rigopt.validate/2)")] = False,
    metric: Annotated[str | None, typer.Option("--metric", help="decode_tok_s, prefill_tok_s, tpot_ms, ttft_ms, output_tok_s_per_gpu, weights_per_gpu_bytes, gguf_file_bytes, kv_tokens_for_bytes")] = None,
    recompute: Annotated[bool, typer.Option("--recompute", help="Re-run the cross-validation (about 20 s) instead of reading the last fit's results")] = False,
) -> None:
    """Check rigopt's numbers against published measurements, cross-validated by source (each row predicted by
    factors fitted without its own source): measured, in-sample and cross-validated predictions, summary per
    metric and regime against the targets."""
    from optimizer.errors import InputError
    from optimizer.fidelity.report import METRICS, as_dict, render_text, run, summarize
    metric = {"decode": "decode_tok_s", "prefill": "prefill_tok_s"}.get(metric or "", metric)
    if metric and metric not in METRICS:
        raise InputError(f"unknown metric '{metric}' (use {', '.join(sorted(METRICS))}, decode or prefill)")
    cases, fitted_on = run(metric, recompute)
    summary = summarize(cases)
    sys.stdout.write((json.dumps(as_dict(cases, summary, fitted_on), indent=2) if as_json
                      else render_text(cases, summary, fitted_on)) + "\n")


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
# ---- issue 15: mixed hardware (`rigopt mixed`); self-contained block, logic in optimizer/hetero/api.py ----
@app.command()
def mixed(
    model: Annotated[str, typer.Argument(help="catalogue key/alias, config.json, model folder or .gguf")],
    owned: Annotated[str, typer.Option("--owned", help="'1x rtx-4090, 1x rtx-3090, 128GB ddr5' or 'box1: ...; box2: ...; net: 10gbe' (llama.cpp RPC; default 1 GbE)")],
    context: Annotated[str, typer.Option("--context", help="e.g. 393216, 384K, 1M")] = "8192",
    tok_s: Annotated[float, typer.Option("--tok-s", help="decode tokens/s per sequence")] = 0.0,
    concurrency: Annotated[int, typer.Option("--concurrency", "-b")] = 1,
    buy: Annotated[bool, typer.Option("--buy", help="allow buying GPUs/DRAM on top of what you own")] = False,
    buy_types: Annotated[str | None, typer.Option("--buy-types", help="GPUs offered for purchase, e.g. rtx-5090,rtx-4090")] = None,
    min_bits: Annotated[float, typer.Option("--min-bits", help="least routed-expert bits per weight")] = 0.0,
    quant: Annotated[str | None, typer.Option("--quant", "-q", help="GGUF presets to try, e.g. q4_k_m,q3_k_m")] = None,
    max_budget: Annotated[float | None, typer.Option("--max-budget", help="USD for purchases")] = None,
    export_script: Annotated[str | None, typer.Option("--export", help="write the launch script (llama.cpp or vLLM) here; several boxes: also <stem>.<box>.sh per other box")] = None,
    engine: Annotated[str, typer.Option("--engine", help="llamacpp (any mix) or vllm (uneven PP stages)")] = "llamacpp",
    confidence: Annotated[float, typer.Option("--confidence", help="The --tok-s target holds at the low end of this prediction interval (mixed plans: the all-rows cross-validated interval); 0 = the expected figure")] = 0.8,
    host: Annotated[str | None, typer.Option("--host", help=HOST_HELP + "; mixed: the main box's host")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Best plan over mixed GPUs you own (CP-SAT layer/expert assignment), or the cheapest additions with --buy."""
    from optimizer.report.mixed import run_mixed
    owned = _local_owned(owned, as_json) or owned
    raise typer.Exit(code=run_mixed(model, owned, context=_tokens(context), tok_s=tok_s, concurrency=concurrency,
                                    buy=buy or bool(buy_types), buy_types=buy_types, min_bits=min_bits, quant=quant,
                                    max_budget=max_budget, export_script=export_script, as_json=as_json, engine=engine,
                                    confidence=_confidence(confidence), host=host))
# ---- end issue 15 block ----
# ---- rigopt fleet (issue 16): serving fleets; the logic lives in optimizer/fleet/ ----
@app.command()
def fleet(
    model: Annotated[str, typer.Argument(help="Catalogue name/alias or a config.json / model folder")],
    isl: Annotated[str, typer.Option("--isl", help="Input tokens per request")],
    osl: Annotated[str, typer.Option("--osl", help="Output tokens per request")],
    rate: Annotated[float, typer.Option("--rate", help="Requests per second (Poisson arrivals)")],
    ttft: Annotated[float, typer.Option("--ttft", help="Time to first token SLA, seconds, at --percentile")],
    tpot: Annotated[float, typer.Option("--tpot", help="Time per output token SLA, seconds")],
    percentile: Annotated[float, typer.Option("--percentile", help="TTFT percentile, 50-99.9")] = 90.0,
    api_price: Annotated[str | None, typer.Option("--api-price", help="Hosted API price per M tokens, in:X,out:Y")] = None,
    objective: Annotated[str, typer.Option("--objective", help="hourly (rent cloud shapes) | capex (buy servers, partly filled allowed)")] = "hourly",
    gpus: Annotated[str | None, typer.Option("--gpus", help="Allowed accelerators, e.g. h100,h200")] = None,
    no_disagg: Annotated[bool, typer.Option("--no-disagg", help="Aggregated replicas only")] = False,
    months: Annotated[float, typer.Option("--amortize-months", help="Capex amortisation period")] = 36.0,
    kwh: Annotated[float, typer.Option("--usd-per-kwh", help="Electricity price")] = 0.12,
    out: Annotated[str | None, typer.Option("--out", help="Write launch scripts, k8s.yaml, router.sh to DIR")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (rigopt.fleet/1)")] = False,
) -> None:
    """The cheapest fleet that serves a request rate within TTFT/TPOT SLAs: replicas, disaggregated
    prefill/decode pools, mixed GPU types, with $/M tokens and own-vs-rent-vs-API break-even volumes."""
    from optimizer.fleet import ApiPrice, FleetQuery, solve_fleet
    from optimizer.fleet.report import render_fleet
    q = FleetQuery(model=model, isl=_tokens(isl), osl=_tokens(osl), rate_rps=rate, ttft_s=ttft, tpot_s=tpot,
                   percentile=percentile / 100.0, objective=objective, disagg=not no_disagg,
                   gpus=tuple(g.strip() for g in gpus.split(",") if g.strip()) if gpus else None,
                   api_price=ApiPrice.parse(api_price) if api_price else None, amortize_months=months,
                   usd_per_kwh=kwh)
    res = solve_fleet(q)
    if out and res.fleet is not None:
        from optimizer.export.fleet import export_fleet
        export_fleet(res, out)
    _out(res, as_json, render_fleet)
    if res.fleet is None:
        raise typer.Exit(3)
def _cheapest_fleet(sla, unsupported: list[str], out: str | None, as_json: bool) -> None:
    """`rigopt cheapest` in the SLA form: the fleet solver's answer (optimizer/fleet/sla.py decides the form)."""
    from optimizer.errors import InputError
    from optimizer.fleet import solve_fleet
    from optimizer.fleet.report import render_fleet
    from optimizer.fleet.sla import fleet_query
    if unsupported:
        raise InputError(f"{', '.join(unsupported)} do(es) not apply to the SLA form (the cheapest fleet for a "
                         "request rate): drop them, or ask without --tpot/--percentile")
    names = {"isl": "--isl", "osl": "--osl", "rate_rps": "--rate", "ttft_s": "--ttft", "tpot_s": "--tpot",
             "tok_s": "--tok-s", "percentile": "--percentile", "objective": "--objective", "engines": "--engine"}
    res = solve_fleet(fleet_query(sla, names))
    if out and res.fleet is not None:
        from optimizer.export.fleet import export_fleet
        export_fleet(res, out)
    _out(res, as_json, render_fleet)
    if res.fleet is None:
        raise typer.Exit(3)
# ---- end rigopt fleet ----


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


def main() -> None:
    """Entry point: typer app with one-line errors and exit code 2 for bad input."""
    try:
        rc = app(args=_hoist_offline(sys.argv[1:]), standalone_mode=False)  # returns the exit code of typer.Exit in non-standalone mode
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except (typer.Exit, SystemExit) as e:
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code or 0)
    except Exception as e:  # usage errors (click or typer's own click copy) and anything unexpected
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.stderr.write(e.format_message() + "\n")
            sys.exit(2)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        msg = user_error(e)
        if msg is not None:
            _fail(f"error: {msg}", 2)
        _fail(f"internal error: {type(e).__name__}: {e}", 1)
