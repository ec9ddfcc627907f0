"""Single-stream measurements from home-lab and serving sources, turned into speed rows.

These rows were the held-out set before the factors were cross-validated; now every factor is fitted on them too
(optimizer/fidelity/calibrate.pool) and the honest error is the leave-one-source-out one (crossval.py,
`python bench/fidelity.py`). This module keeps the conversion and the list of rows that cannot be compared.

`measurements/local_measurements.yaml` (llama-bench tables and server timing lines on consumer GPUs, Macs, Strix
Halo, DGX Spark, CPU offload) and `measurements/serving_measurements.yaml` (vLLM / SGLang serving benchmarks)
share one row schema (see the files' first rows: workload, measured, quote, source). This module turns the
single-stream rows into the speed-row form `predict_speed` reads, so they are predicted exactly as the other
rows are, and reports what it could not compare and why (an honest denominator).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import load_cards
from optimizer.engines import ENGINES
from optimizer.estimate import factors as F
from optimizer.fidelity.cases import DATA_DIR
from optimizer.fidelity.predict import predict_speed

LOCAL_FILE = DATA_DIR / "local_measurements.yaml"
OFFLOAD_FILE = DATA_DIR / "offload_measurements.yaml"
# a single-stream CPU-expert decode figure whose source gives no output length: the KV length it is read at is the
# prompt plus half of this many tokens (at the short contexts of these runs the KV read is a small part of the step,
# which the CPU experts dominate)
OFFLOAD_ASSUMED_OSL = 256
ENGINE_MAP = {"llamacpp": "llamacpp", "ik_llama": "ik_llama" if "ik_llama" in ENGINES else "llamacpp",
              "ollama": "llamacpp", "vllm": "vllm", "sglang": "sglang", "mlx": "mlx", "ktransformers": "sglang"}
# KTransformers (local_chat / balance_serve / kt-kernel under SGLang) is rigopt's SGLang engine with experts computed
# by the CPU (Offload mode cpu); ik_llama.cpp rows run llama.cpp's physics until ik_llama is an engine of its own
# ik_llama.cpp and Ollama run llama.cpp's model (ik_llama: faster MoE kernels); mlx rows (mlx-lm and engines built on
# MLX) run rigopt's mlx engine, with its own two speed factors (estimate/factors_mlx.yaml)


@dataclass(frozen=True)
class HeldOutCase:
    id: str
    metric: str          # decode_tok_s | prefill_tok_s
    engine: str          # as measured (ik_llama, ollama, ... kept)
    hardware: str
    measured: float
    predicted: float
    source: str

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1.0


@cache
def _rows(path: str) -> tuple[dict, ...]:
    return tuple(yaml.safe_load(Path(path).read_text()) or ())


def local_rows() -> list[dict]:
    return [dict(r) for r in _rows(str(LOCAL_FILE))]


def model_key(name: object) -> str | None:
    """The catalogue key a measurement row's model names: a key, or a card's Hugging Face id (no network)."""
    from optimizer.catalog.models import catalogue_key_for_hub_id
    if not isinstance(name, str):
        return None
    return name if name in load_cards() else catalogue_key_for_hub_id(name)


def _ubatch(flags: str) -> str:
    m = re.search(r"n_ubatch[ =](\d+)|(?:-ub|--ubatch-size)[ =](\d+)", flags)
    return f" -ub {m.group(1) or m.group(2)}" if m else ""


def offload_rows() -> list[dict]:
    """The rows of measurements/offload_measurements.yaml (experts in host DRAM, each with its `host_spec`)."""
    return [dict(r) for r in _rows(str(OFFLOAD_FILE))] if OFFLOAD_FILE.is_file() else []


def _cpu_expert_layers(offload: dict, n_moe: int) -> int | None:
    """MoE layers whose experts the CPU computes, from a row's offload block (cpu_moe: all | N, cpu_expert_layers)."""
    v = offload.get("cpu_moe", offload.get("n_cpu_moe", offload.get("cpu_expert_layers")))
    if v == "all":
        return n_moe
    if isinstance(v, int) and 0 < v <= n_moe:
        return v
    return None


def speed_rows_of(row: dict) -> tuple[list[dict], str | None]:
    """The decode / prefill speed rows of one local or offload row, or the reason it cannot be compared. Offload
    rows need a `host_spec` (the host's CPU, sockets, channels) and a count of CPU-expert layers."""
    engine = ENGINE_MAP.get(str(row.get("engine")))
    if engine is None:
        return [], f"engine {row.get('engine')} is not modelled"
    model = model_key(row.get("model"))
    if model is None:
        return [], f"model {row.get('model')} is not in the catalogue"
    if row.get("accelerator") not in load_hardware().accelerators:
        return [], f"accelerator {row.get('accelerator')} is not in the catalogue"
    offload = None
    if row.get("offload"):
        from optimizer.catalog.host_spec import host_spec_from_measurement
        from optimizer.catalog.models import resolve_model
        from optimizer.errors import InputError
        if not row.get("host_spec"):
            return [], "CPU offload rows need a host_spec (CPU, sockets, channels, DIMM speed)"
        try:
            host_spec_from_measurement(row["host_spec"]).resolve()
        except InputError as e:
            return [], f"host_spec: {e}"
        n = _cpu_expert_layers(row["offload"], len(resolve_model(model).spec.moe_layers))
        if n is None:
            return [], f"offload {row['offload']} does not say how many expert layers the CPU computes"
        offload = {"cpu_expert_layers": n}
    w = row.get("workload") or {}
    m = row.get("measured") or {}
    p = row.get("parallel") or None
    base = {"engine": engine, "model": model, "quant": row.get("quant") or "native",
            "accelerator": row["accelerator"], "gpus": int(row.get("gpus") or 1),
            "parallel": {k: p[k] for k in ("tp", "pp", "dp", "ep") if p.get(k) is not None} if p else None,
            "batch": int(w.get("concurrency") or 1), "offload": offload, "host_spec": row.get("host_spec"),
            "flags": str(row.get("flags") or "") + _ubatch(str(row.get("flags") or "")), "source": row.get("source")}
    out = []
    depth = w.get("depth")
    if depth is None and w.get("kind") == "single_stream" and row.get("engine") == "mlx":
        depth = w.get("isl")  # one request: its tokens are generated after its own prompt is in the cache
    osl = w.get("osl")
    if not osl and offload and w.get("kind") == "single_stream":  # generated after its own prompt
        osl, depth = OFFLOAD_ASSUMED_OSL, depth or w.get("isl")
    if m.get("decode_tok_s_per_seq") and osl:
        out.append({**base, "id": row["id"] + "/decode", "metric": "decode_tok_s",
                    "measured": float(m["decode_tok_s_per_seq"]), "depth": int(depth or 0),
                    "gen_tokens": int(osl), "prompt_tokens": None})
    if m.get("prefill_tok_s") and w.get("isl") and int(w["isl"]) >= 128:
        out.append({**base, "id": row["id"] + "/prefill", "metric": "prefill_tok_s",
                    "measured": float(m["prefill_tok_s"]), "prompt_tokens": int(w["isl"])})
    if not out:
        return [], "no single-stream decode or prefill figure with its token counts"
    return out, None


def run() -> tuple[list[HeldOutCase], list[tuple[str, str]]]:
    cases: list[HeldOutCase] = []
    skipped: list[tuple[str, str]] = []
    for r in local_rows():
        rows, why = speed_rows_of(r)
        if why:
            skipped.append((r["id"], why))
        for s in rows:
            if s["id"] in F.MLX_FIT_ROWS:  # not held out: the mlx factors were fitted on it (fidelity/mlx_fit.py)
                skipped.append((s["id"], "a fit row of the mlx factors (optimizer/estimate/factors_mlx.yaml)"))
                continue
            try:
                c = predict_speed(s)
            except Exception as e:  # reported, never hidden
                skipped.append((s["id"], f"{type(e).__name__}: {e}"))
                continue
            cases.append(HeldOutCase(id=s["id"], metric=s["metric"], engine=str(r["engine"]),
                                     hardware=f"{s['gpus']}x {s['accelerator']}", measured=s["measured"],
                                     predicted=c.predicted, source=str(r.get("source", ""))))
    return cases, skipped


def medians(cases: list[HeldOutCase]) -> dict[str, tuple[int, float]]:
    out = {}
    for metric in ("decode_tok_s", "prefill_tok_s"):
        errs = [abs(c.error) for c in cases if c.metric == metric]
        if errs:
            out[metric] = (len(errs), statistics.median(errs))
    return out
