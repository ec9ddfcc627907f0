"""Traffic and SLAs in, the cheapest fleet out: candidates -> capacities (evaluate) -> CP-SAT -> independent check.

1. Offers (`offers.py`): rented instance shapes (objective hourly) or bought servers, whole or partly filled
   (objective capex).
2. Replica candidates: offer x nodes per replica (1; 2 and 4 whole nodes for vLLM DP/EP across nodes) x engine
   (vLLM, SGLang) x quantization x layout (TP in the fast domain, DP-attention + EP for MoE, PP across nodes),
   kept when the model fits at isl + osl.
3. Capacities per role (`capacity.py`), every figure from `evaluate()`.
4. CP-SAT over (role, candidate) counts (`model.py`): aggregated replicas, disaggregated prefill/decode pools,
   mixed GPU types; cheapest first, then fewest GPUs.
5. Independent check: every pool re-evaluated at the rate the router gives it; disaggregated TTFT = prefill TTFT
   at the percentile + KV transfer + one decode step, for the slowest (prefill, decode) pair. Single-type pools
   are then shrunk while the check still passes (so N is the smallest that meets the SLA).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Container, Iterable
from dataclasses import dataclass, field, replace
from typing import cast

from pydantic import BaseModel, ConfigDict

from optimizer.cache import without_gc
from optimizer.catalog.hardware import get_accelerator, load_hardware
from optimizer.catalog.models import ResolvedModel, resolve_model
from optimizer.errors import InputError
from optimizer.estimate.schemes import get_scheme
from optimizer.fleet import model as M
from optimizer.fleet import pairing
from optimizer.fleet.capacity import SLA, Config, Replica, kv_transfer_s, ttft_at
from optimizer.fleet.money import (
    HOURS_PER_MONTH,
    SECONDS_PER_MONTH,
    ApiPrice,
    break_even_tokens,
    check_costs,
    own_monthly_usd,
    token_cost,
)
from optimizer.fleet.offers import Offer, offers
from optimizer.solver.candidates import fast_domain, layouts
from optimizer.solver.support import plan_unsupported, unsupported

FLEET_SCHEMA = "rigopt.fleet/1"
DEFAULT_ENGINES = ("vllm", "sglang")
DEFAULT_QUANTS = ("native", "fp8")
MULTI_NODE = (2, 4)


@dataclass(frozen=True)
class FleetQuery:
    model: str
    isl: int
    osl: int
    rate_rps: float
    ttft_s: float
    tpot_s: float
    percentile: float = 0.9
    objective: str = "hourly"  # hourly (rent) | capex (buy)
    gpus: tuple[str, ...] | None = None  # allowed accelerators
    engines: tuple[str, ...] = DEFAULT_ENGINES
    quants: tuple[str, ...] = DEFAULT_QUANTS
    disagg: bool = True
    max_types: int = 2  # GPU types / candidates per role (Mélange mixing)
    api_price: ApiPrice | None = None
    amortize_months: float = 36.0
    usd_per_kwh: float = 0.12
    compare_other: bool = True  # also solve the other objective (own vs rent break-even)
    time_limit_s: float = 10.0
    workers: int = 1

    def __post_init__(self) -> None:
        if self.objective not in ("hourly", "capex"):
            raise InputError(f"--objective must be hourly or capex, got '{self.objective}'")
        if not (self.rate_rps > 0 and math.isfinite(self.rate_rps)) or self.rate_rps > 1e6:
            raise InputError(f"--rate must be a positive request rate (req/s), got {self.rate_rps}")
        if self.max_types < 1:
            raise InputError("max_types must be >= 1")
        SLA(self.isl, self.osl, self.ttft_s, self.tpot_s, self.percentile)  # validates
        check_costs(self.amortize_months, self.usd_per_kwh)


# ------------------------------------------------------------------------------------------------ results
class _R(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pool(_R):
    role: str  # aggregated | prefill | decode
    replicas: int
    offer: str
    mode: str  # rent | buy
    accelerator: str
    node: str
    gpus_per_node: int
    nodes_per_replica: int
    gpus_per_replica: int
    engine: str
    quant: str
    kv_dtype: str
    tp: int
    pp: int
    dp: int
    ep: bool
    layout: str
    capacity_rps: float  # per replica, within the SLA
    rate_per_replica_rps: float  # what the router sends each replica
    tpot_s: float | None  # None for prefill pools (they emit no decode tokens)
    ttft_s: float  # at the percentile (prefill pools: before the transfer)
    output_tok_s_per_gpu: float
    total_tok_s_per_gpu: float
    prefill_share: float
    kv_transfer_s: float | None = None
    kv_link: str | None = None
    kv_transport: str | None = None
    kernel_path: str | None = None  # FP4 experts without FP4 tensor cores: the path that runs them (speed.py)
    usd_per_hour: float | None  # per replica
    capex_usd: float | None
    power_watts: float
    price_source: str
    price_as_of: str
    price_provider: str = ""  # the cloud the offer rents from, or "purchase"
    price_region: str | None = None
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float | None = None
    mem_fraction_static: float | None = None


class Money(_R):
    usd_per_hour: float | None
    capex_usd: float | None
    power_watts: float
    usd_per_m_in: float | None
    usd_per_m_out: float | None
    usd_per_m_blended: float | None
    own_monthly_usd: float | None
    rent_monthly_usd: float | None
    monthly_capacity_tokens: float
    own_beats_rent_above_tokens_per_month: float | None = None
    own_beats_api_above_tokens_per_month: float | None = None
    rent_24x7_beats_api_above_tokens_per_month: float | None = None
    rent_beats_api: bool | None = None
    api_usd_per_m_blended: float | None = None
    amortize_months: float
    usd_per_kwh: float
    notes: list[str] = []


class Fleet(_R):
    objective: str
    kind: str  # aggregated | disaggregated | mixed
    pools: list[Pool]
    gpus: int
    cost: float  # objective value (USD/h or USD)
    usd_per_hour: float | None
    capex_usd: float | None
    power_watts: float
    ttft_s: float  # served, at the percentile (worst pool / pair)
    tpot_s: float  # worst pool
    output_tok_s_per_gpu: float
    status: str
    bound: float


class FleetResult(_R):
    schema_id: str = FLEET_SCHEMA
    model: str
    isl: int
    osl: int
    rate_rps: float
    ttft_s: float
    tpot_s: float
    percentile: float
    objective: str
    fleet: Fleet | None
    other: Fleet | None = None  # the cheapest fleet under the other objective (rent vs own)
    money: Money | None = None
    candidates: int
    rows: int
    solve_s: float
    total_s: float
    notes: list[str] = []


# ------------------------------------------------------------------------------------------------ search
@dataclass
class _Cand:
    offer: Offer
    rep: Replica
    n_nodes: int
    pos: int = 0  # place in the whole candidate list (the tie-break rank of its rows)

    @property
    def cfg(self) -> Config:
        return self.rep.cfg

    def cost(self, objective: str) -> float:
        return (self.offer.cost(objective) or 0.0) * self.n_nodes


@dataclass
class Search:
    """Candidates and their replicas, shared by both objectives (capacities are memoised per configuration)."""

    q: FleetQuery
    m: ResolvedModel
    sla: SLA
    replicas: dict[Config, Replica] = field(default_factory=dict)

    def candidates(self, objective: str) -> list[_Cand]:
        hw = load_hardware()
        allowed = {get_accelerator(g).key for g in self.q.gpus} if self.q.gpus else None
        spec = self.m.spec
        out: list[_Cand] = []
        for off in offers(objective, allowed):
            node = hw.nodes[off.node]
            acc = hw.accelerators[off.accelerator]
            fast = min(fast_domain(node), off.gpus)
            counts = [1] + ([k for k in MULTI_NODE] if off.full_node and node.nic else [])
            for engine in self.q.engines:
                if unsupported(engine, spec, acc.arch):
                    continue
                for quant in self.q.quants:
                    try:
                        scheme = get_scheme(quant, self.m.storage)
                    except InputError:
                        continue
                    if plan_unsupported(engine, spec, acc.arch, scheme, "none", 0, hw.hosts[node.host].isa):
                        continue  # the one support rule (optimizer/solver/support.py), formats included
                    for n_nodes in counts:
                        for par in layouts(self.m, engine, n_nodes, off.gpus, fast):
                            cfg = Config(off.node, off.accelerator, off.gpus, n_nodes, engine, quant, None, par)
                            rep = self.replicas.get(cfg)
                            if rep is None:
                                rep = self.replicas[cfg] = Replica(self.m, cfg, self.sla)
                            if rep.fits():
                                out.append(_Cand(off, rep, n_nodes, len(out)))
        return out


def _link_classes(cands: list[_Cand]) -> list[float]:
    return sorted({c.offer.kv_link_bw for c in cands}, reverse=True)


@dataclass(frozen=True)
class _Spec:
    """One (role, candidate[, link class]) row before its capacity is known."""

    role: str
    cand: _Cand
    link_class: int | None
    transfer_s: float | None = None
    budget_s: float | None = None
    order: int = 0  # tie-break rank: role, then the candidate's place in the whole list, then the link class

    def capacity(self, exact: bool) -> float:
        rep = self.cand.rep
        return rep.capacity(self.role, self.budget_s) if exact else rep.optimistic(self.role, self.budget_s)


def _specs(
    cands: list[_Cand], q: FleetQuery, sla: SLA, classes: list[float], objective: str, ranks: list[float] | None = None
) -> list[_Spec]:
    """The rows to price; `ranks`: the link classes of the whole candidate list, for a tie-break rank that does not
    depend on which candidates are searched."""
    all_bw = ranks or classes

    def order(role: int, c: _Cand, b: int | None) -> int:
        return role * 10**8 + c.pos * 100 + (0 if b is None else all_bw.index(classes[b]) + 1)

    out: list[_Spec] = [_Spec("aggregated", c, None, order=order(0, c, None)) for c in cands]
    if q.disagg:
        for c in cands:
            b = classes.index(c.offer.kv_link_bw)
            out.append(_Spec("decode", c, b, order=order(1, c, b)))
        for c in cands:
            if c.rep.optimistic("prefill", sla.ttft_s) <= 0:
                continue  # cannot prefill within the TTFT even with a free link
            kvb = c.rep.kv_bytes()
            by_budget: dict[float, _Spec] = {}
            for b, bw in enumerate(classes):
                t = kv_transfer_s(kvb, min(bw, c.offer.kv_link_bw), c.offer.kv_link_latency_s)
                budget = c.rep.budget_floor(sla.ttft_s - t - sla.tpot_s)
                if budget > 0:  # the slowest class with the same (floored) budget allows the most decode pools
                    by_budget[budget] = _Spec("prefill", c, b, t, budget, order=order(2, c, b))
            out.extend(by_budget.values())
    # the same configuration, role, link class and budget at a higher price never helps: keep the cheapest
    best: dict[tuple[object, ...], _Spec] = {}
    for sp in out:
        k = (sp.role, sp.cand.cfg, sp.link_class, sp.budget_s, sp.cand.n_nodes)
        if k not in best or sp.cand.cost(objective) < best[k].cand.cost(objective):
            best[k] = sp
    return list(best.values())


def _row(sp: _Spec, objective: str, exact: bool) -> M.Row:
    cap = sp.capacity(exact)
    cost = max(1, round(sp.cand.cost(objective) * M.COST_SCALE[objective]))
    cfg = sp.cand.cfg
    return M.Row(
        sp.role, int(cap * M.RATE_SCALE), cost, sp.cand.cfg.gpus, sp.link_class, (sp.cand, sp.transfer_s), sp.order,
        None if sp.role == "aggregated" else pairing.group(sp.cand.offer.key, cfg.accelerator, cfg.engine),
    )


def _hint(rows: list[M.Row], rate: int) -> dict[int, int]:
    best = None
    for i, r in enumerate(rows):
        if r.role == "aggregated" and r.cap > 0:
            n = -(-rate // r.cap)
            if best is None or n * r.cost < best[0]:
                best = (n * r.cost, i, n)
    return {} if best is None else {best[1]: best[2]}


def _pool(c: _Cand, role: str, count: int, rate_each: float, q: FleetQuery, transfer: float | None) -> Pool:
    ev = c.rep.at(role, rate_each)
    s = ev.serving
    assert s is not None  # a fleet replica is always evaluated with its workload
    st = ev.settings
    cfg = c.cfg
    return Pool(
        role=role,
        replicas=count,
        offer=c.offer.key,
        mode=c.offer.mode,
        accelerator=cfg.accelerator,
        node=cfg.node,
        gpus_per_node=cfg.gpus_per_node,
        nodes_per_replica=cfg.n_nodes,
        gpus_per_replica=cfg.gpus,
        engine=cfg.engine,
        quant=cfg.quant,
        kv_dtype=ev.kv.kv_dtype,
        tp=cfg.par.tp,
        pp=cfg.par.pp,
        dp=cfg.par.dp,
        ep=cfg.par.ep,
        layout=cfg.par.label(),
        capacity_rps=c.rep.capacity(role, None if role != "prefill" else _budget(q, transfer)),
        rate_per_replica_rps=rate_each,
        tpot_s=None if role == "prefill" else ev.tpot_s,
        ttft_s=ttft_at(ev, q.percentile),
        output_tok_s_per_gpu=s.output_tok_s_per_gpu if role != "prefill" else 0.0,
        total_tok_s_per_gpu=(
            s.total_tok_s_per_gpu
            if role == "aggregated"
            else rate_each * (q.isl if role == "prefill" else q.osl) / cfg.gpus
        ),
        prefill_share=s.prefill_share,
        kv_transfer_s=transfer,
        kv_link=c.offer.kv_link if role != "aggregated" else None,
        kv_transport=c.offer.kv_transport if role != "aggregated" else None,
        kernel_path=next((n for n in ev.notes if n.startswith("kernel path:")), None),
        usd_per_hour=None if c.offer.usd_per_hour is None else c.offer.usd_per_hour * c.n_nodes,
        capex_usd=None if c.offer.capex_usd is None else c.offer.capex_usd * c.n_nodes,
        power_watts=c.offer.power_watts * c.n_nodes,
        price_source=c.offer.source,
        price_as_of=c.offer.as_of,
        price_provider=c.offer.provider,
        price_region=c.offer.region,
        max_model_len=st.max_model_len,
        max_num_seqs=st.max_num_seqs,
        max_num_batched_tokens=st.max_num_batched_tokens,
        gpu_memory_utilization=st.gpu_memory_utilization,
        mem_fraction_static=st.mem_fraction_static,
    )


def _budget(q: FleetQuery, transfer: float | None) -> float:
    return q.ttft_s - (transfer or 0.0) - q.tpot_s


def _assign(
    pools: list[tuple[_Cand, str, int, float | None]], rate: float, role: str, q: FleetQuery
) -> dict[int, float]:
    """Per-replica rate for each pool of a role: the role's rate split in proportion to capacity."""
    idx = [k for k, p in enumerate(pools) if p[1] == role]
    caps = {
        k: pools[k][0].rep.capacity(role, None if role != "prefill" else _budget(q, pools[k][3]))
        for k in idx
    }
    total = sum(caps[k] * pools[k][2] for k in idx)
    return {k: (rate * caps[k] / total if total > 0 else math.inf) for k in idx}


def _check(
    pools: list[tuple[_Cand, str, int, float | None]], ra: float, rpd: float, q: FleetQuery
) -> tuple[bool, float, float]:
    """Re-evaluate every pool at its share; (all SLAs hold, served TTFT at the percentile, worst TPOT)."""
    rates = {
        **_assign(pools, ra, "aggregated", q),
        **_assign(pools, rpd, "prefill", q),
        **_assign(pools, rpd, "decode", q),
    }
    ok, ttft, tpot = True, 0.0, 0.0
    pre_t, dec_tpot = [], []
    for k, (c, role, count, _transfer) in enumerate(pools):
        if count == 0:
            continue
        r = rates[k]
        ev = c.rep.at(role, r)
        if not ev.sustainable or not ev.fits:
            return False, math.inf, math.inf
        if role == "aggregated":
            ok &= ev.tpot_s <= q.tpot_s and ttft_at(ev, q.percentile) <= q.ttft_s
            ttft, tpot = max(ttft, ttft_at(ev, q.percentile)), max(tpot, ev.tpot_s)
        elif role == "prefill":
            pre_t.append((ttft_at(ev, q.percentile), c))
        else:
            ok &= ev.tpot_s <= q.tpot_s
            dec_tpot.append((ev.tpot_s, c))
            tpot = max(tpot, ev.tpot_s)
    for tp_, cp in pre_t:
        for td, cd in dec_tpot:
            link = min(cp.offer.kv_link_bw, cd.offer.kv_link_bw)
            total = tp_ + kv_transfer_s(cp.rep.kv_bytes(), link, cp.offer.kv_link_latency_s) + td
            ok &= total <= q.ttft_s
            ttft = max(ttft, total)
    return bool(ok), ttft, tpot


def _fleet(sol: M.Solution, rows: list[M.Row], q: FleetQuery, objective: str) -> Fleet | None:
    refs = [cast(tuple[_Cand, float | None], r.ref) for r in rows]
    pools = [(refs[i][0], rows[i].role, n, refs[i][1]) for i, n in enumerate(sol.counts) if n]
    ra, rpd = sol.rate_agg / M.RATE_SCALE, sol.rate_pd / M.RATE_SCALE
    scale = q.rate_rps / ((sol.rate_agg + sol.rate_pd) / M.RATE_SCALE)
    ra, rpd = ra * scale, rpd * scale
    ok, _, _ = _check(pools, ra, rpd, q)
    if not ok:
        return None
    # shrink: fewer replicas in a pool while the physics still says every SLA holds (smallest N)
    for k in range(len(pools)):
        while pools[k][2] > 1:
            trial = list(pools)
            c, role, n, t = trial[k]
            trial[k] = (c, role, n - 1, t)
            if not _check(trial, ra, rpd, q)[0]:
                break
            pools = trial
    ok, ttft, tpot = _check(pools, ra, rpd, q)
    rates = {
        **_assign(pools, ra, "aggregated", q),
        **_assign(pools, rpd, "prefill", q),
        **_assign(pools, rpd, "decode", q),
    }
    out = [_pool(c, role, n, rates[k], q, t) for k, (c, role, n, t) in enumerate(pools)]
    gpus = sum(p.replicas * p.gpus_per_replica for p in out)
    hourly = [p.replicas * p.usd_per_hour for p in out if p.usd_per_hour is not None]
    bought = [p.replicas * p.capex_usd for p in out if p.capex_usd is not None]
    usd_h = sum(hourly) if len(hourly) == len(out) else None
    capex = sum(bought) if len(bought) == len(out) else None
    power = sum(p.replicas * p.power_watts for p in out)
    roles = {p.role for p in out}
    kind = "aggregated" if roles == {"aggregated"} else "disaggregated" if "aggregated" not in roles else "mixed"
    out_tok = q.rate_rps * q.osl / gpus
    return Fleet(
        objective=objective,
        kind=kind,
        pools=out,
        gpus=gpus,
        cost=(usd_h if objective == "hourly" else capex) or 0.0,
        usd_per_hour=usd_h,
        capex_usd=capex,
        power_watts=power,
        ttft_s=ttft,
        tpot_s=tpot,
        output_tok_s_per_gpu=out_tok,
        status=sol.status,
        bound=sol.bound / M.COST_SCALE[objective],
    )


STAGE1_ROWS = 4  # rows per (role, link class) in stage 1 (see solve_objective)
REFINE_MORE = 0  # after each solve, besides the rows it used, the next best of every (role, link class) get exact


def _refine_best(specs: list[_Spec], rows: list[M.Row], objective: str, disagg: bool, rate: int) -> set[int]:
    """Before the first solve: per role, the rows of least cost per capacity, and the rows whose homogeneous pool
    (ceil(R / cap) replicas) costs least, get their exact capacity until the least one is exact (best first:
    refining only lowers a row's capacity). They set the cost bound's UB (a fleet of exact rows) and its rho*
    (`_cost_bound_drop`), and are what CP-SAT picks first."""
    exact: set[int] = set()

    def ratio(r: M.Row) -> float:
        return r.cost / r.cap

    def pool(r: M.Row) -> float:
        return -(-rate // r.cap) * r.cost

    for role in ("aggregated", "prefill", "decode") if disagg else ("aggregated",):
        for key in (ratio, pool):
            heap = [(key(r), i) for i, r in enumerate(rows) if r.role == role and r.cap > 0]
            heapq.heapify(heap)
            while heap:
                _, i = heapq.heappop(heap)
                if i in exact:
                    break
                exact.add(i)
                rows[i] = _row(specs[i], objective, True)
                if rows[i].cap > 0:
                    heapq.heappush(heap, (key(rows[i]), i))
    return exact


def _dominated(rows: list[M.Row], exact: set[int], skip: frozenset[int] | set[int] = frozenset()) -> set[int]:
    """Rows no optimal fleet needs: another row, already exact, of the same role costs no more, uses no more GPUs,
    carries at least the most this row could (its optimistic capacity) and is link-compatible (decode: a link at
    least as fast; prefill: measured for a link at least as slow). Replacing every such replica by the other
    keeps the fleet feasible, no dearer and within the type limit."""
    out: set[int] = set()
    by_role: dict[str, list[int]] = {}
    for i in sorted(exact):
        by_role.setdefault(rows[i].role, []).append(i)
    for i, r in enumerate(rows):
        if r.cap <= 0 or i in skip:
            continue
        for k in by_role.get(r.role, ()):
            x = rows[k]
            if k == i or x.cost > r.cost or x.gpus > r.gpus or x.cap < r.cap or x.group != r.group:
                continue
            if (x.cost, x.gpus, -x.cap, x.rank(k)) >= (r.cost, r.gpus, -r.cap, r.rank(i)):
                continue  # equal rows: keep the first, so two equal rows never remove each other
            if r.role == "decode" and (x.link_class or 0) > (r.link_class or 0):
                continue
            if r.role == "prefill" and (x.link_class or 0) < (r.link_class or 0):
                continue
            out.add(i)
            break
    return out


def _duplicates(rows: list[M.Row], skip: set[int]) -> set[int]:
    """Rows equal to an earlier row in everything CP-SAT sees (role, capacity, cost, GPUs, link class): a fleet
    using one can use the earlier one instead, with no more types, and the tie-break prefers the earlier row
    anyway, so dropping the later ones changes no answer."""
    seen: set[tuple[object, ...]] = set()
    out: set[int] = set()
    for i in sorted(range(len(rows)), key=lambda i: rows[i].rank(i)):
        r = rows[i]
        if r.cap <= 0 or i in skip:
            continue
        k = (r.role, r.cap, r.cost, r.gpus, r.link_class, r.group)
        if k in seen:
            out.add(i)
        seen.add(k)
    return out


def _upper_bound(rows: list[M.Row], exact: set[int], rate: int, allow_disagg: bool) -> float:
    """The cost of the cheapest fleet made of one exact aggregated row, or of one exact prefill and one
    link-compatible exact decode row (inf when there is none): a real fleet, so the optimum costs no more."""
    ub = math.inf
    ex = sorted(i for i in exact if rows[i].cap > 0 and (allow_disagg or rows[i].role == "aggregated"))
    for i in ex:
        if rows[i].role == "aggregated":
            ub = min(ub, -(-rate // rows[i].cap) * rows[i].cost)
    pre = [i for i in ex if rows[i].role == "prefill"]
    for k in ex:
        if rows[k].role != "decode" or not pre:
            continue
        dc = -(-rate // rows[k].cap) * rows[k].cost
        for i in pre:
            linked = (rows[i].link_class or 0) >= (rows[k].link_class or 0)
            if linked and pairing.compatible(rows[i].group, rows[k].group):
                ub = min(ub, dc + -(-rate // rows[i].cap) * rows[i].cost)
    return ub


AFFORDABLE_MIN = 40  # candidate lists shorter than this are searched whole


def _affordable(cands: list[_Cand], q: FleetQuery, sla: SLA, objective: str, rate: int) -> list[_Cand]:
    """The candidates whose one replica costs no more than a fleet found among the cheaper half of them (every
    row of a fleet costs at least its replica, so a dearer one is in no optimal fleet). The cheaper half gets its
    bounds and the best rows their exact capacity (memoised, reused by the search), its upper bound (`_upper_bound`)
    prices the cut; the order of the candidates kept is unchanged (the same tie-breaks). Dearer candidates never
    ask the physics, nor the topology graph of their node."""
    if len(cands) < AFFORDABLE_MIN:
        return cands
    half = sorted(cands, key=lambda c: c.cost(objective))[: len(cands) // 2]
    specs = _specs(half, q, sla, _link_classes(half), objective, _link_classes(cands))
    rows = [_row(sp, objective, False) for sp in specs]
    ub = _upper_bound(rows, _refine_best(specs, rows, objective, q.disagg, rate), rate, q.disagg)
    if not math.isfinite(ub):
        return cands
    return [c for c in cands if max(1, round(c.cost(objective) * M.COST_SCALE[objective])) <= ub]


def _cost_bound_drop(
    rows: list[M.Row], exact: set[int], rate: int, allow_disagg: bool, ub: float = math.inf
) -> set[int]:
    """Rows no optimal fleet uses, by cost bounds. UB: the cost of a fleet built from exact rows (one aggregated
    row alone, or one prefill and one link-compatible decode row). Every row's cost per unit of capacity, with
    its optimistic capacity, is at least that row's true one, so rho* = min(aggregated, prefill + decode best
    cost per capacity) bounds any fleet's cost per unit of rate from below. A fleet using row i pays c_i, and
    the rest of the rate, R - cap_i, at rho* or more (a prefill or decode row also needs one row of the other
    role): LB_i = c_i + max((R - cap_i)+ rho*, [c of the cheapest other-role row]). Rows with LB_i > UB go.
    `ub`: the cost of a fleet already found with exact rows only (a tighter UB)."""
    live = [i for i, r in enumerate(rows) if r.cap > 0 and (allow_disagg or r.role == "aggregated")]
    ub = min(ub, _upper_bound(rows, exact, rate, allow_disagg))
    if not math.isfinite(ub):
        return set()
    ratio = {role: math.inf for role in ("aggregated", "prefill", "decode")}
    cheapest = {role: math.inf for role in ratio}
    for i in live:
        r = rows[i]
        ratio[r.role] = min(ratio[r.role], r.cost / r.cap)
        cheapest[r.role] = min(cheapest[r.role], r.cost)
    rho = min(ratio["aggregated"], ratio["prefill"] + ratio["decode"])
    other = {"aggregated": 0.0, "prefill": cheapest["decode"], "decode": cheapest["prefill"]}
    out = set()
    for i in live:
        r = rows[i]
        lb = r.cost + max(max(0, rate - r.cap) * rho, other[r.role])
        if lb > ub * (1 + 1e-9):
            out.add(i)
    return out


def solve_objective(s: Search, objective: str) -> tuple[Fleet | None, int, int, float]:
    """Lazy refinement: rows start at an optimistic capacity (>= the true one, `Replica.bound`); the best per
    role by cost/capacity and, after each CP-SAT solve, the rows the solution uses get their exact capacity, until
    the solution uses exact rows only. Then it is optimal for the exact table too: every other row only looked
    better than it is. Stage 1 solves over the best few rows of each group only, until its answer is exact: a
    real fleet, whose cost is the UB of the cost-bound pruning of stage 2 (all rows). Rows dominated by an exact
    row (`_dominated`) or whose cost lower bound exceeds the UB (`_cost_bound_drop`) are dropped."""
    q = s.q
    rate = M.scaled_rate(q.rate_rps)
    every = s.candidates(objective)
    cands = _affordable(every, q, s.sla, objective, rate)
    classes = _link_classes(cands)
    specs = _specs(cands, q, s.sla, classes, objective, _link_classes(every))
    rows = [_row(sp, objective, False) for sp in specs]
    groups: dict[tuple[str, int | None], list[int]] = {}
    for i, r in enumerate(rows):
        if r.cap > 0:
            groups.setdefault((r.role, r.link_class), []).append(i)
    exact = _refine_best(specs, rows, objective, q.disagg, rate)

    def refine(ids: Iterable[int]) -> None:
        for i in ids:
            if i not in exact:
                exact.add(i)
                rows[i] = _row(specs[i], objective, True)

    def best_of_groups(k: int, skip: set[int]) -> list[int]:
        out = []
        for idx in groups.values():
            ranked = sorted((i for i in idx if i not in skip and rows[i].cap > 0),
                            key=lambda i: (rows[i].cost / rows[i].cap, i))
            out.extend(ranked[:k])
        return out

    def masked(keep: Container[int]) -> list[M.Row]:
        return [r if i in keep else replace(r, cap=0) for i, r in enumerate(rows)]

    def run(table: list[M.Row], hint: dict[int, int], final: bool) -> M.Solution | None:
        return M.solve(table, rate, len(classes), allow_disagg=q.disagg, max_types=q.max_types,
                       time_limit_s=q.time_limit_s, workers=q.workers, hint=hint, tie_break=final)

    solve_s, ub = 0.0, math.inf
    hint = _hint(rows, rate)
    t = time.perf_counter()
    for _ in range(50):  # stage 1: a real fleet from the best rows
        keep = exact | set(best_of_groups(STAGE1_ROWS, set()))
        sol = run(masked(keep), hint, False)
        if sol is None:
            break
        hint = {i: c for i, c in enumerate(sol.counts) if c}
        new = [i for i in hint if i not in exact]
        if not new:
            ub = sol.cost
            break
        refine(new)
    sol, final = None, False
    for _ in range(200):  # stage 2: every row the bounds keep
        drop = _cost_bound_drop(rows, exact, rate, q.disagg, ub)
        drop |= _dominated(rows, exact, drop)
        drop |= _duplicates(rows, drop)
        table = masked(set(range(len(rows))) - drop)
        sol = run(table, hint, final)
        if sol is None:
            break
        new = [i for i, c in enumerate(sol.counts) if c and i not in exact]
        hint = {i: c for i, c in enumerate(sol.counts) if c}
        if not new:
            if final:
                break
            # the cheapest cost is settled (a fleet of exact rows): one more solve with the tie-breaks, over the
            # rows whose cost bound does not exceed it (every optimal fleet's rows)
            final, ub = True, min(ub, sol.cost)
            continue
        refine(new)
        refine(best_of_groups(REFINE_MORE, exact | drop))
    solve_s += time.perf_counter() - t
    if sol is None:
        return None, len(every), len(specs), solve_s
    return _fleet(sol, table, q, objective), len(every), len(specs), solve_s


def _input_share_usd_h(f: Fleet, key: str) -> float:
    tot = 0.0
    for p in f.pools:
        c = getattr(p, key) * p.replicas
        tot += c if p.role == "prefill" else 0.0 if p.role == "decode" else c * p.prefill_share
    return tot


def money(q: FleetQuery, rent: Fleet | None, own: Fleet | None) -> Money:
    notes: list[str] = []
    cap_tokens = q.rate_rps * (q.isl + q.osl) * SECONDS_PER_MONTH
    usd_h = rent.usd_per_hour if rent else None
    tc = (token_cost(usd_h, _input_share_usd_h(rent, "usd_per_hour"), q.rate_rps, q.isl, q.osl)
          if rent is not None and usd_h else None)
    own_m = (
        own_monthly_usd(own.capex_usd, own.power_watts, q.amortize_months, q.usd_per_kwh)
        if own and own.capex_usd is not None
        else None
    )
    if tc is None and own_m is not None and own is not None and own.capex_usd:  # no rented fleet: owning at full use
        own_h = own_m / HOURS_PER_MONTH
        tc = token_cost(own_h, own_h * _input_share_usd_h(own, "capex_usd") / own.capex_usd, q.rate_rps, q.isl, q.osl)
        notes.append("$/M tokens are the owned fleet's (amortised capex + power), no rentable fleet was found")
    m = Money(
        usd_per_hour=usd_h,
        capex_usd=own.capex_usd if own else None,
        power_watts=own.power_watts if own else (rent.power_watts if rent else 0.0),
        usd_per_m_in=tc.usd_per_m_in if tc else None,
        usd_per_m_out=tc.usd_per_m_out if tc else None,
        usd_per_m_blended=tc.usd_per_m_blended if tc else None,
        own_monthly_usd=own_m,
        rent_monthly_usd=usd_h * HOURS_PER_MONTH if usd_h else None,
        monthly_capacity_tokens=cap_tokens,
        amortize_months=q.amortize_months,
        usd_per_kwh=q.usd_per_kwh,
    )
    if own_m is not None and usd_h:
        m.own_beats_rent_above_tokens_per_month = break_even_tokens(
            own_m, usd_h / (q.rate_rps * (q.isl + q.osl) * 3600)
        )
    if q.api_price is not None:
        api = q.api_price.blended_per_token(q.isl, q.osl)
        m.api_usd_per_m_blended = api * 1e6
        if own_m is not None:
            m.own_beats_api_above_tokens_per_month = break_even_tokens(own_m, api)
        if usd_h:
            m.rent_24x7_beats_api_above_tokens_per_month = break_even_tokens(usd_h * HOURS_PER_MONTH, api)
            m.rent_beats_api = tc.usd_per_m_blended < api * 1e6 if tc else None
    for name in (
        "own_beats_rent_above_tokens_per_month",
        "own_beats_api_above_tokens_per_month",
        "rent_24x7_beats_api_above_tokens_per_month",
    ):
        v = getattr(m, name)
        if v is not None and v > cap_tokens:
            notes.append(
                f"{name.replace('_', ' ')}: {v:.3g} tokens/month is above this fleet's capacity "
                f"({cap_tokens:.3g}): not reached at this size"
            )
    m.notes = notes
    return m


@without_gc
def solve_fleet(q: FleetQuery) -> FleetResult:
    t0 = time.perf_counter()
    m = resolve_model(q.model)
    sla = SLA(q.isl, q.osl, q.ttft_s, q.tpot_s, q.percentile)
    s = Search(q, m, sla)
    fleet, n_c, n_r, solve_s = solve_objective(s, q.objective)
    other = None
    if q.compare_other:
        other, _, _, dt = solve_objective(s, "capex" if q.objective == "hourly" else "hourly")
        solve_s += dt
    rent, own = (fleet, other) if q.objective == "hourly" else (other, fleet)
    notes = []
    if fleet is None and n_c == 0:
        what = "cloud shape (hardware/cloud_shapes.yaml)" if q.objective == "hourly" else "purchasable server"
        notes.append(
            f"no {what} of the allowed GPUs holds the model at isl + osl; try --objective "
            f"{'capex' if q.objective == 'hourly' else 'hourly'} or other --gpus"
        )
    elif fleet is None:
        notes.append(
            "no fleet of the allowed hardware meets these SLAs (a single request alone misses TTFT or "
            "TPOT); relax --ttft/--tpot or allow other GPUs"
        )
    if fleet is not None:
        notes.append("the SLAs are met by the expected TTFT/TPOT figures: fleets do not yet hold them at the low end "
                     "of rigopt's prediction intervals (served TPOT is cross-validated at about 24% median error, "
                     "TTFT 36%: `rigopt validate --metric tpot_ms`); leave headroom accordingly")
    mon = money(q, rent, own) if (rent or own) else None
    return FleetResult(
        model=m.key,
        isl=q.isl,
        osl=q.osl,
        rate_rps=q.rate_rps,
        ttft_s=q.ttft_s,
        tpot_s=q.tpot_s,
        percentile=q.percentile,
        objective=q.objective,
        fleet=fleet,
        other=other,
        money=mon,
        candidates=n_c,
        rows=n_r,
        solve_s=solve_s,
        total_s=time.perf_counter() - t0,
        notes=notes,
    )
