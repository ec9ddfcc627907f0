"""Prediction intervals: how far to trust a predicted speed, from rigopt's own cross-validated errors.

optimizer/estimate/uncertainty.yaml (written by `python bench/fidelity.py --fit`, optimizer/fidelity/crossval.py)
holds, per interval kind (decode, prefill, ttft, throughput, tpot) and regime, a bias and split-conformal quantiles
of the cross-validated residual log(measured / predicted) (predictions by factors fitted without the row's source)
at QUANTILE_LEVELS, after the bias is taken out. A regime's bias is the median residual, stored only where the
regime is biased (the model's own figure falls outside the regime's 80% interval; elsewhere 0): the expected
figure is the model's figure times exp(bias), and an X% interval of a model figure p is
[p * exp(bias + q((1 - X) / 2)), p * exp(bias + q((1 + X) / 2))], widened where needed so it always holds the
expected figure (for ttft and tpot, times, the same on the time). Served TPOT ("tpot") is its own kind, built from
served rows only, as served TTFT and output tok/s are: a served TPOT never backs off to single-stream decode rows
(Trust.served_tpot falls back to the decode-speed interval only where no served row backs a tpot interval).

Regimes are engine x hardware class x batch regime x model class (dense, moe, mla-moe, hybrid) x size class
(s < 40B, m 40-250B, l > 250B total parameters). A regime with too few rows or sources backs off to a coarser one:
engine/hw/batch/class/size -> engine/hw/batch/class -> engine/hw/batch -> engine/hw -> every GPU row ("*"); a regime
backed by few sources is widened to at least its coarser level's spread (crossval.interval_table), so no regime
borrows a narrower interval than the evidence above it. Deployments with experts in host memory have one regime of
their own, "cpu-experts" (the rows of measurements/offload_measurements.yaml and the other offload rows with a
host), backed off only to "*": the host, not the GPU, sets these errors, so they never borrow an engine's or a GPU
class's narrower interval. Their rows stay out of "*" (every GPU-resident row of the kind), so they never widen or
narrow a GPU regime either; the cpu-experts regime is widened to at least "*"'s spread. A GPU regime rigopt has no
measurements for gets "*", the widest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer.engines import physics_engine
from optimizer.estimate.speed import device_family
from optimizer.limits import load_yaml

UNCERTAINTY_FILE = Path(__file__).with_name("uncertainty.yaml")
UNCERTAINTY_SCHEMA = "rigopt.uncertainty/2"
QUANTILE_LEVELS = (0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 0.8, 0.9, 0.95)
KINDS = ("decode", "prefill", "ttft", "throughput", "tpot")
CPU_EXPERTS_REGIME = "cpu-experts"  # deployments with routed experts in host memory (issue 20)
DEFAULT_CONFIDENCE = 0.8  # the interval the text output shows and `cheapest` plans at (README: "Trust")
SIZE_CLASSES = ((40e9, "s"), (250e9, "m"))  # total parameters below each bound; above the last: "l"


def hw_class(acc: Any) -> str:
    """Hardware class of a catalogue accelerator: nvidia-dc, nvidia-consumer, amd, intel, apple, unified."""
    if acc.kind == "unified":
        return device_family(acc.vendor, acc.kind)
    if acc.vendor == "nvidia":
        # GeForce and workstation RTX cards (an NVLink bridge on a 3090 does not make it a datacenter part); the
        # 96 GB RTX PRO 6000 server/workstation cards run datacenter stacks and count as datacenter
        desk = str(acc.key).startswith("rtx-") and not str(acc.key).startswith("rtx-pro")
        return "nvidia-consumer" if desk else "nvidia-dc"
    return str(acc.vendor)


def batch_class(batch: int) -> str:
    return "b1" if batch <= 1 else "batched"


def model_class(spec: Any) -> str:
    """Model class of a ModelSpec: "<arch>/<size>", arch one of dense, moe, mla-moe (MoE with latent / DeepSeek
    sparse attention: MLA, DSA, V4's compressed attention), hybrid (recurrent layers beside attention); size s / m /
    l by total parameters (SIZE_CLASSES)."""
    if spec.is_hybrid:
        arch = "hybrid"
    elif spec.is_moe:
        mla = any(lay.attn_kind in ("mla", "dsa") or lay.attn_kind.startswith("v4") for lay in spec.layers)
        arch = "mla-moe" if mla else "moe"
    else:
        arch = "dense"
    total = spec.total_params()
    size = next((s for bound, s in SIZE_CLASSES if total < bound), "l")
    return f"{arch}/{size}"


def regime_keys(engine: str, acc: Any, batch: int, offload: bool = False, mclass: str | None = None) -> list[str]:
    """The regime of a prediction, finest first, then each coarser level it backs off to (without a model class,
    the engine x hardware x batch level first)."""
    # Ollama and LM Studio run llama.cpp (engines.physics_engine); ik_llama.cpp rows are its fork's
    if offload:
        # experts in host memory: one cpu-experts regime, then every row ("*"), never an engine's or hardware
        # class's narrower interval (the host, not the GPU, sets these errors)
        return [CPU_EXPERTS_REGIME, "*"]
    engine = "llamacpp" if engine == "ik_llama" else physics_engine(engine)
    c, b = hw_class(acc), batch_class(batch)
    base = f"{engine}/{c}/{b}"
    fine = [f"{base}/{mclass}", f"{base}/{mclass.split('/')[0]}"] if mclass else []
    return [*fine, base, f"{engine}/{c}", "*"]


_TABLE: dict[str, Any] | None = None


def table() -> dict[str, Any]:
    global _TABLE
    if _TABLE is None:
        data = load_yaml(UNCERTAINTY_FILE.read_text())
        if not isinstance(data, dict) or data.get("schema_id") != UNCERTAINTY_SCHEMA:
            raise RuntimeError(f"{UNCERTAINTY_FILE}: not a {UNCERTAINTY_SCHEMA} file "
                               "(rewrite it with python bench/fidelity.py --fit)")
        _TABLE = data
    return _TABLE


@dataclass(frozen=True)
class Interval:
    """Multiplicative interval on a model figure, and the regime's bias correction: the expected figure is the
    model's times `bias`, and low_ratio <= bias <= high_ratio always holds (1 need not lie inside: where rigopt
    is biased in a regime, the bias moves the expected figure and the interval with it)."""
    kind: str
    confidence: float
    low_ratio: float
    high_ratio: float
    regime: str
    n_rows: int
    n_sources: int
    bias: float = 1.0

    def expected(self, x: float) -> float:
        """The expected figure of a model figure `x` in the interval's own sense (speed, or time for ttft)."""
        return x * self.bias

    def expected_time(self, t: float) -> float:
        """The expected time a speed interval implies for a model time (TPOT from decode, TTFT from prefill)."""
        return t / self.bias

    def bounds(self, x: float) -> tuple[float, float]:
        """(low, high) of a figure in the interval's own sense: a speed for decode / prefill / throughput, a time
        for ttft."""
        return x * self.low_ratio, x * self.high_ratio

    def time_bounds(self, t: float) -> tuple[float, float]:
        """(low, high) of the time a speed interval implies: TPOT from decode, one prompt's TTFT from prefill."""
        return t / self.high_ratio, t / self.low_ratio


def expected_figure(iv: Interval | None, x: float, time: bool = False) -> float:
    """The expected figure of a model figure `x`: times its regime's bias (a speed interval's bias divides a time
    it implies, `time=True`); `x` itself without an interval or when not finite. Every command that prints a plan's
    expected figures (estimate, cheapest) uses this one, so the same plan reads the same."""
    if iv is None or not math.isfinite(x):
        return x
    return iv.expected_time(x) if time else iv.expected(x)


def model_figure(iv: Interval | None, expected: float, time: bool = False) -> float:
    """The model figure behind an expected one: the inverse of expected_figure (for reading a plan's stored
    expected figures back into the figure its interval multiplies)."""
    if iv is None or not math.isfinite(expected):
        return expected
    return expected * iv.bias if time else expected / iv.bias


def _at(qs: list[float], level: float) -> float:
    lv = min(max(level, QUANTILE_LEVELS[0]), QUANTILE_LEVELS[-1])
    for i in range(len(QUANTILE_LEVELS) - 1):
        a, b = QUANTILE_LEVELS[i], QUANTILE_LEVELS[i + 1]
        if a <= lv <= b:
            return qs[i] + (qs[i + 1] - qs[i]) * (lv - a) / (b - a)
    return qs[-1]


def interval(kind: str, engine: str, acc: Any, batch: int, confidence: float = DEFAULT_CONFIDENCE,
             offload: bool = False, mclass: str | None = None, tab: dict[str, Any] | None = None) -> Interval | None:
    """The `confidence` interval of a `kind` prediction for this engine, accelerator, batch and model class
    (model_class(spec); None: the engine x hardware x batch level), or None when no regime (not even "*") has
    cross-validated rows. `tab`: an intervals table of the file's form (default: the shipped one)."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie strictly between 0 and 1")
    rows = (table().get("intervals", {}) if tab is None else tab).get(kind, {})
    for key in regime_keys(engine, acc, batch, offload, mclass):
        t = rows.get(key)
        if t:
            qs = [float(x) for x in t["log_ratio_quantiles"]]
            b = float(t.get("bias_log", 0.0))
            # the expected figure (bias) always lies inside its own interval, at every confidence
            lo, hi = min(_at(qs, (1 - confidence) / 2), 0.0), max(_at(qs, (1 + confidence) / 2), 0.0)
            return Interval(kind, confidence, math.exp(b + lo), math.exp(b + hi), key, int(t["n_rows"]),
                            int(t["n_sources"]), math.exp(b))
    return None


def conservative_speed_ratio(kind: str, engine: str, acc: Any, batch: int, confidence: float | None,
                             offload: bool = False, mclass: str | None = None) -> float:
    """The factor (<= 1) a planner multiplies a predicted speed by so a target holds at the interval's low end:
    min(1, low_ratio). 1 without a confidence or without data (never loosens a target)."""
    if not confidence:
        return 1.0
    iv = interval(kind, engine, acc, batch, confidence, offload, mclass)
    return 1.0 if iv is None else min(1.0, iv.low_ratio)


def conservative_time_ratio(kind: str, engine: str, acc: Any, batch: int, confidence: float | None,
                            offload: bool = False, mclass: str | None = None) -> float:
    """As conservative_speed_ratio for a time (TTFT): max(1, high_ratio)."""
    if not confidence:
        return 1.0
    iv = interval(kind, engine, acc, batch, confidence, offload, mclass)
    return 1.0 if iv is None else max(1.0, iv.high_ratio)


@dataclass(frozen=True)
class Trust:
    """The intervals of one evaluation's speed figures (None where no cross-validated rows exist)."""
    confidence: float
    decode: Interval | None        # on decode tok/s per sequence (and 1/TPOT)
    prefill: Interval | None       # on prefill tok/s (1/TTFT of one prompt)
    ttft: Interval | None          # on served TTFT (a time)
    throughput: Interval | None    # on served output tok/s
    tpot: Interval | None = None   # on served TPOT (a time), from served rows only

    def served_tpot(self) -> tuple[Interval | None, bool]:
        """(interval, is_speed) for a served TPOT: the served-TPOT interval (on the time itself) where served rows
        back it, else the decode-speed one (its time_bounds)."""
        return (self.tpot, False) if self.tpot is not None else (self.decode, True)


def trust(engine: str, acc: Any, batch: int, confidence: float = DEFAULT_CONFIDENCE, offload: bool = False, *,
          spec: Any) -> Trust:
    """The intervals of one evaluation: every command (estimate, cheapest's plan, predict) asks this one question
    with the model's spec, so each lands in the same model-class regime (model_class(spec)) and prints the same
    interval for the same plan."""
    mclass = model_class(spec)
    return Trust(confidence, *(interval(k, engine, acc, batch, confidence, offload, mclass) for k in KINDS))


def planning_ratios(engine: str, acc: Any, batch: int, confidence: float | None,
                    served: bool, offload: bool = False, *, spec: Any) -> tuple[float, float]:
    """(decode-speed factor <= 1, TTFT factor >= 1) a planner applies so its targets hold at the low end of the
    `confidence` interval: the planner, the plan's figures and the independent check all call this one function,
    in the model-class regime of `spec` (as trust()).
    A served workload's TTFT uses the served-TTFT interval, a single prompt's the prefill-speed one; its per-sequence
    speed (1 / TPOT) the served-TPOT interval where served rows back one (Trust.served_tpot), else the decode one."""
    if not confidence:
        return 1.0, 1.0
    mclass = model_class(spec)
    speed = conservative_speed_ratio("decode", engine, acc, batch, confidence, offload, mclass)
    if served:
        if interval("tpot", engine, acc, batch, confidence, offload, mclass) is not None:
            speed = 1.0 / conservative_time_ratio("tpot", engine, acc, batch, confidence, offload, mclass)
        return speed, conservative_time_ratio("ttft", engine, acc, batch, confidence, offload, mclass)
    return speed, 1.0 / conservative_speed_ratio("prefill", engine, acc, batch, confidence, offload, mclass)
