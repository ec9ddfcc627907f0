"""Expert load statistics: per MoE layer, per logical expert activation counts.

Accepted inputs (see README "rigopt place"):

* JSON ``{"logical_count": [[...]]}`` as SGLang's expert-distribution recorder dumps it: shape
  ``[layers, experts]`` or ``[snapshots, layers, experts]`` (snapshots are summed).
* JSON vLLM EPLB-style: ``{"expert_load": [[...]]}`` or ``{"expert_load_window": [[[...]]]}`` (shape
  ``[layers, experts]`` / ``[window, layers, experts]``); when the counts are per *physical* expert, give
  ``"physical_to_logical_map"`` beside them and they are folded onto logical experts. A bare JSON array of
  the same shapes is accepted too.
* CSV ``layer,expert,count`` (header optional; missing pairs count 0; ``layer`` is the MoE-layer ordinal
  0..L-1, or the model's layer index when the file names every MoE layer index).
* generated: ``uniform`` or ``zipf:S`` (per layer a seeded random permutation of experts with weight
  1/rank^S).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optimizer.errors import InputError
from optimizer.limits import (
    MAX_EXPERTS,
    MAX_LAYERS,
    MAX_LOAD_COUNT,
    MAX_LOAD_FILE_BYTES,
    MAX_LOAD_ROWS,
    MAX_NESTING,
    MAX_PATH_CHARS,
    MIN_LOAD_COUNT,
    check_text,
    clip_for_message,
    exists,
    json_depth_ok,
    read_text_bounded,
)


@dataclass(frozen=True)
class Loads:
    """counts[l, e]: activations of logical expert e in MoE layer l (any scale; only ratios matter)."""
    counts: np.ndarray
    source: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_layers(self) -> int:
        return self.counts.shape[0]

    @property
    def n_experts(self) -> int:
        return self.counts.shape[1]

    def shares(self) -> np.ndarray:
        """Per layer, each expert's share of that layer's activations (rows sum to 1)."""
        tot = self.counts.sum(axis=1, keepdims=True)
        return self.counts / tot


def _fail(path: str, msg: str) -> InputError:
    return InputError(f"load file {clip_for_message(path)}: {msg}")


def _check(arr: np.ndarray, path: str, n_layers: int | None, n_experts: int | None,
           notes: list[str]) -> np.ndarray:
    if arr.ndim == 3:
        notes.append(f"summed {arr.shape[0]} snapshots")
        arr = arr.sum(axis=0)
    if arr.ndim != 2:
        raise _fail(path, f"expected counts shaped [layers, experts] or [snapshots, layers, experts], got {arr.ndim} dimension(s)")
    if arr.size == 0:
        raise _fail(path, "no counts")
    if not np.all(np.isfinite(arr)):
        raise _fail(path, "counts must be finite numbers")
    if np.any(arr < 0):
        raise _fail(path, "counts must be >= 0")
    if np.any(arr > MAX_LOAD_COUNT):
        raise _fail(path, f"counts must be at most {MAX_LOAD_COUNT:g} (only ratios matter)")
    if arr.shape[0] > MAX_LAYERS or arr.shape[1] > MAX_EXPERTS:
        raise _fail(path, f"{arr.shape[0]} layers x {arr.shape[1]} experts is more than "
                          f"{MAX_LAYERS} x {MAX_EXPERTS}")
    arr = np.where(arr < MIN_LOAD_COUNT, 0.0, arr)  # denormal counts carry no ratio information
    if n_experts is not None and arr.shape[1] != n_experts:
        raise _fail(path, f"{arr.shape[1]} experts per layer, the model has {n_experts}")
    if n_layers is not None and arr.shape[0] != n_layers:
        raise _fail(path, f"{arr.shape[0]} layers, the model has {n_layers} MoE layers")
    zero = np.where(arr.sum(axis=1) <= 0)[0]
    if len(zero) == arr.shape[0]:
        raise _fail(path, "every count is zero")
    if len(zero):
        arr = arr.astype(float).copy()
        arr[zero] = 1.0
        notes.append(f"{len(zero)} layer(s) with no recorded activations taken as uniform")
    return arr.astype(float)


def _numeric(obj, path: str, what: str) -> np.ndarray:
    try:
        arr = np.asarray(obj, dtype=float)
    except (TypeError, ValueError):
        raise _fail(path, f"'{what}' is not a rectangular array of numbers") from None
    except OverflowError:
        raise _fail(path, f"'{what}' holds a number too large for a count") from None
    if arr.ndim > 3:
        raise _fail(path, f"'{what}' has {arr.ndim} dimensions (at most 3: snapshots, layers, experts)")
    return arr


def _fold(arr: np.ndarray, p2l, path: str) -> np.ndarray:
    """Counts per physical slot + physical_to_logical_map -> counts per logical expert."""
    m = _numeric(p2l, path, "physical_to_logical_map")
    if arr.ndim == 3:
        arr = arr.sum(axis=0)
    if m.shape != arr.shape:
        raise _fail(path, f"physical_to_logical_map shape {list(m.shape)} != load shape {list(arr.shape)}")
    if np.any(m < 0) or np.any(m != np.round(m)) or not np.all(np.isfinite(m)):
        raise _fail(path, "physical_to_logical_map entries must be non-negative integers")
    if m.size and m.max() >= MAX_EXPERTS:
        raise _fail(path, f"physical_to_logical_map names expert {clip_for_message(m.max())}; "
                          f"expert ids are below {MAX_EXPERTS}")
    m = m.astype(int)
    n_log = int(m.max()) + 1
    out = np.zeros((arr.shape[0], n_log))
    for layer in range(arr.shape[0]):
        np.add.at(out[layer], m[layer], arr[layer])
    return out


def parse_json(text: str, path: str = "<json>", n_layers: int | None = None,
               n_experts: int | None = None) -> Loads:
    if not json_depth_ok(text):
        raise _fail(path, f"nested deeper than {MAX_NESTING} levels")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(path, f"not valid JSON ({e.msg} at line {e.lineno})") from None
    notes: list[str] = []
    if isinstance(obj, list):
        arr, fmt = _numeric(obj, path, "array"), "array"
    elif isinstance(obj, dict):
        key = next((k for k in ("logical_count", "expert_load", "expert_load_window", "expert_load_pass")
                    if k in obj), None)
        if key is None:
            raise _fail(path, "JSON needs one of the keys logical_count (SGLang), expert_load / "
                              "expert_load_window (vLLM EPLB); see README 'rigopt place'")
        arr, fmt = _numeric(obj[key], path, key), key
        if "physical_to_logical_map" in obj and key != "logical_count":
            arr = _fold(arr, obj["physical_to_logical_map"], path)
            notes.append("physical counts folded onto logical experts")
    else:
        raise _fail(path, "JSON must be an object or an array")
    arr = _check(arr, path, n_layers, n_experts, notes)
    return Loads(arr, f"{path} ({fmt})", tuple(notes))


def parse_csv(text: str, path: str = "<csv>", n_layers: int | None = None, n_experts: int | None = None,
              layer_indices: list[int] | None = None) -> Loads:
    lines = text.count("\n") + 1
    if lines > MAX_LOAD_ROWS:
        raise _fail(path, f"{lines:,} lines, more than the limit of {MAX_LOAD_ROWS:,} rows (one per layer and expert)")
    rows: list[tuple[int, int, float]] = []
    reader = csv.reader(io.StringIO(text))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise _fail(path, f"line {reader.line_num}: not CSV ({clip_for_message(str(e))})") from None
        i = reader.line_num - 1
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 3:
            raise _fail(path, f"line {i + 1}: expected 3 columns layer,expert,count, got {len(row)}")
        try:
            if max(len(c) for c in row) > 64:
                raise ValueError("field too long")
            lay, exp, cnt = int(row[0]), int(row[1]), float(row[2])
        except ValueError:
            if i == 0 or not rows:
                if [c.strip().lower() for c in row] == ["layer", "expert", "count"]:
                    continue
            raise _fail(path, f"line {i + 1}: expected integers layer,expert and a number count, "
                              f"got {clip_for_message(','.join(row), 60)}") from None
        if lay < 0 or exp < 0:
            raise _fail(path, f"line {i + 1}: negative layer or expert index")
        if lay >= 2**20 or exp >= MAX_EXPERTS:
            raise _fail(path, f"line {i + 1}: layer or expert index out of range (experts < {MAX_EXPERTS})")
        if not (np.isfinite(cnt) and 0 <= cnt <= MAX_LOAD_COUNT):
            raise _fail(path, f"line {i + 1}: count must be a finite number within 0..{MAX_LOAD_COUNT:g}")
        rows.append((lay, exp, cnt))
    if not rows:
        raise _fail(path, "no rows (expected layer,expert,count)")
    layers = sorted({r[0] for r in rows})
    # model layer indices -> ordinals when the file uses them
    remap = None
    if layer_indices is not None and max(layers) >= len(layer_indices) and set(layers) <= set(layer_indices):
        remap = {ix: o for o, ix in enumerate(layer_indices)}
    L = n_layers if n_layers is not None else (max(layers) + 1 if layer_indices is None or remap is None
                                               else len(layer_indices))
    E = n_experts if n_experts is not None else max(r[1] for r in rows) + 1
    if L > MAX_LAYERS or E > MAX_EXPERTS:
        raise _fail(path, f"{L} layers x {E} experts is more than {MAX_LAYERS} x {MAX_EXPERTS}")
    arr = np.zeros((L, E))
    for lay, exp, cnt in rows:
        o = remap[lay] if remap else lay
        if o >= L:
            raise _fail(path, f"layer {lay} out of range (the model has {L} MoE layers)")
        if exp >= E:
            raise _fail(path, f"expert {exp} out of range (the model has {E} experts per layer)")
        arr[o, exp] += cnt
    notes: list[str] = []
    missing = L - len(layers)
    if missing:
        raise _fail(path, f"{missing} of {L} MoE layers have no rows")
    arr = _check(arr, path, None, None, notes)
    return Loads(arr, f"{path} (csv)", tuple(notes))


def read_loads(path: str, n_layers: int | None = None, n_experts: int | None = None,
               layer_indices: list[int] | None = None) -> Loads:
    p = Path(path)
    if not exists(p):
        raise InputError(f"load file {clip_for_message(path)}: not found")
    if p.suffix == ".pt":
        raise _fail(path, ".pt (torch) files are not read; dump logical_count as JSON "
                          "(json.dump({'logical_count': t.tolist()}, f))")
    text = read_text_bounded(p, MAX_LOAD_FILE_BYTES, "load file")
    if p.suffix.lower() == ".csv" or not text.lstrip()[:1] in ("{", "["):
        return parse_csv(text, path, n_layers, n_experts, layer_indices)
    return parse_json(text, path, n_layers, n_experts)


def generate(kind: str, n_layers: int, n_experts: int, seed: int = 0) -> Loads:
    """`uniform` or `zipf:S`: deterministic for a seed (expected shares scaled to 10^6 per layer)."""
    k = kind.strip().lower()
    if k == "uniform":
        return Loads(np.full((n_layers, n_experts), 1e6 / n_experts), "uniform")
    if k.startswith("zipf"):
        try:
            s = float(k.split(":", 1)[1]) if ":" in k else 1.0
        except ValueError:
            raise InputError(f"--loads {kind}: expected zipf:S with a number S, e.g. zipf:1.0") from None
        if not 0 <= s <= 10:
            raise InputError(f"--loads {kind}: Zipf exponent must be within 0..10")
        rng = np.random.default_rng(seed)
        base = 1.0 / np.arange(1, n_experts + 1) ** s
        base = base / base.sum() * 1e6
        arr = np.empty((n_layers, n_experts))
        for layer in range(n_layers):
            arr[layer, rng.permutation(n_experts)] = base
        return Loads(arr, f"zipf:{s:g} seed {seed}")
    raise InputError(f"--loads {kind}: use a file path, 'uniform' or 'zipf:S'")


def resolve_loads(value: str | None, n_layers: int, n_experts: int, seed: int = 0,
                  layer_indices: list[int] | None = None) -> Loads:
    """--loads value: a file, `uniform` or `zipf:S` (default uniform)."""
    if value is not None:
        check_text(value, "--loads", MAX_PATH_CHARS)
    if value is None or value.strip().lower() == "uniform":
        return generate("uniform", n_layers, n_experts, seed)
    if value.strip().lower().startswith("zipf") and not exists(value):
        return generate(value, n_layers, n_experts, seed)
    return read_loads(value, n_layers, n_experts, layer_indices)


def to_sglang_json(loads: Loads) -> str:
    return json.dumps({"logical_count": loads.counts.tolist()})


def to_csv(loads: Loads) -> str:
    lines = ["layer,expert,count"]
    for layer in range(loads.n_layers):
        for e in range(loads.n_experts):
            lines.append(f"{layer},{e},{loads.counts[layer, e]:.17g}")
    return "\n".join(lines) + "\n"
