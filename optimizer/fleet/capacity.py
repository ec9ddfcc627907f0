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
bisection's answer against the physics directly, and tests compare it with a linear scan), bracketed from above
by a bound from the rate-free physics alone (`Replica.bound`: no serving solve, so every candidate gets one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import ResolvedModel
from optimizer.errors import InputError
from optimizer.estimate.deployment import Deployment, Evaluation, Evaluator, Hardware
from optimizer.estimate.serving import Workload
from optimizer.layout import Parallel
from optimizer.limits import (
    MAX_CONTEXT_TOKENS,
    MAX_PERCENTILE,
    MAX_SLA_S,
    MIN_PERCENTILE,
    MIN_SLA_S,
    check_int,
    check_number,
    clip_for_message,
)

REL_TOL = 0.006  # log bisection until the bracket is within 0.6%; the answer is its feasible end (conservative)
PROBE_FRACTIONS = (1.0, 0.7, 0.35, 0.05, 1e-3, 1e-6)  # of the rate-free bound; the first feasible starts the bracket
BUDGET_GRID = 0.005  # prefill TTFT budgets are floored to 0.5% of the TTFT SLA (conservative; shares bisections)


@dataclass(frozen=True)
class SLA:
    isl: int
    osl: int
    ttft_s: float
    tpot_s: float
    percentile: float = 0.9  # TTFT percentile (0.5 .. 0.999)

    def __post_init__(self) -> None:
        check_int(self.isl, "--isl", 1, MAX_CONTEXT_TOKENS)
        check_int(self.osl, "--osl", 1, MAX_CONTEXT_TOKENS)
        for name, v in (("--ttft", self.ttft_s), ("--tpot", self.tpot_s)):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v <= 0:
                raise InputError(f"{name} must be positive seconds, got {v:g}")
            check_number(v, f"{name} (seconds)", MIN_SLA_S, MAX_SLA_S)
        pct = self.percentile
        if not (isinstance(pct, (int, float)) and math.isfinite(pct)
                and MIN_PERCENTILE / 100 <= pct <= MAX_PERCENTILE / 100):
            shown = pct * 100 if isinstance(pct, (int, float)) else pct
            raise InputError(f"--percentile must be between {MIN_PERCENTILE:g} and {MAX_PERCENTILE:g}, got "
                             f"{clip_for_message(shown)}")


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


def _rho_within(wait_s: float, service_s: float, p: float) -> float:
    """The largest utilisation at which the p-quantile of the M/D/1 wait is at most `wait_s` (bisection on rho;
    the quantile rises with rho), rounded up so it never falls short."""
    if wait_quantile(1.0 - p, service_s, p) > wait_s:  # pragma: no cover - the quantile is 0 up to rho = 1 - p
        return 1.0 - p
    lo, hi = 1.0 - p, 1.0
    for _ in range(30):  # to 1e-9 of rho: the bound is the upper end
        mid = (lo + hi) / 2
        if wait_quantile(mid, service_s, p) <= wait_s:
            lo = mid
        else:
            hi = mid
    return hi


def kv_transfer_s(kv_bytes_per_gpu: float, link_bw: float, latency_s: float) -> float:
    """One request's KV over the pools' link: every rank sends its own share over its own NIC share."""
    return kv_bytes_per_gpu / link_bw + latency_s


@dataclass
class Replica:
    """A configuration with the model bound; evaluates roles at rates (memoised)."""

    model: ResolvedModel
    cfg: Config
    sla: SLA
    _memo: dict[tuple[object, ...], Any] = field(default_factory=dict, repr=False)

    def deployment(self, wl: Workload) -> Deployment:
        c = self.cfg
        hw = load_hardware()
        node = hw.nodes[c.node]
        # links=None: evaluate() asks the node's topology graph (`plan_links(node, n_nodes, layout)`) when it first
        # needs them, so a candidate that is only checked for memory never builds its node's graph
        hard = Hardware(hw.accelerators[c.accelerator], node, c.n_nodes, c.gpus_per_node, links=None)
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
            return self.evaluator("aggregated").memory.fits
        except InputError:
            return False

    def evaluator(self, role: str) -> Evaluator:
        """The role's deployment with its rate-free physics computed once (`Evaluator`: exactly `evaluate()` at
        every rate)."""
        k = ("evaluator", role)
        ev = self._memo.get(k)
        if ev is None:
            wl = self.workload(role, 1.0)
            if role == "aggregated":
                ev = Evaluator(self.deployment(wl))
            else:  # the same deployment with the role's workload: memory (and for decode, the step curve) shared
                ev = self.evaluator("aggregated").sibling(wl)
            self._memo[k] = ev
        return ev

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
            self._memo[k] = self.evaluator(role).at(self.workload(role, rate))
        ev: Evaluation = self._memo[k]
        return ev

    def kv_bytes(self) -> float:
        """KV bytes per GPU of one request's prompt (what a prefill rank sends), per PP stage."""
        return self.evaluator("prefill").parts.kv.bytes_at(self.sla.isl) / self.cfg.par.pp

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
        return self.bracket(role, ttft_budget)[0]

    def optimistic(self, role: str, ttft_budget: float | None = None, steps: int = 0) -> float:
        """An upper bound of `capacity` after `steps` bisection steps (the infeasible end of the bracket; with
        0 steps and no probe yet, the rate-free `bound`). The fleet search starts from these and refines the rows
        its solution uses (solve.py)."""
        ub = self.bound(role, ttft_budget)
        if steps == 0 and ("cap", role, self._budget_key(ttft_budget)) not in self._memo:
            return ub  # no serving solve yet: the rate-free bound alone
        lo, up = self.bracket(role, ttft_budget, steps)
        return min(up, ub) if lo > 0 else 0.0

    def _budget_key(self, ttft_budget: float | None) -> float | None:
        return None if ttft_budget is None else round(self.budget_floor(ttft_budget), 9)

    def bound(self, role: str, ttft_budget: float | None = None) -> float:
        """An upper bound of `capacity` from the rate-free physics alone (no serving solve): `serve()` at a
        per-replica rate x has prefill share rho = x w (w = engine work per prompt), TTFT >= t1 + wait_p(rho)
        (t1 = one prompt alone), TPOT = s(n) / (1 - rho) >= s(1) for n >= 1 sequences decoding (s = the step
        curve, rising with n), in flight x (TTFT + osl TPOT) <= the admitted sequences A, and n = x osl TPOT
        (Little) with s(n) <= TPOT <= the SLA T, so x = n / (osl TPOT) <= n_T / (osl s(n_T)) where n_T is the
        most sequences with s(n) <= T (n / s(n), the decode throughput, rises with n). Each SLA the role checks
        gives one cap on x; the bound is the least, times the DP ranks. Capacities are searched below it (the
        largest feasible rate up to the bound): where `serve()`'s damped fixed point stops short of Little's law
        (n below x osl TPOT) the physics may accept a rate up to ~1% above the bound, which is then not used
        (conservative; tests scan the rates below the bound)."""
        if ttft_budget is not None:
            ttft_budget = self.budget_floor(ttft_budget)
        key = ("bound", role, None if ttft_budget is None else round(ttft_budget, 9))
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = self._bound(role, ttft_budget)
        return got

    def _bound(self, role: str, ttft_budget: float | None) -> float:
        try:
            ev = self.evaluator(role)
            pf, adm = ev.workload_prefill, ev.admitted_per_replica
        except InputError:
            return 0.0
        if not ev.memory.fits or adm <= 0:
            return 0.0
        s, dp = self.sla, self.cfg.par.dp
        osl = 1 if role == "prefill" else s.osl
        t1, w = pf.ttft_s, max(pf.work_s, 1e-12)
        s1 = ev.step_time(1.0) if role != "prefill" else 0.0  # prefill: one output token, the step left out
        caps = [1.0 / w, adm / (t1 + osl * s1)]  # rho < 1; Little's law on the admitted sequences
        if role != "prefill":  # TPOT
            if s1 > s.tpot_s:
                return 0.0
            caps.append((1.0 - s1 / s.tpot_s) / w)
            caps.append(self._decode_throughput_bound() / osl)
        if role != "decode":  # TTFT at the percentile within the SLA (or the prefill pool's budget)
            budget = s.ttft_s if role == "aggregated" else ttft_budget
            assert budget is not None
            if t1 > budget:
                return 0.0
            caps.append(_rho_within(budget - t1, w, s.percentile) / w)
        return dp * max(0.0, min(caps))

    def _decode_throughput_bound(self) -> float:
        """max n / s(n) over n <= n_T (sequences decoding per replica with s(n) <= the TPOT SLA), bounded by
        its value at any n >= n_T: a coarse geometric search brackets n_T within 25%. The aggregated and decode
        roles share the step curve (same decode context isl + osl/2 and KV pool; only the prompt computed
        differs), so it is found once, on the aggregated role's."""
        key = ("decode_bound",)
        got: float | None = self._memo.get(key)
        if got is not None:
            return got
        ev, t = self.evaluator("aggregated"), self.sla.tpot_s
        lo, hi = 1, max(1, ev.admitted_per_replica)
        if ev.step_time(float(hi)) <= t:
            lo = hi
        while hi > lo + 1 and hi > 1.25 * lo:
            mid = max(lo + 1, min(hi - 1, round(math.sqrt(lo * hi))))
            if ev.step_time(float(mid)) <= t:
                lo = mid
            else:
                hi = mid
        got = self._memo[key] = max(n / ev.step_time(float(n)) for n in (lo, hi))
        return got

    def budget_floor(self, budget: float) -> float:
        """TTFT budgets are floored to a grid of 0.5% of the SLA (conservative; shares bisections)."""
        step = BUDGET_GRID * self.sla.ttft_s
        return round(math.floor(budget / step + 1e-9) * step, 9)

    def bracket(self, role: str, ttft_budget: float | None, steps: int | None = None) -> tuple[float, float]:
        """(feasible rate, infeasible-or-bound rate), memoised and resumable: probes at the rate-free bound and
        fractions of it (the first feasible probe is the low end; the bound itself feasible means the capacity is
        the bound), then log-bisection for `steps` more steps, or (None) until the bracket is within REL_TOL."""
        key = ("cap", role, self._budget_key(ttft_budget))
        if ttft_budget is not None:
            ttft_budget = self.budget_floor(ttft_budget)
        st = self._memo.get(key)
        if st is None:
            hi = self.bound(role, ttft_budget)
            st = [0.0, 0.0, 0]
            if hi > 0:
                up, lo = hi, 0.0
                for f in PROBE_FRACTIONS:
                    if self.ok(role, hi * f, ttft_budget):
                        lo = hi * f
                        break
                    up = hi * f
                st = [lo, up if lo > 0 else 0.0, 0]
            self._memo[key] = st
        if steps is not None:  # plain log-bisection steps
            while st[0] > 0 and st[2] < steps:
                self._probe(st, role, math.sqrt(st[0] * st[1]), ttft_budget)
            return st[0], st[1]
        # Illinois (modified regula falsi) on the SLA margin in log-rate: superlinear from both ends; every
        # decision is `ok`'s, the margin only picks the next probe (bisection where it says nothing)
        side = 0
        m_lo, m_up = self.margin(role, st[0], ttft_budget), self.margin(role, st[1], ttft_budget)
        while st[0] > 0 and st[1] > st[0] * (1 + REL_TOL):
            a, b = math.log(st[0]), math.log(st[1])
            x = (a + b) / 2
            if m_lo > 0 > m_up and m_up > -1.0:
                x = a + (b - a) * m_lo / (m_lo - m_up)
            x = min(max(x, a + 0.01 * (b - a)), b - 0.01 * (b - a))
            rate = math.exp(x)
            m = self.margin(role, rate, ttft_budget)
            if self._probe(st, role, rate, ttft_budget):
                m_lo = max(m, 0.0)
                m_up = m_up / 2 if side == 1 else m_up
                side = 1
            else:
                m_up = min(m, -1e-12)
                m_lo = m_lo / 2 if side == -1 else m_lo
                side = -1
        return st[0], st[1]

    def _probe(self, st: list[Any], role: str, rate: float, ttft_budget: float | None) -> bool:
        good = self.ok(role, rate, ttft_budget)
        st[0 if good else 1] = rate
        st[2] += 1
        return good

    def margin(self, role: str, rate: float, ttft_budget: float | None = None) -> float:
        """How far inside its limits a rate is (relative; about >= 0 where `ok`): the least of the SLA margins
        and the KV pool's (1 - sequences in flight / admitted); -1 when the prefill saturates. The root finder's
        guide only: every decision is `ok`'s."""
        ev = self.at(role, rate)
        sv = ev.serving
        if sv is None or not ev.fits or not (math.isfinite(sv.tpot_s) and math.isfinite(sv.ttft_s)):
            return -1.0
        s = self.sla
        osl = 1 if role == "prefill" else s.osl
        m = 1.0 - rate * (sv.ttft_s + osl * sv.tpot_s) / max(sv.admitted_seqs, 1)
        if role != "prefill":
            m = min(m, 1.0 - sv.tpot_s / s.tpot_s)
        if role != "decode":
            limit = s.ttft_s if role == "aggregated" else ttft_budget
            assert limit is not None
            rho, work, single = sv.prefill_share, ev.prefill.work_s, ev.prefill.ttft_s
            ttft = single + wait_quantile(rho, work, s.percentile) + max(0.0, sv.ttft_s - single - mean_wait(rho, work))
            m = min(m, 1.0 - ttft / limit)
        return max(m, -1.0) if math.isfinite(m) else -1.0


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
