"""`rigopt calibrate`: the user's measurements against `evaluate()`, and the per-system factors they imply.

Each parsed measurement (optimizer/fidelity/logs.py) is identified (accelerator, device count, engine, model,
quantization: from the log where it says so, from the flags otherwise; flags win), turned into the row schema
of the published-measurement files and predicted by the same deployment builders `rigopt validate` uses
(fidelity/predict.py for single-stream decode/prefill, fidelity/serving.py for served workloads), so a user's
llama-bench row is predicted exactly like a published one. The factor of a system is the geometric mean of
measured/predicted speed over its runs (optimizer/estimate/calibration.py says how evaluate() applies it).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from optimizer.catalog.hardware import get_accelerator, load_hardware
from optimizer.catalog.models import catalogue_key, load_cards, resolve_model
from optimizer.errors import CatalogError, InputError, RigoptError
from optimizer.estimate.calibration import MAX_FACTOR, MIN_FACTOR
from optimizer.estimate.deployment import EngineSettings, evaluate, memory_of
from optimizer.estimate.kv import check_engine
from optimizer.estimate.schemes import get_scheme
from optimizer.fidelity import predict, serving
from optimizer.fidelity.logs import Measurement
from optimizer.limits import MAX_LIST_ITEMS, clip_for_message

# which correction a measured metric informs, and whether a higher value means faster
SPEED_METRICS = {"decode_tok_s": ("decode", True), "prefill_tok_s": ("prefill", True),
                 "tpot_ms": ("decode", False), "ttft_ms": ("prefill", False)}
MEMORY_METRICS = {"weights_bytes": "weights", "kv_pool_bytes": "kv_pool"}


@dataclass(frozen=True)
class Overrides:
    """--model / --gpu / --gpus / --engine / --quant (None = from the log)."""
    model: str | None = None
    gpu: str | None = None
    gpus: int | None = None
    engine: str | None = None
    quant: str | None = None


@dataclass(frozen=True)
class System:
    accelerator: str
    gpus: int
    engine: str
    model: str
    quant: str
    assumed: tuple[str, ...] = ()   # what was not in the log and not given (said in the output)


@dataclass(frozen=True)
class Comparison:
    """One measurement, its prediction and the ratio (speed: measured/predicted speed, so 0.8 = 20% slower
    than predicted; memory: measured/predicted bytes)."""
    measurement: Measurement
    system: System
    predicted: float
    ratio: float | None          # None: output throughput (reported, not fitted)
    correction: str | None       # decode | prefill | weights | kv_pool | None
    note: str = ""
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ identification
_NOISE = {"nvidia", "geforce", "amd", "radeon", "apple", "graphics", "hbm3", "hbm3e", "tensor", "core", "gpu",
          "generation", "(tm)", "instinct", "pcie-gen5"}


def _tokens(name: str) -> set[str]:
    return {t for t in re.split(r"[\s,()/_]+", name.lower()) if t and t not in _NOISE}


def match_accelerator(printed: str) -> str:
    """A catalogue accelerator key for a GPU name as a log prints it ('NVIDIA GeForce RTX 4090',
    'NVIDIA H100 80GB HBM3', 'Radeon 8060S Graphics (RADV GFX1151)'); InputError naming --gpu otherwise."""
    label = clip_for_message(printed)
    try:
        return get_accelerator(printed).key
    except RigoptError:
        pass
    want = _tokens(re.sub(r"\(.*?\)", " ", printed))
    accs = load_hardware().accelerators
    hits = []
    for key, a in accs.items():
        have = _tokens(a.name) | _tokens(key.replace("-", " ")) | {t for al in a.aliases for t in _tokens(al)}
        have |= {a.name.lower().replace(" ", "")}
        if want and want <= have:
            hits.append(key)
    if len(hits) > 1:  # 'H100 80GB' names the SXM part unless the log says PCIe/NVL
        sxm = [k for k in hits if "sxm" in k]
        if len(sxm) == 1 and not ({"pcie", "nvl"} & want):
            hits = sxm
    if len(hits) > 1:  # the stock part the name says, not a variant with words the log does not print
        # ('NVIDIA GeForce RTX 4090' is the rtx-4090, not the 4090 D or the modified 48 GB card)
        extra = {k: len(_tokens(accs[k].name) - want) for k in hits}
        least = min(extra.values())
        if sum(v == least for v in extra.values()) == 1:
            hits = [k for k in hits if extra[k] == least]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise InputError(f"GPU '{label}' matches several catalogue accelerators ({', '.join(sorted(hits))}); "
                         "pass --gpu KEY")
    raise InputError(f"GPU '{label}' is not in the catalogue; pass --gpu KEY (see `rigopt catalog gpus`)")


_FTYPE_SIZE = {"small": "s", "medium": "m", "large": "l"}


def quant_of(label: str) -> str:
    """llama.cpp's file-type name ('Q4_K - Medium', 'IQ2_XXS - 2.0625 bpw', 'MXFP4 MoE', 'Q8_0') -> a preset."""
    parts = label.replace("-", " ").split()
    if not parts:
        raise InputError("empty quantization label; pass --quant")
    name = parts[0].lower()
    for p in parts[1:]:
        if p.lower() in _FTYPE_SIZE:
            name += "_" + _FTYPE_SIZE[p.lower()]
            break
    if name == "f16":
        name = "fp16"
    get_scheme(name)  # InputError naming the known presets
    return name


def _model_from_name(name: str) -> str | None:
    """A catalogue key from a path, HF id or GGUF file name: the last path component, shard and quant suffixes
    stripped word by word ('DeepSeek-V4-Flash-0731-UD-IQ2_XXS-00001-of-00006.gguf' -> deepseek-v4-flash)."""
    cards = load_cards()
    by_hf = {c.hf_id.lower(): k for k, c in cards.items()}
    if name.lower() in by_hf:
        return by_hf[name.lower()]
    base = re.sub(r"\.gguf$", "", name.rstrip("/").split("/")[-1], flags=re.I)
    base = re.sub(r"-\d{5}-of-\d{5}$", "", base)
    words = base.split("-")
    for start in range(min(2, len(words))):  # 'Meta-Llama-3.1-8B-Instruct': a leading vendor word may go too
        for end in range(len(words), start, -1):
            try:
                return catalogue_key("-".join(words[start:end]))
            except CatalogError:
                continue
    return None


# checkpoint-name suffixes of quantized HF repos -> rigopt's quantization (AWQ/GPTQ checkpoints are 4-bit integer)
_NAME_QUANTS = {"fp8": "fp8", "nvfp4": "nvfp4", "mxfp4": "mxfp4", "awq": "int4", "gptq": "int4", "int4": "int4",
                "w4a16": "int4", "int8": "int8", "w8a8": "int8"}


def _quant_in_name(name: str, model: str) -> str | None:
    """'Qwen/Qwen3-235B-A22B-FP8' -> fp8, unless the catalogue model itself is that checkpoint (its key says so)."""
    words = {w.lower() for w in re.split(r"[-_/.]", name)}
    hits = sorted({q for w, q in _NAME_QUANTS.items() if w in words and w not in model.split("-")})
    return hits[0] if len(hits) == 1 else None


def _model_from_params(params_b: float, arch: str) -> str | None:
    """The catalogue model with this many parameters (within 3%) whose key carries the GGUF arch name."""
    tag = re.sub(r"moe$|\d+$", "", arch.lower()) or arch.lower()
    hits = []
    for key in load_cards():
        total = resolve_model(key).spec.total_params() / 1e9
        if abs(total - params_b) <= 0.03 * params_b and tag.replace("-", "") in key.replace("-", ""):
            hits.append(key)
    return hits[0] if len(hits) == 1 else None


def identify(m: Measurement, o: Overrides) -> System:
    where = f"{clip_for_message(m.file)}:{m.line}"
    assumed: list[str] = []
    engine = o.engine or m.engine
    if engine is None:
        raise InputError(f"{where}: the log does not say which engine ran it; pass --engine vllm|sglang|llamacpp")
    engine = check_engine(engine)
    if o.gpu:
        acc = get_accelerator(o.gpu).key
    elif m.hardware_label:
        kinds = sorted({match_accelerator(g) for g in m.hardware_label.split(", ")})
        if len(kinds) > 1:
            raise InputError(f"{where}: the log ran on GPUs of several types ({', '.join(kinds)}); a factor is per "
                             "system of one type: pass --gpu KEY for the one to calibrate")
        acc = kinds[0]
    else:
        raise InputError(f"{where}: the log names no GPU; pass --gpu KEY (see `rigopt catalog gpus`)")
    gpus = o.gpus or m.n_devices
    if gpus is None:
        gpus = 1
        assumed.append("1 GPU (not in the log; pass --gpus N)")
    model: str | None
    if o.model:
        model = resolve_model(o.model).key
    else:
        model = None
        for name in (m.model_file, m.model_label):
            if name:
                model = _model_from_name(name)
                if model:
                    break
        if model is None and m.params_b and m.model_label:
            model = _model_from_params(m.params_b, m.model_label.split()[0])
        if model is None:
            said = m.model_label or m.model_file
            raise InputError(f"{where}: cannot tell the catalogue model"
                             + (f" from '{clip_for_message(said)}'" if said else " (the log does not name it)")
                             + "; pass --model KEY (see `rigopt catalog models`)")
    if o.quant:
        quant = o.quant.strip().lower()
        get_scheme(quant)
    elif m.quant_label:
        quant = quant_of(m.quant_label)
    elif engine != "llamacpp" and (named := _quant_in_name(m.model_label or "", model)):
        quant = named
        assumed.append(f"quant {named} from the model name '{clip_for_message(m.model_label)}' (pass --quant)")
    else:
        quant = "native"
        if engine == "llamacpp":
            raise InputError(f"{where}: the log does not say the GGUF quantization; pass --quant (e.g. q4_k_m)")
        assumed.append("the checkpoint's own weights (quant native; pass --quant)")
    assert model is not None
    return System(accelerator=acc, gpus=int(gpus), engine=engine, model=model, quant=quant, assumed=tuple(assumed))


# ------------------------------------------------------------------------------------------------ prediction
def _row(m: Measurement, s: System) -> dict:
    """The measurement as a row of the published-measurement schema (what predict/serving read)."""
    flags = " ".join(f"-ub {v}" for k, v in m.flags if k in ("n_ubatch",))
    return {"id": f"{m.file}:{m.line}", "model": s.model, "quant": s.quant, "engine": s.engine,
            "accelerator": s.accelerator, "gpus": s.gpus, "batch": 1, "flags": flags}


_PREDICTIONS: dict[str, Any] = {}


def _cached(row: dict, compute: Callable[[], Any]) -> Any:
    """One prediction per distinct row (everything but its id): a log that repeats one test a thousand times
    costs one prediction, not a thousand."""
    key = json.dumps({k: v for k, v in row.items() if k != "id"}, sort_keys=True, default=str)
    if key not in _PREDICTIONS:
        _PREDICTIONS[key] = compute()
    return _PREDICTIONS[key]


def compare(m: Measurement, s: System) -> Comparison:
    """The measurement predicted with `evaluate()` (no calibration) and the ratio that becomes a factor."""
    row = _row(m, s)
    if m.metric in ("decode_tok_s", "prefill_tok_s"):
        if m.metric == "decode_tok_s":
            row.update(metric="decode_tok_s", depth=m.depth, gen_tokens=m.osl or 1)
        else:
            row.update(metric="prefill_tok_s", prompt_tokens=m.isl or 512)
        pred = _cached(row, lambda: predict.predict_speed(row).predicted)
        return _speed(m, s, pred)
    if m.metric in ("tpot_ms", "ttft_ms", "output_tok_s"):
        if not (m.isl and m.osl):
            raise InputError(f"{clip_for_message(m.file)}:{m.line}: the benchmark result states no token counts")
        row["workload"] = {"kind": "serving", "isl": m.isl, "osl": m.osl, "concurrency": m.concurrency}
        def served() -> tuple[float, float, float]:
            sv = evaluate(serving.deployment_of(row)).serving
            assert sv is not None
            return sv.output_tok_s, sv.tpot_s, sv.ttft_s
        out_tok_s, tpot_s, ttft_s = _cached(row, served)
        if m.metric == "output_tok_s":
            return Comparison(m, s, out_tok_s, None, None, "output throughput: shown, not fitted (TPOT is)")
        return _speed(m, s, (tpot_s if m.metric == "tpot_ms" else ttft_s) * 1e3)
    if m.metric in MEMORY_METRICS or m.metric in ("kv_pool_tokens", "max_concurrency"):
        return _memory(m, s, row)
    raise InputError(f"{clip_for_message(m.file)}:{m.line}: unknown metric {m.metric}")


def _speed(m: Measurement, s: System, pred: float) -> Comparison:
    corr, higher_faster = SPEED_METRICS[m.metric]
    if not (pred > 0 and math.isfinite(pred)):
        return Comparison(m, s, pred, None, None, "rigopt predicts no finite figure here: not fitted")
    ratio = m.value / pred if higher_faster else pred / m.value
    note = ""
    if not MIN_FACTOR <= ratio <= MAX_FACTOR:
        return Comparison(m, s, pred, ratio, None, f"ratio {ratio:.3g} outside {MIN_FACTOR}..{MAX_FACTOR}: "
                          "not fitted (another system, or a wrong --model/--gpu/--quant?)")
    if m.metric == "ttft_ms" and m.concurrency > 1:
        return Comparison(m, s, pred, ratio, None, f"served TTFT at concurrency {m.concurrency}: shown, not "
                          "fitted (queueing and batching dominate it; a concurrency-1 run or llama-bench pp "
                          "calibrates prefill)")
    if m.metric == "prefill_tok_s" and m.depth:
        return Comparison(m, s, pred, ratio, None, "prefill at depth: rigopt's prefill model has no depth term; "
                          "shown, not fitted")
    return Comparison(m, s, pred, ratio, corr, note)


def _memory(m: Measurement, s: System, row: dict) -> Comparison:
    """Startup figures at the log's own max_model_len (the context vLLM/SGLang sized the pool for)."""
    ctx = m.max_model_len or 4096
    row["workload"] = {"kind": "serving", "isl": max(1, ctx - 1), "osl": 1, "concurrency": 1}
    d = serving.deployment_of(row)  # context = isl + osl = the log's max_model_len
    gmu, mfs = m.flag("gpu_memory_utilization"), m.flag("mem_fraction_static")
    if gmu or mfs:  # the fraction the run was started with, as its args line prints it
        d = replace(d, settings=EngineSettings(gpu_memory_utilization=float(gmu) if gmu else None,
                                               mem_fraction_static=float(mfs) if mfs else None))
    mem = memory_of(d)
    if m.metric in ("kv_pool_tokens", "max_concurrency"):
        ev = evaluate(d)
        per_tok = ev.kv.growth_bytes_per_token() / d.parallel.pp
        pred = mem.kv_available_bytes / per_tok if m.metric == "kv_pool_tokens" else float(ev.max_concurrency)
        return Comparison(m, s, pred, m.value / pred if pred > 0 else None, None, "shown, not fitted")
    pred = mem.weights_bytes if m.metric == "weights_bytes" else mem.kv_available_bytes
    ratio = m.value / pred if pred > 0 else None
    return Comparison(m, s, pred, ratio, MEMORY_METRICS[m.metric] if ratio else None,
                      "memory factor: recorded in the profile, not applied")


# ------------------------------------------------------------------------------------------------ factors
def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def system_keys(s: System) -> list[tuple[str, int, str, str | None, str | None]]:
    """The profile keys a run informs: the system with this model + quant, and the system as a whole."""
    return [(s.accelerator, s.gpus, s.engine, s.model, s.quant), (s.accelerator, s.gpus, s.engine, None, None)]


# ------------------------------------------------------------------------------------------------ the command
class RowReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str                 # file:line
    kind: str
    metric: str
    unit: str
    workload: str
    system: str
    measured: float
    predicted: float
    ratio: float | None
    correction: str | None
    note: str


class FactorReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str
    factors: dict[str, float]
    runs: dict[str, int]


class CalibrateResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_id: str = "rigopt.calibrate/1"
    profile: str
    written: bool
    rows: list[RowReport]
    factors: list[FactorReport]
    assumed: list[str]


def _workload(m: Measurement) -> str:
    if m.metric in ("decode_tok_s", "prefill_tok_s"):
        if m.kind == "llama-bench":
            t = f"pp{m.isl}" if m.metric == "prefill_tok_s" else f"tg{m.osl}"
            return t + (f" @ d{m.depth}" if m.depth else "")
        return f"prompt {m.isl}, {m.osl} generated"
    if m.metric in ("tpot_ms", "ttft_ms", "output_tok_s"):
        return f"{m.isl}/{m.osl} c{m.concurrency}"
    return f"max_model_len {m.max_model_len}" if m.max_model_len else "startup"


def run_calibrate(logs: list[str], o: Overrides, profile: str | None, dry_run: bool) -> CalibrateResult:
    """Parse every log, predict every measurement, merge the ratios into the profile (unless dry_run)."""
    from optimizer.fidelity.logs import parse_file
    from optimizer.fidelity.profile import sha256_of
    if not logs:
        raise InputError("give at least one log file")
    if len(logs) > MAX_LIST_ITEMS:
        raise InputError(f"{len(logs):,} log files (limit {MAX_LIST_ITEMS:,})")
    return calibrate_measurements([(log, sha256_of(log), parse_file(log)) for log in logs], o, profile, dry_run)


def calibrate_measurements(sources: list[tuple[str, str, list[Measurement]]], o: Overrides, profile: str | None,
                           dry_run: bool) -> CalibrateResult:
    """Predict every measurement of every source (name, sha256 of its content, measurements) and merge the
    ratios into the profile (unless dry_run): `rigopt calibrate` for logs, `rigopt verify --calibrate` for a run
    it measured itself."""
    from optimizer.fidelity.profile import Run, default_path, merge, provenance_for, read_profile, write_profile
    _PREDICTIONS.clear()  # per run: predictions depend on the factors in force
    path = Path(profile).expanduser() if profile else default_path()
    prof = read_profile(path)
    rows: list[RowReport] = []
    runs: list[tuple[tuple[str, int, str, str | None, str | None], Run]] = []
    prov = []
    assumed: list[str] = []
    for log, sha, ms in sources:
        n = 0
        for m in ms:
            s = identify(m, o)
            for a in s.assumed:
                if f"{m.file}: {a}" not in assumed:
                    assumed.append(f"{m.file}: {a}")
            c = compare(m, s)
            sysl = f"{s.gpus}x {s.accelerator} {s.engine} {s.model} {s.quant}"
            rows.append(RowReport(source=f"{m.file}:{m.line}", kind=m.kind, metric=m.metric, unit=m.unit,
                                  workload=_workload(m), system=sysl, measured=m.value, predicted=c.predicted,
                                  ratio=c.ratio, correction=c.correction, note=c.note))
            if c.correction and c.ratio:
                n += 1
                run = Run.model_validate(dict(metric=c.correction, ratio=c.ratio, measured=m.value,
                                              predicted=c.predicted, unit=m.unit, source=f"{m.file}:{m.line}",
                                              sha256=sha))
                runs.extend((k, run) for k in system_keys(s))
        prov.append(provenance_for(log, sha, n))
    if not runs:
        raise InputError("no measurement could be fitted (see the notes); nothing to store")
    new = merge(prof, runs, prov)
    touched = {k for k, _ in runs}
    factors = []
    for e in new.entries:
        if (e.accelerator, e.gpus, e.engine, e.model, e.quant) not in touched:
            continue
        label = f"{e.gpus}x {e.accelerator} {e.engine}" + (f" {e.model} {e.quant}" if e.model else " (all models)")
        factors.append(FactorReport(system=label, factors=dict(e.factors),
                                    runs={mt: sum(1 for r in e.runs if r.metric == mt) for mt in e.factors}))
    if not dry_run:
        write_profile(path, new)
    return CalibrateResult(profile=str(path), written=not dry_run, rows=rows, factors=factors, assumed=assumed)


def _fmt(v: float, unit: str) -> str:
    if unit == "bytes":
        return f"{v / 2**30:,.2f} GiB"
    return f"{v:,.2f} {unit}"


def render_calibrate(r: CalibrateResult, console) -> None:
    from rich.table import Table
    t = Table(title="your measurements vs rigopt's prediction (ratio = measured/predicted speed, or bytes)")
    for col in ("source", "metric", "workload", "system", "measured", "predicted", "ratio", "fits"):
        t.add_column(col)
    for row in r.rows:
        t.add_row(row.source, row.metric, row.workload, row.system, _fmt(row.measured, row.unit),
                  _fmt(row.predicted, row.unit), "-" if row.ratio is None else f"×{row.ratio:.3f}",
                  row.correction or "-")
    console.print(t)
    for row in r.rows:
        if row.note:
            console.print(f"  {row.source}: {row.note}")
    for a in r.assumed:
        console.print(f"assumed: {a}")
    for f in r.factors:
        parts = ", ".join(f"{k} ×{v:.3f} ({f.runs[k]} run{'s' if f.runs[k] != 1 else ''})"
                          for k, v in f.factors.items())
        console.print(f"factor {f.system}: {parts}")
    console.print(("profile written: " if r.written else "dry run, profile not written: ") + r.profile)
