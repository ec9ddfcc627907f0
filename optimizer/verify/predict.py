"""What the plan promises for the workload `rigopt verify` sends: the plan's own serving figures when the workload
is the plan's, else the plan re-evaluated for it (the same deployment every consumer of a plan file evaluates,
optimizer/solver/validate.py), with the cross-validated intervals of the plan's regime
(optimizer/estimate/uncertainty.py: decode for TPOT, served TTFT, served throughput)."""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.catalog.hardware import get_node, load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.errors import InputError
from optimizer.estimate.deployment import evaluate
from optimizer.estimate.uncertainty import expected_figure, model_figure, trust
from optimizer.solver.plan import Plan
from optimizer.solver.query import Query
from optimizer.solver.validate import plan_deployment


@dataclass(frozen=True)
class Figure:
    predicted: float | None
    low: float | None          # the interval in the figure's own unit (a time: low = fast end)
    high: float | None


@dataclass(frozen=True)
class Prediction:
    source: str                # "plan" (its serving block) | "re-evaluated" (this workload)
    ttft_mean_s: Figure
    ttft_p90_s: Figure
    tpot_s: Figure
    output_tok_s: Figure
    total_tok_s: Figure
    admitted_seqs: int | None
    kv_usage_peak: float | None    # share of the KV pool the workload's sequences fill at their longest
    confidence: float
    regime: str


@dataclass(frozen=True)
class Workload:
    isl: int
    osl: int
    concurrency: int | None
    rate_rps: float | None

    @property
    def label(self) -> str:
        load = f"concurrency {self.concurrency}" if self.concurrency else f"{self.rate_rps:g} requests/s (Poisson)"
        return f"{self.isl:,} in / {self.osl:,} out, {load}"


def workload_of(plan: Plan, isl: int | None, osl: int | None, concurrency: int | None,
                rate: float | None) -> Workload:
    """The benchmark's workload: the options given, the plan's own workload for the rest."""
    sv = plan.serving
    if concurrency is not None and rate is not None:
        raise InputError("give --concurrency or --rate, not both")
    isl = isl or (sv.isl if sv else None)
    osl = osl or (sv.osl if sv else None)
    if isl is None or osl is None:
        raise InputError("the plan has no workload (planned without --isl/--osl): give --isl and --osl")
    if isl + osl > plan.context:
        raise InputError(f"{isl:,} + {osl:,} tokens exceed the plan's context {plan.context:,} (the engine's "
                         "max_model_len): the server would refuse these requests")
    if concurrency is None and rate is None:
        if sv is not None and sv.rate_rps:
            rate = sv.rate_rps
        else:
            concurrency = (sv.concurrency if sv and sv.concurrency else None) or plan.concurrency
    return Workload(isl, osl, concurrency, rate)


def _interval(x: float | None, iv, time: bool = False, expected: bool = True) -> Figure:
    """A model figure `x` with the interval's bounds, printed as its expected figure (the regime's bias applied,
    uncertainty.expected_figure) where the plan and `estimate` print one (`expected`), else as it is (TTFT p90 and
    total tok/s, which they print uncorrected)."""
    if x is None:
        return Figure(None, None, None)
    if iv is None:
        return Figure(x, None, None)
    lo, hi = iv.time_bounds(x) if time else iv.bounds(x)
    return Figure(expected_figure(iv, x, time) if expected else x, lo, hi)


def predict(plan: Plan, w: Workload, confidence: float) -> Prediction:
    sv = plan.serving
    own = (sv is not None and (sv.isl, sv.osl) == (w.isl, w.osl)
           and (sv.concurrency, sv.rate_rps) == (w.concurrency, w.rate_rps))
    acc = load_hardware().accelerators[get_node(plan.hardware.node).accelerator]
    batch = 2 if w.rate_rps else (w.concurrency or 1)
    tr = trust(plan.engine, acc, batch, confidence, offload=plan.offload.mode != "none",
               spec=resolve_model(plan.model).spec)
    if own:
        assert sv is not None
        # the plan stores expected figures (bias applied): back to the model's, which the intervals multiply
        tp_iv, tp_speed = tr.served_tpot()
        tpot, ttft, ttft90 = (model_figure(tp_iv, sv.tpot_s, tp_speed), model_figure(tr.ttft, sv.ttft_s),
                              sv.ttft_p90_s)
        out_tok, total_tok, admitted = model_figure(tr.throughput, sv.output_tok_s), sv.total_tok_s, sv.admitted_seqs
        source = "plan"
    else:
        q = Query(model=plan.model, context=plan.context, concurrency=w.concurrency or 1, isl=w.isl, osl=w.osl,
                  rate_rps=w.rate_rps, confidence=confidence)
        ev = evaluate(plan_deployment(plan, q))
        s = ev.serving
        if s is None:
            raise InputError("rigopt has no serving model for this plan and workload")
        tpot, ttft, ttft90 = s.tpot_s, s.ttft_s, s.ttft_p90_s
        out_tok, total_tok, admitted = s.output_tok_s, s.total_tok_s, s.admitted_seqs
        source = "re-evaluated"
    # the KV the workload's sequences hold at their longest, as a share of the pool: the plan's KV for
    # `concurrency` sequences at `context`, scaled to isl + osl tokens, over that KV plus the headroom the engine
    # also gives the pool (vLLM and SGLang size the pool to the memory budget)
    mem = plan.memory
    seqs = w.concurrency if w.concurrency else admitted
    pool = mem.kv_bytes + max(0.0, mem.headroom_bytes)
    kv_peak = None
    if pool > 0 and plan.engine in ("vllm", "sglang") and seqs:
        per_seq_token = mem.kv_bytes / (plan.concurrency * plan.context)
        kv_peak = min(1.0, per_seq_token * min(seqs, admitted or seqs) * (w.isl + w.osl) / pool)
    return Prediction(
        source=source,
        ttft_mean_s=_interval(ttft, tr.ttft), ttft_p90_s=_interval(ttft90, tr.ttft, expected=False),
        tpot_s=_interval(tpot, *tr.served_tpot()),
        output_tok_s=_interval(out_tok, tr.throughput),
        total_tok_s=_interval(total_tok, tr.throughput, expected=False),
        admitted_seqs=admitted, kv_usage_peak=kv_peak, confidence=confidence,
        regime=(tr.decode.regime if tr.decode else "-"))
