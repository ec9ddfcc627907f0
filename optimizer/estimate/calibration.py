"""Per-system correction factors from the user's own runs (`rigopt calibrate`), applied inside `evaluate()`.

A factor is a speed ratio, measured / predicted (the geometric mean over the user's runs): decode 0.8 means the
user's system decodes at 0.8x what the physics predicts, so every decode step takes 1/0.8 as long; prefill 1.2
means prompts are processed 1.2x faster than predicted. The factors scale the time terms of one decode step and
of a prefill as a whole, so everything built on them (served TPOT and TTFT, throughput, the solver's linear
offload planes, the checker's re-evaluation) moves with them and stays consistent.

`Calibration` is the whole profile as a hashable value on `Deployment.calibration`; the entry that applies to a
deployment is chosen here, from the deployment's own accelerator, device count, engine, model and quantization,
so every caller that evaluates the same deployment gets the same correction. Pure: no I/O (the application
layer reads the profile file, optimizer/fidelity/profile.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from optimizer.errors import InputError
from optimizer.estimate.speed import PrefillEstimate, SpeedEstimate

# A correction outside [1/20, 20] is not a calibration of the model but a different system (or a broken log).
MIN_FACTOR, MAX_FACTOR = 0.05, 20.0
METRICS = ("decode", "prefill")


@dataclass(frozen=True)
class CalibrationEntry:
    """One system key of the profile: `accelerator` x `gpus` on `engine`, optionally for one `model` + `quant`
    (None = every model on that system). `decode`/`prefill` are measured/predicted speed ratios (None = no run
    measured that metric) with the number of runs behind each."""
    accelerator: str
    gpus: int
    engine: str
    model: str | None = None
    quant: str | None = None
    decode: float | None = None
    decode_runs: int = 0
    prefill: float | None = None
    prefill_runs: int = 0

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise InputError(f"calibration entry {self.label}: gpus must be >= 1")
        for name in METRICS:
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and MIN_FACTOR <= v <= MAX_FACTOR):
                raise InputError(f"calibration entry {self.label}: {name} factor {v} is outside "
                                 f"{MIN_FACTOR}..{MAX_FACTOR}")

    @property
    def label(self) -> str:
        base = f"{self.gpus}x {self.accelerator} {self.engine}"
        if self.model:
            base += f" {self.model}"
            if self.quant:
                base += f" {self.quant}"
        return base


@dataclass(frozen=True)
class AppliedCalibration:
    """The factors `evaluate()` applied to one deployment and where each came from."""
    decode: float = 1.0
    decode_runs: int = 0
    decode_scope: str = ""
    prefill: float = 1.0
    prefill_runs: int = 0
    prefill_scope: str = ""
    profile: str = ""

    @property
    def active(self) -> bool:
        return bool(self.decode_runs or self.prefill_runs)

    def describe(self) -> str:
        """'calibrated: decode x0.83 from 3 of your runs, prefill x1.10 from 2 (profile ...)'."""
        parts = []
        if self.decode_runs:
            parts.append(f"decode ×{self.decode:.2f} from {self.decode_runs} of your runs ({self.decode_scope})")
        if self.prefill_runs:
            parts.append(f"prefill ×{self.prefill:.2f} from {self.prefill_runs} of your runs ({self.prefill_scope})")
        return "calibrated: " + ", ".join(parts) + (f" (profile {self.profile})" if self.profile else "")


@dataclass(frozen=True)
class Calibration:
    """A user profile's factors (hashable: a tuple of entries) and the file they were read from."""
    entries: tuple[CalibrationEntry, ...] = ()
    profile: str = ""

    def applied(self, accelerator: str, gpus: int, engine: str, model: str, quant: str) -> AppliedCalibration | None:
        """The factors for one system, per metric from the entry that measured it and fits best: the same model
        and quantization before the same model before the system as a whole, and within each the device count
        closest to `gpus` (the same count first; a factor measured on 1 GPU is the best evidence rigopt has for
        8 of them, and the scope in the message says where it came from). None when no entry matches."""
        same = [e for e in self.entries if e.accelerator == accelerator and e.engine == engine]
        if not same:
            return None

        def rank(e: CalibrationEntry) -> int | None:
            if e.model is None:
                return 2
            if e.model != model:
                return None
            if e.quant is None:
                return 1
            return 0 if e.quant == quant else None

        out: dict[str, object] = {"profile": self.profile}
        for metric in METRICS:
            ranked = sorted(((r, abs(math.log2(e.gpus / gpus)), e.label, e) for e in same
                             if (r := rank(e)) is not None and getattr(e, metric) is not None),
                            key=lambda t: (t[0], t[1], t[2]))
            if ranked:
                e = ranked[0][3]
                out[metric] = getattr(e, metric)
                out[f"{metric}_runs"] = getattr(e, f"{metric}_runs")
                out[f"{metric}_scope"] = e.label
        a = AppliedCalibration(**out)  # type: ignore[arg-type]
        return a if a.active else None


def scale_decode(sp: SpeedEstimate, factor: float) -> SpeedEstimate:
    """A decode step `factor` times as fast: every time term divided by it (the roofline bound is physics and
    stays; a step faster than it lowers the bound time with it, so the bound is never below the prediction)."""
    if factor == 1.0:
        return sp
    k = 1.0 / factor
    step = sp.step_time_s * k
    tok = 1.0 / step if step > 0 and math.isfinite(step) else 0.0
    bound_step = min(sp.bound_step_time_s, step)
    tok_b = 1.0 / bound_step if bound_step > 0 and math.isfinite(bound_step) else 0.0
    return replace(sp, step_time_s=step, tok_s_per_seq=tok, tok_s_aggregate=tok * sp.batch,
                   bound_step_time_s=bound_step, tok_s_bound_per_seq=max(tok, tok_b),
                   terms_s={n: v * k for n, v in sp.terms_s.items()})


def scale_prefill(pf: PrefillEstimate, factor: float) -> PrefillEstimate:
    """A prefill `factor` times as fast (time to first token and busy time per prompt divided by it)."""
    if factor == 1.0:
        return pf
    k = 1.0 / factor
    ttft = pf.ttft_s * k
    return replace(pf, ttft_s=ttft, work_s=pf.work_s * k, ttft_bound_s=min(pf.ttft_bound_s, ttft),
                   tok_s=pf.prompt_tokens / ttft if ttft > 0 and math.isfinite(ttft) else 0.0)
