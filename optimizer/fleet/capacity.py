"""How much traffic one replica carries within the SLA, from `evaluate()` (the one physics entry point).

A replica configuration fixes hardware (node type, GPUs per node, nodes), engine, quantization, KV dtype and
layout. For each role it plays, its capacity is the highest request rate (open loop, Poisson) at which every SLA
holds when `evaluate(Deployment(..., workload=Workload(isl, osl, rate_rps=r)))` is asked:

- aggregated: stable, TPOT <= tpot and TTFT at the percentile <= ttft;
- prefill (disaggregated): a prefill-only instance (Workload(isl, osl=1)): stable and
  TTFT_p + KV transfer + one decode step (bounded by the TPOT SLA) <= ttft;
- decode (disaggregated): the prompt's KV arrives over the link, which the engine treats as a prefix-cache hit
  (Workload(isl, osl, prefix_hit = 1 - 1/isl): one token left to compute): stable (the KV pool admits every
  decoding sequence: rate x osl x TPOT by Little's law) and TPOT <= tpot.

TTFT at percentile p: prefill alone + the p-quantile of the M/D/1 wait for earlier prompts with the exponential
tail `optimizer/estimate/serving.py` uses for p90 (P(wait > t) = rho exp(-t rho / mean)): quantile = 0 when
1 - p >= rho, else mean / rho x ln(rho / (1 - p)). For p = 0.9 this is exactly `serving.ttft_p90_s`. TPOT is the
model's per-step mean (steps are deterministic in the model; prefill interference is averaged into it).

Capacities are found by bisection on the rate (feasibility falls as the rate rises; `min_replicas` checks the
bisection's answer against the physics directly, and tests compare it with a linear scan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import ResolvedModel
from optimizer.errors import InputError
from optimizer.estimate.deployment import Deployment, Evaluation, Hardware, evaluate, memory_of
from optimizer.layout import Parallel
from optimizer.estimate.serving import Workload
from optimizer.topology_links import plan_links

BISECT_STEPS = 9  # log bisection: a bracket of 20x (1000x) ends within 0.6% (1.4%); the answer is the
LOW_FRACTIONS = (0.05, 1e-3, 1e-6)  # feasible end, so capacities are conservative
BUDGET_GRID = 0.005  # prefill TTFT budgets are floored to 0.5% of the TTFT SLA (conservative; shares bisections)


@dataclass(frozen=True)
class SLA:
    isl: int
    osl: int
    ttft_s: float
    tpot_s: float
    percentile: float = 0.9  # TTFT percentile (0.5 .. 0.999)

    def __post_init__(self) -> None:
        if self.isl < 1 or self.osl < 1:
            raise InputError("--isl and --osl must be >= 1")
        if not (self.ttft_s > 0 and self.tpot_s > 0) or not (math.isfinite(self.ttft_s) and math.isfinite(self.tpot_s)):
            raise InputError("--ttft and --tpot must be positive seconds")
        if not 0.5 <= self.percentile <= 0.999:
            raise InputError(f"--percentile must be between 50 and 99.9, got {self.percentile * 100:g}")


@dataclass(frozen=True)
class Config:
    """One replica's deployment, without its traffic."""

    node: str
    accelerator: str
    gpus_per_node: int
    n_nodes: int
    engine: str
    quant: str
    kv_dtype: str | None
    par: Parallel

    @property
    def gpus(self) -> int:
        return self.gpus_per_node * self.n_nodes

    def label(self) -> str:
        return f"{self.n_nodes}x{self.gpus_per_node} {self.accelerator} {self.engine} {self.quant} {self.par.label()}"


def wait_quantile(rho: float, service_s: float, p: float) -> float:
    """p-quantile of the M/D/1 wait (exponential tail; see the module docstring)."""
    if rho <= 0:
        return 0.0
    if rho >= 1:
        return math.inf
    mean = rho / (2.0 * (1.0 - rho)) * service_s
    if 1.0 - p >= rho:
        return 0.0
    return mean / rho * math.log(rho / (1.0 - p))


def mean_wait(rho: float, service_s: float) -> float:
    if rho <= 0:
        return 0.0
    if rho >= 1:
        return math.inf
    return rho / (2.0 * (1.0 - rho)) * service_s


def ttft_at(ev: Evaluation, p: float) -> float:
    """TTFT at percentile p of an evaluated deployment with a workload (inf when not sustainable)."""
    s = ev.serving
    if s is None or not s.stable:
        return math.inf
    rho, work, single = s.prefill_share, ev.prefill.work_s, ev.prefill.ttft_s
    extra = max(0.0, s.ttft_s - single - mean_wait(rho, work))  # closed-loop queueing beyond the prefill queue
    return single + wait_quantile(rho, work, p) + extra


def kv_transfer_s(kv_bytes_per_gpu: float, link_bw: float, latency_s: float) -> float:
    """One request's KV over the pools' link: every rank sends its own share over its own NIC share."""
    return kv_bytes_per_gpu / link_bw + latency_s


@dataclass
class Replica:
    """A configuration with the model bound; evaluates roles at rates (memoised)."""

    model: ResolvedModel
    cfg: Config
    sla: SLA
    _memo: dict = field(default_factory=dict, repr=False)

    def deployment(self, wl: Workload) -> Deployment:
        c = self.cfg
        hw = load_hardware()
        node = hw.nodes[c.node]
        hard = Hardware(
            hw.accelerators[c.accelerator], node, c.n_nodes, c.gpus_per_node, links=plan_links(node, c.n_nodes, c.par)
        )
        return Deployment(
            model=self.model,
            quant=c.quant,
            engine=c.engine,
            hardware=hard,
            parallel=c.par,
            context=self.sla.isl + self.sla.osl,
            kv_dtype=c.kv_dtype,
            workload=wl,
        )

    def fits(self) -> bool:
        try:
            return memory_of(self.deployment(Workload(self.sla.isl, self.sla.osl, rate_rps=1.0))).fits
        except InputError:
            return False

    def workload(self, role: str, rate: float) -> Workload:
        s = self.sla
        if role == "prefill":
            return Workload(s.isl, 1, rate_rps=rate)
        if role == "decode":
            return Workload(s.isl, s.osl, rate_rps=rate, prefix_hit=1.0 - 1.0 / (s.isl + 1))
        return Workload(s.isl, s.osl, rate_rps=rate)

    def at(self, role: str, rate: float) -> Evaluation:
        k = (role, rate)
        if k not in self._memo:
            self._memo[k] = evaluate(self.deployment(self.workload(role, rate)))
        return self._memo[k]

    def kv_bytes(self) -> float:
        """KV bytes per GPU of one request's prompt (what a prefill rank sends), per PP stage."""
        ev = self.at("prefill", 1e-6)
        return ev.kv.bytes_at(self.sla.isl) / self.cfg.par.pp

    # ---- SLA checks at a rate
    def ok(self, role: str, rate: float, ttft_budget: float | None = None) -> bool:
        ev = self.at(role, rate)
        if not ev.sustainable or not ev.fits:
            return False
        s = self.sla
        if role == "aggregated":
            return ev.tpot_s <= s.tpot_s and ttft_at(ev, s.percentile) <= s.ttft_s
        if role == "decode":
            return ev.tpot_s <= s.tpot_s
        assert ttft_budget is not None
        return ttft_at(ev, s.percentile) <= ttft_budget

    def capacity(self, role: str, ttft_budget: float | None = None) -> float:
        """Highest rate (req/s) this replica carries within the SLA in `role` (0 when none): the feasible end
        of the bisection bracket."""
        return self.bracket(role, ttft_budget, BISECT_STEPS)[0]

    def optimistic(self, role: str, ttft_budget: float | None = None, steps: int = 0) -> float:
        """An upper bound of `capacity` after `steps` bisection steps (the infeasible end of the bracket; with
        0 steps the rate ceiling or the first infeasible probe). The fleet search starts from these and refines
        the rows its solution uses (solve.py)."""
        lo, up = self.bracket(role, ttft_budget, steps)
        return up if lo > 0 else 0.0

    def budget_floor(self, budget: float) -> float:
        """TTFT budgets are floored to a grid of 0.5% of the SLA (conservative; shares bisections)."""
        step = BUDGET_GRID * self.sla.ttft_s
        return round(math.floor(budget / step + 1e-9) * step, 9)

    def bracket(self, role: str, ttft_budget: float | None, steps: int) -> tuple[float, float]:
        """(feasible rate, infeasible-or-ceiling rate) after `steps` log-bisection steps (memoised, resumable)."""
        if ttft_budget is not None:
            ttft_budget = self.budget_floor(ttft_budget)
        key = ("cap", role, None if ttft_budget is None else round(ttft_budget, 9))
        st = self._memo.get(key)
        if st is None:
            hi = self._rate_ceiling(role)
            st = [0.0, 0.0, 0]
            if hi > 0:
                up, lo = hi, 0.0
                for f in LOW_FRACTIONS:
                    if self.ok(role, hi * f, ttft_budget):
                        lo = hi * f
                        break
                    up = hi * f
                st = [lo, up if lo > 0 else 0.0, 0]
            self._memo[key] = st
        while st[0] > 0 and st[2] < steps:
            mid = math.sqrt(st[0] * st[1])
            if self.ok(role, mid, ttft_budget):
                st[0] = mid
            else:
                st[1] = mid
            st[2] += 1
        return st[0], st[1]

    def _rate_ceiling(self, role: str) -> float:
        """A rate no replica can exceed: prefill saturating the engine (rho = 1), or the admitted sequences all
        decoding at the batch-1 step time."""
        ev = self.at(role, 1e-6)
        if not ev.fits or ev.serving is None or not ev.serving.stable:
            return 0.0
        if role == "decode":
            return max(ev.serving.admitted_seqs, 1) / (self.sla.osl * max(ev.decode.step_time_s, 1e-9))
        return self.cfg.par.dp / max(ev.prefill.work_s, 1e-12)  # each DP rank prefills its own requests


def min_replicas(rep: Replica, rate: float, role: str = "aggregated", max_n: int = 1_000_000) -> int | None:
    """Smallest N such that N replicas, each at rate / N, meet the SLA (None when no N does). From the
    capacity, then checked against the physics at rate / N and rate / (N - 1)."""
    cap = rep.capacity(role)
    if cap <= 0:
        return None
    n = max(1, math.ceil(rate / cap - 1e-12))
    while n <= max_n and not rep.ok(role, rate / n):
        n += 1
    while n > 1 and rep.ok(role, rate / (n - 1)):
        n -= 1
    return n if n <= max_n else None


def min_replicas_scan(rep: Replica, rate: float, role: str = "aggregated", max_n: int = 10_000) -> int | None:
    """Oracle: the first N = 1, 2, ... at which rate / N meets the SLA."""
    for n in range(1, max_n + 1):
        if rep.ok(role, rate / n):
            return n
    return None


def with_par(cfg: Config, par: Parallel) -> Config:
    return replace(cfg, par=par)
