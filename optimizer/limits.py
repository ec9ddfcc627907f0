"""Input limits: the one policy for how much rigopt accepts from a file or a command line.

Every entry point (CLI options, scenario files, plan files, load files, config.json / safetensors / GGUF headers,
export and solve output paths) checks its input against these named limits, so that hostile or careless input
ends in one `error:` line and exit code 2, in bounded time and memory, and never writes outside the output
folder. Each limit is far above anything a real model, catalogue or deployment needs. Plain constants and small
helpers only (no heavy imports): any module may import this one.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from optimizer.errors import InputError, RigoptError

KiB, MiB = 2**10, 2**20

# ------------------------------------------------------------------------------------------ files read
MAX_CONFIG_BYTES = 16 * MiB
"""config.json: real ones are a few KB (multimodal ones ~50 KB); anything larger is not a config."""
MAX_INDEX_BYTES = 64 * MiB
"""model.safetensors.index.json: a weight map of ~100k tensors is ~10 MB."""
MAX_SAFETENSORS_HEADER_BYTES = 100 * MiB
"""A safetensors JSON header (the safetensors library refuses headers above 100 MB too)."""
MAX_SAFETENSORS_SHARDS = 1_024
"""Shards named by one model.safetensors.index.json (real checkpoints have < 200); each header fetched from the Hub
is one HTTP range request."""
HUB_TIMEOUT_S = 10.0
"""Seconds to wait for the Hugging Face Hub (or HF_ENDPOINT) per request before giving up."""
MAX_PLAN_BYTES = 16 * MiB
"""Plan files (rigopt.plan/1, hand-written placement inputs): a written plan is ~5 KB."""
MAX_SCENARIO_BYTES = 4 * MiB
"""Scenario files: a thousand questions fit in well under 1 MB."""
MAX_LOAD_FILE_BYTES = 64 * MiB
"""Expert load files (JSON/CSV): 1024 layers x 4096 experts of counts with snapshots fit."""

# ------------------------------------------------------------------------------------------ structure
MAX_NESTING = 32
"""Deepest nesting of JSON/YAML containers (real files nest 3-5 deep); deeper hits Python's recursion limit."""
MAX_YAML_NODES = 100_000
"""YAML nodes of a scenario file counted with aliases expanded (stops alias bombs before anything walks them)."""
MAX_QUESTIONS = 1_000
"""Questions per scenario file: each one is a CP-SAT solve."""
MAX_SCENARIO_FILES = 10_000
"""Scenario files per `rigopt solve` run."""
MAX_LIST_ITEMS = 1_000
"""Items of a list option (gpus, engines, quants, kv_dtypes; `--owned` entries)."""

# ------------------------------------------------------------------------------------------ strings
MAX_NAME_CHARS = 256
"""Catalogue names, aliases, engine/quant/dtype names, plan string fields (ids are ~100 characters)."""
MAX_PATH_CHARS = 4096
"""A path given as MODEL, --out, --loads, ... (Linux PATH_MAX)."""
MAX_MESSAGE_CHARS = 299
"""An `error:` line is clipped to this length (under 300 characters), whatever it quotes."""
MAX_ECHO_CHARS = 80
"""How much of a user's value an error message quotes back."""
MAX_NUMBER_CHARS = 40
"""Characters of a number written as text (`--context 384K`, sizes): 5,000-digit numbers are refused unparsed."""

# ------------------------------------------------------------------------------------------ numbers
MAX_CONTEXT_TOKENS = 2**27
"""Context / prompt tokens per sequence: 134M, far beyond any model's window."""
MAX_CONCURRENCY = 1_000_000
"""Concurrent sequences of one question."""
MAX_GPUS = 65_536
"""Accelerators in one plan, `--owned` inventory or `--gpus` count (scenario files used this cap already)."""
MAX_GPUS_PER_NODE = 1_024
"""Accelerators in one node of a plan (the largest boxes hold 8-72)."""
MAX_NODES = 1_024
"""Nodes of a plan (`--max-nodes` caps at this as well)."""
MAX_LAYERS = 1_024
"""Transformer blocks (main + MTP) of a model: the deepest real ones have ~130."""
MAX_EXPERTS = 4_096
"""Routed experts per MoE layer (real models: <= 512), also redundant experts per layer and expert ids."""
MAX_DIM = 2**20
"""Any hidden / head / FFN / LoRA dimension or head count in a model config (real ones: < 2**17)."""
MAX_VOCAB = 2**24
"""Vocabulary size (real ones: < 2**18)."""
MAX_PARAMS = 10**15
"""Parameters of one model: 1,000x the largest real model; keeps byte counts far inside CP-SAT's int64."""
MAX_POSITIONS = 2**31
"""max_position_embeddings accepted from a config (some configs state 10M; the planner caps at MAX_CONTEXT_TOKENS)."""
MAX_GGUF_SHARDS = 1_024
"""Shards of a split GGUF (the split tool numbers them in 5 digits; real splits have < 100)."""
MAX_SIZE_BYTES = 2**60
"""Any size given in bytes (owned DRAM, plan memory figures): 1 EiB."""
MAX_BUDGET = 1e12
"""`max_budget` (USD, USD/h or W): a trillion, far below where CP-SAT's integer costs overflow. Omit for no cap."""
MAX_LOAD_COUNT = 1e30
"""An expert activation count in a load file (only ratios matter; sums must stay finite)."""
MAX_LOAD_ROWS = 2**18
"""Rows of a CSV load file (layer,expert,count): one per MoE layer and expert (DeepSeek-V3: 58 x 256 = 14,848),
counted before any row is parsed."""
MIN_LOAD_COUNT = 1e-30
"""Non-zero counts below this are read as 0 (denormals make ratios meaningless)."""
MAX_SEED = 2**63 - 1
"""Seed for generated loads."""
MIN_TOK_S = 1e-6
"""Smallest non-zero decode target (tok/s): 1/tok_s seconds per step must stay an int64 of nanoseconds."""
MAX_TIME_LIMIT_S = 3600.0
"""Solver time limit per solve."""

# ------------------------------------------------------------------------------------------ SLA and fleet numbers
MIN_SLA_S = 1e-6
"""Shortest TTFT / TPOT SLA (seconds): a microsecond, far below any real step time."""
MAX_SLA_S = 86_400.0
"""Longest TTFT / TPOT SLA (seconds): a day; beyond that no SLA binds (and 1e308 overflows integer grids)."""
MAX_RATE_RPS = 1e6
"""Requests per second of one fleet question."""
MIN_PERCENTILE, MAX_PERCENTILE = 50.0, 99.9
"""TTFT percentile of an SLA, in percent."""
MAX_USD_PER_M_TOKENS = 1e6
"""A hosted API price per million tokens (`--api-price`); real ones are < 100."""
MAX_AMORTIZE_MONTHS = 1_200.0
"""Capex amortisation period (a century)."""
MAX_USD_PER_KWH = 1_000.0
"""Electricity price."""

# ------------------------------------------------------------------------------------------ inventories, tools, logs
MAX_BOXES = 16
"""Boxes of one mixed inventory (`mixed --owned 'a: ...; b: ...'` and a scenario's `boxes:` alike): a home lab has a
handful; each box is CP-SAT variables for every layer (2,000 boxes ran past 60 s)."""
MAX_BOX_GPUS = 64
"""Accelerators in one box of a mixed inventory."""
MAX_INVENTORY_CHARS = MAX_PATH_CHARS
"""Characters of one inventory text (`mixed --owned`, a scenario's `inventory:`)."""
MAX_DETECTED_DEVICES = 64
"""Devices one vendor tool may report to `rigopt detect` (the largest nodes hold 72)."""
MAX_TOOL_OUTPUT_BYTES = 4 * MiB
"""Bytes read from one vendor tool's stdout (nvidia-smi, rocm-smi, system_profiler, dmidecode, ...): real output
is < 200 KB; more is read no further."""
MAX_TOOL_LINES = 10_000
"""Lines of one vendor tool's output that `detect` parses."""
MAX_TOOL_CPU_S = 10.0
"""Seconds one vendor tool may run before `detect` gives up on it."""
MAX_LOG_BYTES = 64 * MiB
"""One benchmark log given to `calibrate` (llama-bench, vLLM/SGLang bench JSON/JSONL, text logs)."""
MAX_LOG_LINES = 200_000
"""Lines of one text log (real benchmark and startup logs: a few thousand); counted before any line is parsed."""
MAX_MEASUREMENTS = 1_000
"""Measurements (records, table rows) per log, counted before they are predicted: each distinct one is a
prediction (~5 ms of CPU), and real benchmark sweeps have tens to hundreds."""
MAX_LOG_JSON_CONTAINERS = 100_000
"""JSON objects and arrays of one JSON/JSONL log, counted before json.loads (a vLLM --save-detailed result holds one
list per request)."""
MAX_PROFILE_BYTES = 4 * MiB
"""A calibration profile (YAML written by `calibrate`: a few KB)."""
MAX_GGUF_ARRAY_ITEMS = 2**20
"""Items of one array in a GGUF header (token lists: the largest real vocabularies are ~2**18), checked before any
item is read; the reader skips string arrays (only their length is used) instead of building an object per item."""
MAX_GGUF_KV = 100_000
"""Key/value pairs of a GGUF header (real ones: < 100)."""
MAX_GGUF_TENSORS = 2**18
"""Tensors of one GGUF file (real ones: < 5,000; unmerged per-expert tensors of the largest MoE: ~50,000)."""
MAX_HUB_TOTAL_S = 60.0
"""Total seconds one Hugging Face Hub request may take (connect + every read), on top of the per-read
HUB_TIMEOUT_S: a server that trickles its answer is cut off."""
MAX_SAFETENSORS_DIM = 2**40
"""One dimension of a tensor in a safetensors header."""
MAX_TOTAL_SIZE_BYTES = 2**60
"""`metadata.total_size` of a safetensors index (same as MAX_SIZE_BYTES)."""


# ------------------------------------------------------------------------------------------ helpers
def clip_for_message(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """`value` as a single line of at most `limit` characters, for quoting in an error message."""
    s = value if isinstance(value, str) else repr(value)
    s = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else "?" for ch in s[:limit + 1])
    if len(s) > limit:
        s = s[:max(limit - 3, 1)] + "..."
    return s


def clip_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message as exactly one line (whitespace collapsed) of at most `limit` characters."""
    s = " ".join(str(message).split())
    s = "".join(ch if ch.isprintable() else "?" for ch in s)
    return s if len(s) <= limit else s[:limit - 3] + "..."


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f\u2028\u2029]")


def has_control(s: str) -> bool:
    """True if `s` holds a control character (newline, tab, NUL, escape, line separators, ...)."""
    return bool(_CONTROL.search(s))


def check_text(s: Any, what: str, limit: int = MAX_NAME_CHARS) -> str:
    """A single-line string of at most `limit` characters, or InputError naming `what`."""
    if not isinstance(s, str):
        raise InputError(f"{what} must be a string")
    if len(s) > limit:
        raise InputError(f"{what} is {len(s)} characters long (limit {limit}): {clip_for_message(s, 40)}")
    if has_control(s):
        raise InputError(f"{what} contains a control character: {clip_for_message(s)}")
    return s


def check_int(v: Any, what: str, lo: int, hi: int) -> int:
    """An int (not a bool) within [lo, hi], or InputError naming `what`."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{what} must be an integer, got {clip_for_message(v)}")
    if not lo <= v <= hi:
        raise InputError(f"{what} must be within {lo}..{hi}, got {clip_for_message(v)}")
    return v


def check_number(v: Any, what: str, lo: float, hi: float) -> float:
    """A finite int/float (not a bool) within [lo, hi], or InputError naming `what`."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{what} must be a number, got {clip_for_message(v)}")
    try:
        f = float(v)
    except OverflowError:
        raise InputError(f"{what} is out of range: {clip_for_message(v)}") from None
    if not math.isfinite(f) or not lo <= f <= hi:
        raise InputError(f"{what} must be a finite number within {lo:g}..{hi:g}, got {clip_for_message(v)}")
    return f


def nesting_depth(obj: Any, limit: int = MAX_NESTING) -> int:
    """Depth of nested lists/dicts, iteratively (stops counting past `limit`; shared sub-objects walked once)."""
    deepest = 0
    stack = [(obj, 1)]
    seen: set[int] = set()
    while stack:
        o, d = stack.pop()
        if not isinstance(o, (list, dict)) or id(o) in seen:
            continue
        seen.add(id(o))
        deepest = max(deepest, d)
        if d > limit:
            return d
        stack.extend((c, d + 1) for c in (o.values() if isinstance(o, dict) else o))
    return deepest


_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def json_shape(text: str | bytes, max_depth: int = MAX_NESTING, max_containers: int | None = None) -> tuple[int, int]:
    """(deepest nesting, number of containers) of JSON text, counted outside strings before json.loads (whose
    recursion a deep file exhausts), in C-speed passes; stops counting once either limit is passed."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    depth = deepest = containers = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            containers += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth:
                    break
            if max_containers is not None and containers > max_containers:
                break
        else:
            depth -= 1
    return deepest, containers


def json_depth_ok(text: str | bytes, limit: int = MAX_NESTING) -> bool:
    """Cheap pre-check of JSON text before json.loads (whose recursion a deep file exhausts): bracket depth,
    counted outside strings."""
    return json_shape(text, limit)[0] <= limit


def read_bounded(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes. FIFOs, devices, sockets and folders are refused
    before they are opened (reading /dev/zero or a FIFO would never end)."""
    p = Path(path)
    label = clip_for_message(str(p))
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{what} {label}: no such file") from None
    except OSError as e:
        raise InputError(f"{what} {label}: cannot read ({e.strerror or type(e).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {label}: is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {label}: not a regular file (device, FIFO or socket)")
    if st.st_size > limit:
        raise InputError(f"{what} {label}: {st.st_size:,} bytes, larger than the {limit:,}-byte limit")
    try:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(p, flags)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO or device since the stat above
                raise InputError(f"{what} {label}: not a regular file (device, FIFO or socket)")
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"{what} {label}: cannot read ({e.strerror or type(e).__name__})") from None
    if len(data) > limit:
        raise InputError(f"{what} {label}: larger than the {limit:,}-byte limit")
    return data


def read_text_bounded(path: str | os.PathLike, limit: int, what: str = "file") -> str:
    """read_bounded, decoded as UTF-8 (a BOM is dropped); invalid UTF-8 is one InputError."""
    data = read_bounded(path, limit, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{what} {clip_for_message(str(path))}: line {line}: not valid UTF-8") from None


def read_json_bounded(path: str | os.PathLike, limit: int, what: str, label: str,
                      error: type[RigoptError] = InputError) -> Any:
    """A JSON file read with the size, regular-file, UTF-8 and nesting limits; every failure is one `error`
    naming `label` (the file as the message shows it)."""
    try:
        text = read_text_bounded(path, limit, what)
    except InputError as e:
        if type(e) is error:
            raise
        raise error(str(e)) from None
    if not json_depth_ok(text):
        raise error(f"{label}: nested deeper than {MAX_NESTING} levels")
    try:
        return json.loads(text)
    except ValueError as e:
        raise error(f"{label}: not valid JSON ({clip_for_message(str(e).splitlines()[0])})") from None


def exists(path: str | os.PathLike) -> bool:
    """Path.exists() that is False, not an OSError, for names too long or otherwise unusable (ENAMETOOLONG, NUL)."""
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True


def is_dir(path: str | os.PathLike) -> bool:
    """Path.is_dir() without OSError for unusable names."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def check_regular_file(path: str | os.PathLike, what: str = "file") -> None:
    """Refuse FIFOs, devices and sockets (stat only; never opens the file)."""
    try:
        st = os.stat(path)
    except OSError:
        return  # the caller reports a missing file in its own words
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise InputError(f"{what} {clip_for_message(str(path))}: not a regular file (device, FIFO or socket)")


def safe_component(name: str, fallback: str = "item") -> str:
    """One path component made of [A-Za-z0-9._-], at most 200 characters (file systems allow 255 bytes), never
    '', '.' or '..': names output files (and checks shard names) taken from input."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name))[:200].strip("-.")
    return s if s and s not in (".", "..") else fallback


def under(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path` resolved, after checking it lies inside `root` (resolved); InputError otherwise."""
    r = Path(root).resolve()
    p = Path(path).resolve()
    if p != r and r not in p.parents:
        raise InputError(f"refusing to write {clip_for_message(str(path))}: outside the output folder "
                         f"{clip_for_message(str(root))}")
    return p


def prepare_out_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create the output folder (with parents) and check it is a writable folder; InputError otherwise."""
    s = str(path)
    if not s.strip() or len(s) > MAX_PATH_CHARS or has_control(s):
        raise InputError(f"{what}: not a usable folder name: {clip_for_message(s)}")
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{what} {clip_for_message(s)}: exists and is not a folder") from None
    except OSError as e:
        raise InputError(f"{what} {clip_for_message(s)}: cannot create the folder "
                         f"({e.strerror or type(e).__name__})") from None
    if not p.is_dir():
        raise InputError(f"{what} {clip_for_message(s)}: exists and is not a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"{what} {clip_for_message(s)}: folder is not writable")
    return p


def write_file(path: str | os.PathLike, text: str, what: str = "output file") -> None:
    """Write text; OSError (read-only, /proc, full disk, a folder in the way) becomes InputError."""
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise InputError(f"{what} {clip_for_message(str(path))}: cannot write "
                         f"({e.strerror or type(e).__name__})") from None


def check_out_dir(path: str | os.PathLike | None, what: str = "--out") -> None:
    """Before any work: `path` can become a writable output folder (it is one, or its nearest existing ancestor is
    a writable folder), and is created (prepare_out_dir) so that /proc, a read-only mount or a full disk fail now,
    not after minutes of solving; InputError otherwise."""
    if path is None:
        return
    s = str(path)
    if not s.strip() or len(s) > MAX_PATH_CHARS or has_control(s):
        raise InputError(f"{what}: not a usable folder name: {clip_for_message(s)}")
    p = Path(s).absolute()
    for q in (p, *p.parents):
        try:
            st = os.stat(q)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or type(e).__name__
            raise InputError(f"{what} {clip_for_message(s)}: cannot use ({why})") from None
        if not stat.S_ISDIR(st.st_mode):
            which = "exists and is" if q == p else "a parent is"
            raise InputError(f"{what} {clip_for_message(s)}: {which} not a folder")
        if not os.access(q, os.W_OK | os.X_OK):
            raise InputError(f"{what} {clip_for_message(s)}: folder is not writable")
        break
    prepare_out_dir(p, what)


def yaml_safe_loader() -> type:
    """PyYAML's safe loader: libyaml's C one (CSafeLoader) when PyYAML was built with it, the same schema and the
    same data as SafeLoader, several times faster."""
    import yaml
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """YAML text through the safe schema (yaml_safe_loader): the one loader of rigopt's data files."""
    import yaml
    return yaml.load(text, Loader=yaml_safe_loader())


def yaml_depth(text: str, limit: int = MAX_NESTING) -> int:
    """Deepest nesting of YAML (or JSON) text, from the parser's event stream, before anything composes it: the
    composers recurse per level (libyaml's, under yaml.CSafeLoader, in C: a 100,000-deep file crashes the
    interpreter; PyYAML's hits the recursion limit). Stops counting once past `limit`. YAMLError on bad syntax."""
    import yaml
    parser = yaml_safe_loader()(text)
    opening = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
    closing = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    depth = deepest = 0
    try:
        while True:
            try:
                ev = parser.get_event()
            except yaml.YAMLError as e:
                # libyaml 0.2.5+ (PyYAML 6.0.4 wheels) stops at its own nesting limit ("while increasing flow
                # level"): that is the same finding, too deep, not a syntax error
                if "flow level" in str(e) or "nesting" in str(e).lower():
                    return limit + 1
                raise
            if ev is None or isinstance(ev, yaml.StreamEndEvent):
                break
            if isinstance(ev, opening):
                depth += 1
                if depth > deepest:
                    deepest = depth
                    if deepest > limit:
                        break
            elif isinstance(ev, closing):
                depth -= 1
    finally:
        parser.dispose()
    return deepest
