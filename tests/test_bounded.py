"""Branch and bound on cost before the speed model (optimizer/solver/bounded.py): the bounded search gives the
exhaustive search's answer, byte for byte (timings aside), on the shipped scenarios and on generated questions,
including when the independent check rejects plans; it leaves rows unfinished (else it saves nothing); and its
quick infeasibility test never rejects a row the exact row optimum accepts."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from optimizer.scenarios.loader import expand, load_scenario
from optimizer.solver import search
from optimizer.solver.bounded import FINISHED, PENDING, PROBED, Space, too_slow, too_slow_float
from optimizer.solver.oracle import row_optimum
from optimizer.solver.query import Owned, Query
from optimizer.solver.search import cheapest
from optimizer.solver.table import IntRow, Limits, limits, to_rows
from tests.hyp import examples

SMALL = ["h100-sxm", "l40s", "rtx-4090", "a100-80gb-sxm"]
SCENARIOS = sorted(expand(["scenarios"]))


def _answer(q: Query, exhaustive: bool) -> str:
    return cheapest(q, exhaustive=exhaustive).model_dump_json(exclude={"solve_s", "total_s"})


def _same(q: Query) -> None:
    bounded, exhaustive = _answer(q, False), _answer(q, True)
    assert bounded == exhaustive, q


def _scenario_queries(names: set[str] | None = None) -> list[tuple[str, Query]]:
    out = []
    for f in SCENARIOS:
        if names is not None and f.stem not in names:
            continue
        for nq in load_scenario(f).questions:
            if isinstance(nq.query, Query):
                out.append((f"{f.stem}:{nq.name}", nq.query))
    return out


# scenario files whose questions are quick enough for the default suite (the rest: -m slow)
QUICK = {"owned-inventory", "smaller-on-24gb", "v4-flash-desktop", "v4-flash-h200"}


@pytest.mark.parametrize("q", [pytest.param(q, id=name) for name, q in _scenario_queries(QUICK)])
def test_bounded_equals_exhaustive_on_quick_scenarios(q):
    _same(q)


@pytest.mark.slow
@pytest.mark.parametrize("q", [pytest.param(q, id=name) for name, q in _scenario_queries()
                               if name.split(":")[0] not in QUICK])
def test_bounded_equals_exhaustive_on_every_shipped_scenario(q):
    _same(q)


def _stages(q: Query) -> list[int]:
    """The stage each row of q ended the bounded search in."""
    seen: list[Space] = []
    orig = search.Space

    class Spy(orig):  # type: ignore[misc,valid-type]
        def __init__(self, *a):
            super().__init__(*a)
            seen.append(self)

    search.Space = Spy
    try:
        cheapest(q)
    finally:
        search.Space = orig
    return seen[0].stage


def test_rows_are_left_unfinished():
    """Most rows never get their prefill and many no speed model at all (else the bound saves nothing)."""
    q = Query(model="qwen3-30b-a3b", context=32768, tok_s=40, gpus=SMALL, max_nodes=3, headline_min_bits=3.9)
    stages = _stages(q)
    assert len(stages) == cheapest(q, exhaustive=True).candidates
    assert stages.count(FINISHED) < len(stages) // 4
    assert stages.count(PENDING) > 0 and stages.count(PROBED) > 0


@pytest.mark.slow
def test_default_question_json_is_unchanged():
    """The README's default question, as `rigopt cheapest` asks it: count, headline, alternatives and frontier."""
    q = Query(model="deepseek-v4-pro", context=393216, tok_s=20, headline_min_bits=3.9)
    _same(q)
    stages = _stages(q)
    assert stages.count(FINISHED) < len(stages) // 10
    assert stages.count(PENDING) > len(stages) // 5


@seed(23)
@settings(max_examples=examples(40, 4), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(["qwen3-30b-a3b", "qwen3-8b", "deepseek-v4-flash", "gpt-oss-120b", "llama-3.1-70b"]),
       ctx=st.sampled_from([8192, 32768, 131072]), tok=st.sampled_from([0.0, 5.0, 20.0, 60.0]),
       ttft=st.sampled_from([None, 1.0, 30.0]), objective=st.sampled_from(["capex", "hourly", "power"]),
       floor=st.sampled_from([None, 3.9, 7.0]), tier=st.sampled_from([None, None, "2-bit", "8-bit"]),
       top=st.integers(1, 5), gpus=st.lists(st.sampled_from(SMALL), min_size=1, max_size=4, unique=True),
       nodes=st.integers(1, 3), conc=st.sampled_from([1, 4]), conf=st.sampled_from([0.0, 0.8]),
       budget=st.sampled_from([None, 5000.0, 60000.0]), owned=st.booleans())
def test_bounded_equals_exhaustive_on_generated_questions(model, ctx, tok, ttft, objective, floor, tier, top, gpus,
                                                          nodes, conc, conf, budget, owned):
    q = Query(model=model, context=ctx, tok_s=tok, ttft_s=ttft, objective=objective, headline_min_bits=floor,
              tier=tier, top=top, gpus=gpus, max_nodes=nodes, concurrency=conc, confidence=conf,
              max_budget=budget if objective == "capex" else None, time_limit_s=10,
              owned=Owned(accelerators={"rtx-4090": 2}, dram_bytes=256 * 10**9) if owned else None)
    _same(q)


@pytest.mark.parametrize("reject", [1, 3])
def test_rejected_plans_give_the_exhaustive_answer(reject, monkeypatch):
    """The independent check turning down the cheapest rows moves the picks past the rows the bound finished:
    the search must notice on the answer itself and widen (here the first `reject` rows the exhaustive search
    would pick, so the headline and alternatives all come from further down)."""
    q = Query(model="qwen3-30b-a3b", context=32768, tok_s=40, gpus=SMALL, max_nodes=2, top=3, headline_min_bits=3.9)
    first = cheapest(q, exhaustive=True)
    picked = [p.candidate_id for p in [first.plan, *first.alternatives] if p is not None][:reject]
    assert picked
    real = search.check
    monkeypatch.setattr(search, "check", lambda plan, qq: ["rejected"] if plan.candidate_id in picked
                        else real(plan, qq))
    bounded, exhaustive = _answer(q, False), _answer(q, True)
    assert bounded == exhaustive
    assert json.loads(bounded)["plan"]["candidate_id"] not in picked


@st.composite
def rows(draw):
    L = draw(st.integers(0, 8))
    return IntRow(
        index=0, quality_rank=0, tie_rank=0, max_offload_layers=L, max_extra_dram_gb=draw(st.integers(0, 5)),
        cost=draw(st.integers(1, 50)), dram_cost_per_gb=draw(st.integers(0, 7)), device_mib=draw(st.integers(10, 200)),
        device_mib_per_layer=draw(st.integers(-5, 40)), device_budget_mib=draw(st.integers(10, 200)),
        host_mb=draw(st.integers(0, 3000)), host_mb_per_layer=draw(st.integers(0, 2500)),
        host_dram_mb=draw(st.integers(0, 6000)),
        step_planes_ns=tuple((draw(st.integers(1, 100)), draw(st.integers(-20, 30)), draw(st.integers(-20, 40)))
                             for _ in range(draw(st.integers(1, 4)))),
        max_nvme_layers=draw(st.integers(0, 9)), nvme_capacity_mb=draw(st.integers(0, 9000)),
        ttft_ns=1, ttft_ns_per_dram_layer=0, min_offload_layers=draw(st.integers(0, 2)))


@seed(23)
@settings(max_examples=examples(800, 150), deadline=None)
@given(r=rows(), step=st.integers(1, 150))
def test_too_slow_never_rejects_a_feasible_row(r, step):
    lim = Limits(step_ns=step, ttft_ns=None, budget=None)
    if too_slow(r, lim):
        assert row_optimum(r, lim) is None


def test_too_slow_float_implies_too_slow_in_integers():
    """On real rows (offloading, NVMe and cluster rows) and several targets: the float test never rejects a row
    whose integer row has a feasible decode step."""
    from optimizer.catalog.models import resolve_model
    from optimizer.solver.candidates import enumerate_candidates
    checked = 0
    for kw in (dict(model="deepseek-v4-flash", context=65536, gpus=["rtx-4090", "h100-sxm"], max_nodes=2),
               dict(model="qwen3-30b-a3b", context=32768, gpus=SMALL, max_nodes=2)):
        base = Query(**kw)
        cands = enumerate_candidates(base, resolve_model(base.model))
        for tok in (1.0, 5.0, 20.0, 60.0, 200.0):
            q = base.model_copy(update={"tok_s": tok})
            lim = limits(q)
            relaxed = Limits(step_ns=lim.step_ns, ttft_ns=None, budget=None)
            for c in cands:
                if too_slow_float(c, tok):
                    checked += 1
                    assert too_slow(to_rows([c], q)[0], relaxed), c.id
    assert checked > 50
