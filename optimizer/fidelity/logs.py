"""Read the user's own measurement output into typed records (for `rigopt calibrate`).

Formats, each recognised by its own marker lines (exact strings from the engines' source):

  llama-bench    markdown table `| model | size | params | backend | ... | test | t/s |` (tests `pp512`,
                 `tg128`, `pp512 @ d4096`), and its `-o json` / `-o jsonl` / `-o csv` output (keys model_type,
                 model_filename, model_n_params, n_prompt, n_gen, n_depth, avg_ts, gpu_info, backends; llama.cpp
                 tools/llama-bench/llama-bench.cpp). Rows without a header line are read by position: model, size,
                 params and backend are always the first four columns, test and t/s the last two.
  llama-server   server_slot::print_timings (llama.cpp 0c1e57098 tools/server/server-context.cpp):
                 `prompt eval time = %10.2f ms / %5d tokens (%8.2f ms per token, %8.2f tokens per second)` and
                 `       eval time = %10.2f ms / %5d tokens (...)`; llama-cli's llama_perf_context_print prints
                 `runs` instead of `tokens` on the eval line and is read the same way.
  vllm bench     `============ Serving Benchmark Result ============` with `Successful requests:`,
                 `Maximum request concurrency:`, `Total input tokens:`, `Total generated tokens:`,
                 `Output token throughput (tok/s):`, `Mean/Median TTFT (ms):`, `Mean/Median TPOT (ms):`
                 (vllm/benchmarks/serve.py), and its --save-result JSON (completed, total_input_tokens,
                 total_output_tokens, max_concurrency, median_ttft_ms, median_tpot_ms, output_throughput).
  sglang bench   the same banner with `Backend:` and `Max request concurrency:` (sglang/bench_serving.py), and
                 its JSONL output (one result object per line, the same keys as vLLM's JSON).
  vllm startup   `Model loading took X GiB`, `Available KV cache memory: X GiB`, `GPU KV cache size: N tokens`,
                 `Maximum concurrency for N tokens per request: Xx` (vllm/v1/worker/gpu_model_runner.py,
                 gpu_worker.py, v1/core/kv_cache_utils.py); the model and TP size from its args line.
  sglang startup `Load weight end. ... mem usage=X GB`, `KV Cache is allocated. #tokens: N, K size: a GB,
                 V size: b GB` (or `KV size: X GB` for MLA), `max_total_num_tokens=N` (sglang/srt/mem_cache/
                 memory_pool.py, model_executor/model_runner.py; SGLang's GB there is 2**30 bytes).

Everything else is refused with one error line. Reads are bounded (optimizer/limits.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from optimizer.errors import InputError
from optimizer.limits import (
    MAX_LOG_BYTES,
    MAX_LOG_JSON_CONTAINERS,
    MAX_LOG_LINES,
    MAX_NESTING,
    MAX_NUMBER_CHARS,
    MAX_SIZE_BYTES,
    clip_for_message,
    json_shape,
    read_text_bounded,
)
from optimizer.limits import MAX_MEASUREMENTS as MAX_RECORDS
from optimizer.units import MAX_CONCURRENCY, MAX_CONTEXT_TOKENS, GiB

_LONG_NUMBER = re.compile(rf"\d{{{MAX_NUMBER_CHARS + 1},}}")
BANNER = "Serving Benchmark Result"


@dataclass(frozen=True)
class Measurement:
    """One figure the user measured, with everything the log says about how.

    metric: decode_tok_s | prefill_tok_s (tokens/s of one sequence), tpot_ms | ttft_ms (serving, milliseconds),
    output_tok_s (serving, all GPUs), weights_bytes | kv_pool_bytes (per GPU, bytes), kv_pool_tokens,
    max_concurrency. Workload: isl prompt tokens, osl generated tokens, depth = KV already in context before the
    test (llama-bench `@ dN`), concurrency = sequences in flight."""
    file: str
    line: int
    kind: str   # llama-bench | llama-server | vllm-bench | sglang-bench | vllm-startup | sglang-startup
    metric: str
    value: float
    unit: str
    isl: int | None = None
    osl: int | None = None
    depth: int = 0
    concurrency: int = 1
    engine: str | None = None      # vllm | sglang | llamacpp
    engine_version: str | None = None
    model_label: str | None = None     # as printed: llama-bench model column, vLLM/SGLang model path or id
    model_file: str | None = None      # a .gguf path when printed
    params_b: float | None = None      # total parameters (billions) when printed (llama-bench params column)
    quant_label: str | None = None     # as printed: `Q4_K - Medium`, `MXFP4 MoE`, ...
    hardware_label: str | None = None  # GPU name(s) as printed
    n_devices: int | None = None       # devices the log names (CUDA devices found, TP size, ...)
    max_model_len: int | None = None   # vLLM/SGLang context the startup figures are for
    flags: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def flag(self, name: str) -> str | None:
        return dict(self.flags).get(name)


def parse_file(path: str) -> list[Measurement]:
    """Every measurement in one log file; InputError naming the file when it holds none rigopt can read."""
    text = read_text_bounded(path, MAX_LOG_BYTES, "log")
    name = Path(path).name
    return parse_text(text, name)


def parse_text(text: str, name: str) -> list[Measurement]:
    label = clip_for_message(name)
    stripped = text.strip()
    if not stripped:
        raise InputError(f"log {label}: empty")
    lines = stripped.count("\n") + 1
    if lines > MAX_LOG_LINES:
        raise InputError(f"log {label}: {lines:,} lines, more than the limit of {MAX_LOG_LINES:,}")
    out: list[Measurement] = []
    js = _json_results(stripped, name) if stripped[0] in "[{" else None
    if js is not None:  # JSON / JSONL (a log line starting with `[2025-...` is not: it is read as text)
        out = js
    elif _is_bench_csv(stripped):
        out = _llama_bench_csv(stripped, name)
    else:
        long_number = _LONG_NUMBER.search(text)
        if long_number:
            line = text.count("\n", 0, long_number.start()) + 1
            raise InputError(f"log {label}: line {line}: a number of more than {MAX_NUMBER_CHARS} digits")
        try:  # the parsers' float()/int() of matched digits: '1.2.3' or a 1e400 is a malformed log, not a bug
            ctx = _context(text)
            for parser in (_llama_bench_table, _llama_server, _serving_blocks, _vllm_startup, _sglang_startup):
                out.extend(parser(text, name, ctx))
        except (ValueError, OverflowError) as e:
            raise InputError(f"log {label}: a malformed number ({clip_for_message(str(e), 60)})") from None
    if not out:
        raise InputError(f"log {label}: no llama-bench table, llama-server timings, vllm/sglang benchmark result or "
                         "vLLM/SGLang startup lines found (see `rigopt calibrate --help` for the formats)")
    if len(out) > MAX_RECORDS:
        raise InputError(f"log {label}: {len(out):,} measurements (limit {MAX_RECORDS:,})")
    for m in out:
        if not (math.isfinite(m.value) and 0 <= m.value < 1e30):
            raise InputError(f"log {label}: line {m.line}: {m.metric} {clip_for_message(m.value)} is out of range")
    return out


# ------------------------------------------------------------------------------------------------ context
@dataclass(frozen=True)
class _Ctx:
    """What a plain-text log says about its system outside the measurement lines."""
    gpus: tuple[str, ...] = ()
    gguf: str | None = None
    arch: str | None = None
    size_label: str | None = None
    file_type: str | None = None
    params_b: float | None = None
    build: str | None = None


_CUDA_DEV = re.compile(r"^\s*Device (\d+): (.+?), compute capability", re.M)
_VULKAN_DEV = re.compile(r"^ggml_vulkan: (\d+) = (.+?) \(", re.M)
_ROCM_DEV = re.compile(r"^\s*Device (\d+): (AMD .+?), gfx", re.M)
_METAL_DEV = re.compile(r"ggml_metal_(?:init|device_init): (?:found device|GPU name): +(.+)$", re.M)
# llama-bench ends with `build: <commit> (<number>)`, llama-server starts with `build: <number> (<commit>)`
_BUILD = re.compile(r"^build: (?:(\d+) \(([0-9a-f]{7,})\)|([0-9a-f]{7,}) \((\d+)\))", re.M)


def _context(text: str) -> _Ctx:
    devs: dict[int, str] = {}
    for rx in (_CUDA_DEV, _ROCM_DEV, _VULKAN_DEV):
        for m in rx.finditer(text):
            devs.setdefault(int(m.group(1)), m.group(2).strip())
    gpus = tuple(devs[k] for k in sorted(devs))
    if not gpus:
        metal = _METAL_DEV.search(text)
        if metal:
            gpus = (metal.group(1).strip(),)
    gguf = (re.search(r"from (\S+\.gguf)\b", text)
            or re.search(r"(?:^|\s)(?:-m|--model) +['\"]?(\S+?\.gguf)", text, re.M))

    def info(key: str) -> str | None:
        m = re.search(rf"^(?:print_info|llm_load_print_meta): {key}\s*=\s*(.+?)\s*$", text, re.M)
        return m.group(1) if m else None

    params = info("model params")
    pb = None
    if params:
        pm = re.match(r"([\d.]+) ([KMBT])", params)
        if pm:
            pb = float(pm.group(1)) * {"K": 1e-6, "M": 1e-3, "B": 1.0, "T": 1e3}[pm.group(2)]
    b = _BUILD.search(text)
    return _Ctx(gpus=gpus, gguf=gguf.group(1) if gguf else None, arch=info("arch"), size_label=info("model type"),
                file_type=info("file type"), params_b=pb,
                build=(f"b{b.group(1) or b.group(4)} ({b.group(2) or b.group(3)})" if b else None))


# ------------------------------------------------------------------------------------------------ llama-bench
_TEST = re.compile(r"^(pp|tg)(\d+)(?: @ d(\d+))?$")
_TS = re.compile(r"^([\d.]+)(?: ± [\d.]+)?$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _llama_bench_table(text: str, name: str, ctx: _Ctx) -> list[Measurement]:
    out: list[Measurement] = []
    header: list[str] | None = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line.startswith("|"):
            continue
        line = line[:line.rindex("|") + 1]  # text pasted after the last row (`| build: ...`) is not a cell
        # the excerpts people paste join rows as `| ... | | ... |`: split them back
        for row in re.split(r"\|\s+\|(?=\s*[^\s|-])", line):
            cells = _cells(row)
            if len(cells) < 6:
                continue
            if cells[0] == "model" and cells[-1] == "t/s":
                header = cells
                continue
            if set("".join(cells)) <= set("-: "):
                continue
            m = _TEST.match(cells[-2])
            ts = _TS.match(cells[-1].replace("\u00b1", "±"))
            if not (m and ts):
                continue
            cols = header if header and len(header) == len(cells) else None
            kv = dict(zip(cols, cells, strict=False)) if cols else {}
            mode, n, depth = m.group(1), int(m.group(2)), int(m.group(3) or 0)
            model_col = cells[0]
            quant = _ftype_of(model_col)
            params = re.match(r"([\d.]+) ([KMBT])$", cells[2])
            scale = {"K": 1e-6, "M": 1e-3, "B": 1.0, "T": 1e3}
            pb = float(params.group(1)) * scale[params.group(2)] if params else None
            flags = tuple((k, v) for k, v in kv.items() if k not in ("model", "size", "params", "test", "t/s"))
            if not kv:
                flags = (("backend", cells[3]),)
            out.append(Measurement(
                file=name, line=no, kind="llama-bench", metric="prefill_tok_s" if mode == "pp" else "decode_tok_s",
                value=float(ts.group(1)), unit="tok/s", isl=n if mode == "pp" else None,
                osl=n if mode == "tg" else None, depth=depth, concurrency=1, engine="llamacpp",
                engine_version=ctx.build, model_label=model_col, model_file=ctx.gguf, params_b=pb, quant_label=quant,
                hardware_label=", ".join(ctx.gpus) or None, n_devices=len(ctx.gpus) or None, flags=flags))
    return out


def _ftype_of(model_col: str) -> str | None:
    """`qwen3moe 30B.A3B Q4_K - Medium` -> `Q4_K - Medium` (llama.cpp model type = arch, size label, file type)."""
    parts = model_col.split()
    if len(parts) < 3:
        return None
    return " ".join(parts[2:])


def _bench_record(r: dict, name: str, line: int) -> list[Measurement]:
    try:
        n_prompt, n_gen = int(r.get("n_prompt") or 0), int(r.get("n_gen") or 0)
        depth = int(r.get("n_depth") or 0)
        ts = float(str(r["avg_ts"]))
    except (KeyError, TypeError, ValueError, OverflowError):
        return []
    if not (math.isfinite(ts) and ts > 0) or not all(0 <= v <= MAX_CONTEXT_TOKENS for v in (n_prompt, n_gen, depth)):
        return []
    if (n_prompt > 0) == (n_gen > 0):
        return []  # pp+tg combined tests (-pg) mix both speeds: not one figure
    model_type = str(r.get("model_type") or "")
    params = r.get("model_n_params")
    flags = tuple((k, str(r[k])) for k in ("backends", "n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "type_k",
                                           "type_v", "split_mode") if k in r)
    version = f"b{r['build_number']} ({r['build_commit']})" if r.get("build_commit") else None
    gpu = str(r.get("gpu_info") or "").strip() or None
    return [Measurement(
        file=name, line=line, kind="llama-bench", metric="prefill_tok_s" if n_prompt else "decode_tok_s", value=ts,
        unit="tok/s", isl=n_prompt or None, osl=n_gen or None, depth=depth, concurrency=1, engine="llamacpp",
        engine_version=version, model_label=model_type or None, model_file=str(r.get("model_filename") or "") or None,
        params_b=float(str(params)) / 1e9 if str(params).isdigit() else None,
        quant_label=_ftype_of(model_type), hardware_label=gpu, n_devices=len(gpu.split(",")) if gpu else None,
        flags=flags)]


def _is_bench_csv(text: str) -> bool:
    first = text.splitlines()[0]
    return first.count(",") >= 5 and "avg_ts" in first and "n_prompt" in first


def _llama_bench_csv(text: str, name: str) -> list[Measurement]:
    out: list[Measurement] = []
    for i, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
        out.extend(_bench_record(dict(row), name, i))
    return out


# ------------------------------------------------------------------------------------------------ JSON results
_SERVING_KEYS = ("completed", "total_input_tokens", "total_output_tokens")


def _json_results(text: str, name: str) -> list[Measurement] | None:
    """Records of a JSON or JSONL file; None when its first line is not JSON at all (a text log)."""
    label = clip_for_message(name)
    objs: list[tuple[int, object]] = []
    # shape before parsing: json.loads recurses per level, and 200,000 records cost seconds and ~1 GB to build
    depth, objects = json_shape(text, MAX_NESTING, MAX_LOG_JSON_CONTAINERS)
    if depth > MAX_NESTING:
        raise InputError(f"log {label}: nested deeper than {MAX_NESTING} levels")
    if objects > MAX_LOG_JSON_CONTAINERS:
        raise InputError(f"log {label}: more than {MAX_LOG_JSON_CONTAINERS:,} JSON objects/arrays")
    try:
        objs = [(1, json.loads(text))]
    except ValueError:
        for no, line in enumerate(text.splitlines(), 1):  # JSONL: one object per line
            if line.strip():
                try:
                    objs.append((no, json.loads(line)))
                except ValueError:
                    if not objs:
                        return None
                    raise InputError(f"log {label}: line {no}: not valid JSON") from None
    rows: list[tuple[int, dict]] = []
    for no, o in objs:
        if isinstance(o, list):
            rows.extend((no, x) for x in o if isinstance(x, dict))
        elif isinstance(o, dict):
            rows.append((no, o))
    if len(rows) > MAX_RECORDS:
        raise InputError(f"log {label}: {len(rows):,} records (limit {MAX_RECORDS:,} measurements)")
    out: list[Measurement] = []
    for no, r in rows:
        if "avg_ts" in r and ("n_prompt" in r or "n_gen" in r):
            out.extend(_bench_record(r, name, no))
        elif all(k in r for k in _SERVING_KEYS):
            out.extend(_serving_json(r, name, no))
    return out


def _serving_json(r: dict, name: str, line: int) -> list[Measurement]:
    try:
        done = int(r["completed"])
        tin, tout = int(r["total_input_tokens"]), int(r["total_output_tokens"])
        conc_v = r.get("max_concurrency")
        conc_i = int(conc_v) if isinstance(conc_v, (int, float)) and not isinstance(conc_v, bool) and conc_v else 0
    except (TypeError, ValueError, OverflowError):
        return []
    if not 0 < done <= MAX_CONCURRENCY * 1000 or not (0 <= tin <= MAX_SIZE_BYTES and 0 <= tout <= MAX_SIZE_BYTES):
        return []
    if not 0 <= conc_i <= MAX_CONCURRENCY:
        return []
    backend = str(r.get("backend") or "")
    # SGLang's JSONL names the server backend (sglang, sglang-oai, vllm when pointed at vLLM); vLLM's JSON has
    # `endpoint_type`/`backend` = openai, vllm, ...: the engine is stated by --engine when ambiguous
    engine = "sglang" if backend.startswith("sglang") else ("vllm" if backend in ("vllm", "openai", "openai-chat")
                                                             or "endpoint_type" in r else None)
    conc = conc_i
    if not conc and str(r.get("request_rate")) in ("inf", "Infinity"):
        conc = done
    values = [("ttft_ms", r.get("median_ttft_ms", r.get("mean_ttft_ms")), "ms"),
              ("tpot_ms", r.get("median_tpot_ms", r.get("mean_tpot_ms")), "ms"),
              ("output_tok_s", r.get("output_throughput"), "tok/s")]
    model = r.get("model_id") or r.get("model") or r.get("tokenizer_id")
    out = []
    for metric, v, unit in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e30:
            out.append(Measurement(file=name, line=line, kind=f"{engine or 'vllm'}-bench", metric=metric,
                                   value=float(v), unit=unit, isl=round(tin / done), osl=round(tout / done),
                                   concurrency=int(conc) if conc else 1, engine=engine or "vllm",
                                   model_label=str(model) if model else None,
                                   flags=(("request_rate", str(r.get("request_rate"))),
                                          ("completed", str(done)))))
    return out


# ------------------------------------------------------------------------------------------------ llama-server
_PROMPT = re.compile(r"prompt eval time = +([\d.]+) ms / +(\d+) tokens \( *([\d.]+) ms per token, +([\d.]+) "
                     r"tokens per second\)")
_EVAL = re.compile(r"(?<!prompt) eval time = +([\d.]+) ms / +(\d+) (?:tokens|runs) +\( *([\d.]+) ms per token, +"
                   r"([\d.]+) tokens per second\)")


def _llama_server(text: str, name: str, ctx: _Ctx) -> list[Measurement]:
    out: list[Measurement] = []
    lines = text.splitlines()
    model = " ".join(x for x in (ctx.arch, ctx.size_label, ctx.file_type) if x) or None
    common = dict(file=name, kind="llama-server", engine="llamacpp", engine_version=ctx.build, model_label=model,
                  model_file=ctx.gguf, params_b=ctx.params_b, quant_label=ctx.file_type,
                  hardware_label=", ".join(ctx.gpus) or None, n_devices=len(ctx.gpus) or None)
    pending: tuple[int, int, float] | None = None
    for no, line in enumerate(lines, 1):
        p = _PROMPT.search(line)
        if p:
            pending = (no, int(p.group(2)), float(p.group(4)))
            continue
        e = _EVAL.search(line)
        if e and pending is not None:
            pno, n_prompt, pf_tps = pending
            n_gen, tps = int(e.group(2)), float(e.group(4))
            if n_prompt >= 16 and pf_tps > 0:  # a handful of uncached prompt tokens says nothing about prefill
                out.append(Measurement(line=pno, metric="prefill_tok_s", value=pf_tps, unit="tok/s", isl=n_prompt,
                                       osl=n_gen, **common))  # type: ignore[arg-type]
            if n_gen >= 2 and tps > 0:
                out.append(Measurement(line=no, metric="decode_tok_s", value=tps, unit="tok/s", isl=n_prompt,
                                       osl=n_gen, depth=n_prompt, **common))  # type: ignore[arg-type]
            pending = None
    return out


# ------------------------------------------------------------------------------------------------ serving blocks
_NUM = r"([\d.]+|inf|not set)"


def _serving_blocks(text: str, name: str, _ctx: _Ctx) -> list[Measurement]:
    out: list[Measurement] = []
    lines = text.splitlines()
    searched = False
    model: re.Match | None = None
    i = 0
    while i < len(lines):
        if BANNER not in lines[i] or not lines[i].lstrip().startswith("="):
            i += 1
            continue
        start = i
        block: dict[str, str] = {}
        at: dict[str, int] = {}
        i += 1
        while i < len(lines) and not re.match(r"^\s*={10,}\s*$", lines[i]) and BANNER not in lines[i]:
            m = re.match(r"^\s*([^:]+?):\s+(.+?)\s*$", lines[i])
            if m:
                block[m.group(1)] = m.group(2)
                at[m.group(1)] = i + 1
            i += 1
        if not searched:  # once per log, not per block (a log of 3,000 blocks searched itself 3,000 times)
            model = re.search(r"model=['\"]([^'\"]+)['\"]", text) or re.search(r"--model(?:-path)?[ =](\S+)", text)
            searched = True
        out.extend(_serving_block(block, at, start + 1, name, model))
    return out


def _finite(text: str) -> float | None:
    """A number printed in a log, None when it is not one or not finite ('1.2.3', a 400-digit run)."""
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) and abs(v) < 1e30 else None


def _serving_block(b: dict[str, str], at: dict[str, int], line: int, name: str,
                   model: re.Match | None) -> list[Measurement]:
    def num(key: str) -> float | None:
        v = b.get(key)
        if v is None:
            return None
        m = re.match(r"^([\d.]+)", v)
        return _finite(m.group(1)) if m else None

    sglang = "Backend" in b or "Max request concurrency" in b
    done = num("Successful requests")
    tin, tout = num("Total input tokens"), num("Total generated tokens")
    if not done or tin is None or tout is None:
        return []
    conc_raw = b.get("Max request concurrency") or b.get("Maximum request concurrency")
    conc_v = _finite(conc_raw) if conc_raw and re.match(r"^[\d.]+$", conc_raw) else None
    conc = int(conc_v) if conc_v is not None and 0 < conc_v <= MAX_CONCURRENCY else None
    rate = b.get("Traffic request rate") or b.get("Request rate configured (RPS)") or "inf"
    if conc is None and rate.strip() == "inf":
        conc = int(done)  # every request at once: a burst of num_prompts in flight
    if not 0 < done <= MAX_CONCURRENCY * 1000 or not (0 <= tin <= MAX_SIZE_BYTES and 0 <= tout <= MAX_SIZE_BYTES):
        return []
    engine = "sglang" if sglang else "vllm"
    out = []
    for metric, key, unit in (("ttft_ms", "Median TTFT (ms)", "ms"), ("tpot_ms", "Median TPOT (ms)", "ms"),
                              ("output_tok_s", "Output token throughput (tok/s)", "tok/s")):
        v = num(key)
        if v is None and metric != "output_tok_s":
            key = key.replace("Median", "Mean")
            v = num(key)
        if v is None or v <= 0:
            continue
        out.append(Measurement(file=name, line=at.get(key, line), kind=f"{engine}-bench", metric=metric, value=v,
                               unit=unit, isl=round(tin / done), osl=round(tout / done),
                               concurrency=conc or 1, engine=engine,
                               model_label=model.group(1) if model else None,
                               flags=(("request_rate", rate.strip()), ("successful_requests", str(int(done))))))
    return out


# ------------------------------------------------------------------------------------------------ startup logs
def _vllm_startup(text: str, name: str, ctx: _Ctx) -> list[Measurement]:
    ver = re.search(r"vLLM API server version (\S+)", text) or re.search(r"LLM engine \((v\S+?)\)", text)
    model = (re.search(r"non-default args: \{[^}]*'model': '([^']+)'", text)
             or re.search(r"with config: model='([^']+)'", text)
             or re.search(r"vllm serve (\S+)", text))
    tp = re.search(r"'tensor_parallel_size': (\d+)", text) or re.search(r"tensor_parallel_size=(\d+)", text)
    mml = re.search(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x", text)
    gmu = re.search(r"'gpu_memory_utilization': ([\d.]+)", text)
    common = dict(file=name, kind="vllm-startup",
                  flags=(("gpu_memory_utilization", gmu.group(1)),) if gmu else (),
                  engine="vllm", engine_version=ver.group(1) if ver else None,
                  model_label=model.group(1) if model else None, n_devices=int(tp.group(1)) if tp else None,
                  hardware_label=", ".join(ctx.gpus) or None,
                  max_model_len=int(mml.group(1).replace(",", "")) if mml else None)
    out: list[Measurement] = []
    for no, line in enumerate(text.splitlines(), 1):
        m = re.search(r"Model loading took ([\d.]+) ?GiB", line)
        if m:
            out.append(Measurement(line=no, metric="weights_bytes", value=float(m.group(1)) * GiB, unit="bytes",
                                   **common))  # type: ignore[arg-type]
        m = re.search(r"Available KV cache memory: ([-\d.]+) GiB", line)
        if m:
            out.append(Measurement(line=no, metric="kv_pool_bytes", value=float(m.group(1)) * GiB, unit="bytes",
                                   **common))  # type: ignore[arg-type]
        m = re.search(r"GPU KV cache size: ([\d,]+) tokens", line)
        if m:
            out.append(Measurement(line=no, metric="kv_pool_tokens", value=float(m.group(1).replace(",", "")),
                                   unit="tokens", **common))  # type: ignore[arg-type]
        m = re.search(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x", line)
        if m:
            out.append(Measurement(line=no, metric="max_concurrency", value=float(m.group(2)), unit="x",
                                   **common))  # type: ignore[arg-type]
    return out


def _sglang_startup(text: str, name: str, ctx: _Ctx) -> list[Measurement]:
    model = re.search(r"model_path='([^']+)'", text)
    tp = re.search(r"\btp_size=(\d+)", text)
    ctxlen = re.search(r"\bcontext_length=(\d+)", text) or re.search(r"context_len=(\d+)", text)
    ver = re.search(r"sglang[ =](?:version )?v?(\d+\.\d+\.\d+\S*)", text, re.I)
    mfs = re.search(r"\bmem_fraction_static=([\d.]+)", text)
    common = dict(file=name, kind="sglang-startup",
                  flags=(("mem_fraction_static", mfs.group(1)),) if mfs else (),
                  engine="sglang", engine_version=ver.group(1) if ver else None,
                  model_label=model.group(1) if model else None, n_devices=int(tp.group(1)) if tp else None,
                  hardware_label=", ".join(ctx.gpus) or None,
                  max_model_len=int(ctxlen.group(1)) if ctxlen else None)
    out: list[Measurement] = []
    seen: set[str] = set()  # every TP rank prints the same lines: the first of each
    for no, line in enumerate(text.splitlines(), 1):
        m = re.search(r"Load weight end\..*?mem usage=([\d.]+) GB", line)
        if m and "w" not in seen:
            seen.add("w")
            out.append(Measurement(line=no, metric="weights_bytes", value=float(m.group(1)) * GiB, unit="bytes",
                                   **common))  # type: ignore[arg-type]
        m = re.search(r"KV Cache is allocated\..*?#tokens: (\d+), (?:K size: ([\d.]+) GB, V size: ([\d.]+) GB|"
                      r"KV size: ([\d.]+) GB)", line)
        if m and "kv" not in seen:
            seen.add("kv")
            gb = float(m.group(4)) if m.group(4) else float(m.group(2)) + float(m.group(3))
            out.append(Measurement(line=no, metric="kv_pool_bytes", value=gb * GiB, unit="bytes",
                                   **common))  # type: ignore[arg-type]
            out.append(Measurement(line=no, metric="kv_pool_tokens", value=float(m.group(1)), unit="tokens",
                                   **common))  # type: ignore[arg-type]
    return out
