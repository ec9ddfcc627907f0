"""When nothing fits: which constraint fails, by how much, and the cheapest relaxations with their figures."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from optimizer.catalog.models import ResolvedModel
from optimizer.solver.candidates import Candidate, best_point, enumerate_candidates
from optimizer.solver.query import Query


class Relaxation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    change: str            # what to relax, in words
    value: float | None    # the relaxed target (tokens, tok/s, bits, USD)
    cost: float | None     # objective value of the cheapest plan under that relaxation
    plan: str | None       # candidate id of that plan


def _cheapest(cands: list[Candidate], q: Query) -> tuple[float, Candidate, int] | None:
    """The cheapest (cost, candidate, DRAM layers) meeting q. Candidates are visited by base cost: a candidate's
    cost at any offload level is its base cost plus the DRAM it buys (never negative), so once the base cost exceeds
    the best found no later candidate can win (equal costs are still compared by id, as before)."""
    best = None
    for c in sorted(cands, key=lambda c: (c.cost, c.id)):
        if best is not None and c.cost > best[0]:
            break
        p = best_point(c, q)
        if p is not None:
            cost = c.total_cost(p[0])
            if best is None or (cost, c.id) < (best[0], best[1].id):
                best = (cost, c, p[0])
    return best


def relaxations(q: Query, m: ResolvedModel, cands: list[Candidate]) -> tuple[list[str], list[Relaxation]]:
    reasons: list[str] = []
    out: list[Relaxation] = []
    pool = cands
    if q.max_budget is not None:
        q_free = q.model_copy(update={"max_budget": None})
        pool = enumerate_candidates(q_free, m)  # over-budget candidates are pruned from `cands`
        free = _cheapest(pool, q_free)
        if free and free[0] > q.max_budget:
            reasons.append(f"budget: the cheapest plan meeting the targets costs {free[0]:,.2f}, "
                           f"{free[0] - q.max_budget:,.2f} over {q.max_budget:,.2f}")
    if not pool:
        reasons.append(f"no hardware in the allowed catalogue holds {m.key} at {q.context} tokens x {q.concurrency} "
                       f"sequence(s) with the allowed quantizations and engines")
    else:
        def fits(c: Candidate, x: int, z: int) -> bool:
            return bool(c.mem(x, z) <= c.budget_bytes and c.host(x) <= c.dram_max_bytes
                    and c.nvme(z) <= max(c.nvme_capacity_bytes, 0.0))
        mem_ok = [c for c in pool if any(fits(c, x, z) for x, z in c.points())]
        if q.tok_s:
            best = max((1 / min(c.step_time(x, z) for x, z in c.points() if fits(c, x, z)) for c in mem_ok),
                       default=0)
            if best < q.tok_s:
                at = (f" at the low end of its {q.confidence:.0%} prediction interval (--confidence 0: the expected "
                      "figures)") if q.confidence else ""
                reasons.append(f"decode speed: the fastest plan that fits reaches {best:.1f} tok/s per sequence{at}, "
                               f"{q.tok_s - best:.1f} short of {q.tok_s}")
        if q.ttft_s:
            best_t = min((c.ttft(0) for c in mem_ok), default=None)
            if best_t is not None and best_t > q.ttft_s:
                reasons.append(f"TTFT: the fastest prefill takes {best_t:.1f} s, over the {q.ttft_s} s target")
    # relaxations, each re-solved on the float table (cheap)
    def attempt(change: str, value: float | None, **upd: Any) -> bool:
        q2 = q.model_copy(update=upd)
        cs = cands if set(upd) <= {"tok_s", "ttft_s"} else enumerate_candidates(q2, m)
        best = _cheapest(cs, q2)
        if best:
            out.append(Relaxation(change=change, value=value, cost=best[0], plan=best[1].id))
            return True
        return False

    if q.tok_s:
        for frac in (0.75, 0.5, 0.25, 0.1):
            if attempt(f"decode target {q.tok_s * frac:g} tok/s", q.tok_s * frac, tok_s=q.tok_s * frac):
                break
        else:
            attempt("no decode target", 0.0, tok_s=0.0)
    if q.max_budget is not None:
        attempt("no budget cap", None, max_budget=None)
    if q.ttft_s:
        attempt("no TTFT target", None, ttft_s=None)
    ctx = q.context
    for _ in range(3):  # half, quarter, eighth of the asked context
        ctx //= 2
        if ctx < 4096 or attempt(f"context {ctx} tokens", float(ctx), context=ctx):
            break
    if q.concurrency > 1:
        attempt("concurrency 1", 1.0, concurrency=1)
    if q.min_expert_bits or q.min_attn_bits:
        attempt("no quality floor", 0.0, min_expert_bits=0.0, min_attn_bits=0.0)
    if q.gpus or q.owned:
        attempt("any accelerator in the catalogue (not only the allowed/owned ones)", None, gpus=None, owned=None)
    out.sort(key=lambda r: (r.cost is None, r.cost or 0))
    return reasons, out
