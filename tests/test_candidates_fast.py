"""The candidate enumeration's shortcuts (issue 23: fresh-process latency) give exactly the rows the plain
computation gives:

- `_prepare` tests memory before the speed model (`Pending.finish`), hands an offloading row's evaluation at zero
  offloaded layers to its no-offload twin, and memoises planning_ratios per question; with those shortcuts off the
  enumeration must return equal candidates (dataclass equality: every float, note and setting);
- `_meets_all` inlines `feasible_at`; it must agree with the definition that calls it, on real rows and on rows
  whose figures hypothesis moves around.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.catalog.models import resolve_model
from optimizer.solver import candidates as C
from optimizer.solver.candidates import Candidate, enumerate_candidates, feasible_at
from optimizer.solver.query import Owned, Query
from tests.hyp import examples

SMALL = ["h100-sxm", "l40s", "rtx-4090", "a100-80gb-sxm"]


def _query(**kw) -> Query:
    base = dict(model="qwen3-30b-a3b", context=32768, gpus=SMALL, max_nodes=3, top=3, time_limit_s=10)
    base.update(kw)
    return Query(**base)


QUERIES = [
    dict(),
    dict(model="deepseek-v4-flash", context=393216, tok_s=10),
    dict(model="deepseek-v4-flash", context=65536, owned=Owned(accelerators={"rtx-4090": 2}, dram_bytes=256 * 10**9),
         tok_s=5),
    dict(model="deepseek-v4-flash", context=131072, tok_s=20, engines=["sglang", "llamacpp"], loads="zipf:1.2"),
    dict(model="deepseek-v4-flash", context=32768, tok_s=10, isl=8000, osl=1000, rate_rps=2.0, ttft_s=5),
    dict(model="gpt-oss-120b", context=131072, objective="power", ttft_s=60, spec="auto"),
    dict(model="deepseek-v4-flash", context=131072, tok_s=10, confidence=0.0, max_budget=200000),
]


def _plain_prepare(*args, **kw):
    """`_prepare` without the shared twin evaluation and the planning-ratio memo."""
    kw.pop("at_zero", None)
    kw.pop("ratios", None)
    return _PLAIN(*args, **kw)


_PLAIN = C._prepare


def _meets_all_reference(c: Candidate, q: Query) -> bool:
    """The definition `_meets_all` inlines: the least NVMe use that fits device memory, at each x."""
    for x in range(c.max_offload_layers + 1):
        need = c.mem(x) - c.budget_bytes
        z = 0
        if need > 0:
            if c.mem_slope <= 0 or not c.max_nvme_layers:
                continue
            z = int(-(-need // c.mem_slope))
            if z > min(c.max_nvme_layers, c.max_offload_layers - x):
                continue
        if feasible_at(c, q, x, z):
            return True
    return False


@pytest.mark.parametrize("kw", QUERIES)
def test_shortcuts_give_the_same_candidates(kw, monkeypatch):
    q = _query(**kw)
    m = resolve_model(q.model)
    fast = enumerate_candidates(q, m)
    calls = []
    monkeypatch.setattr(C, "_prepare", lambda *a, **k: calls.append(1) or _plain_prepare(*a, **k))
    plain = enumerate_candidates(q, m)
    assert calls, "the plain enumeration did not run"
    assert [c.id for c in fast] == [c.id for c in plain]
    assert fast == plain
    for c in fast:
        assert C._meets_all(c, q) == _meets_all_reference(c, q), c.id


def test_the_twin_shortcut_is_taken():
    """An offloading row's no-offload twin reuses its evaluation (else the shortcut saves nothing)."""
    q = _query(**QUERIES[2])
    m = resolve_model(q.model)
    taken = []
    orig = C._prepare

    def spy(*a, **k):
        at_zero = k.get("at_zero")
        if not k.get("offload", True) and at_zero and "ev" in at_zero:
            taken.append(at_zero["ev"])
        return orig(*a, **k)

    C._prepare = spy
    try:
        cands = enumerate_candidates(q, m)
    finally:
        C._prepare = orig
    assert taken and any(c.max_offload_layers for c in cands)


_REAL: dict[str, tuple[Query, list[Candidate]]] = {}


def _real(kind: str) -> tuple[Query, list[Candidate]]:
    if kind not in _REAL:
        q = _query(**QUERIES[2 if kind == "offload" else 1])
        _REAL[kind] = (q, enumerate_candidates(q, resolve_model(q.model)))
    return _REAL[kind]


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)


@settings(max_examples=examples(300, 60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["offload", "cluster"]), pick=st.integers(0, 10**6), mem_scale=st.floats(0.2, 3.0),
       slope_scale=st.one_of(st.just(0.0), st.floats(-1.0, -0.01), st.floats(0.01, 3.0)), nvme=st.integers(0, 60),
       min_off=st.integers(0, 5),
       tok_s=st.sampled_from([0.0, 1.0, 5.0, 20.0, 80.0]), ttft=st.one_of(st.none(), st.floats(0.5, 5000.0)),
       budget=st.one_of(st.none(), st.floats(1.0, 2e6)), step_scale=st.floats(0.1, 10.0), dram=finite)
def test_meets_all_equals_its_definition(kind, pick, mem_scale, slope_scale, nvme, min_off, tok_s, ttft, budget,
                                         step_scale, dram):
    q0, cands = _real(kind)
    base = cands[pick % len(cands)]
    c = dataclasses.replace(
        base, mem0=base.mem0 * mem_scale, mem_slope=base.mem_slope * slope_scale,
        max_nvme_layers=min(nvme, base.max_offload_layers), min_offload_layers=min(min_off, base.max_offload_layers),
        nvme_capacity_bytes=abs(dram), dram_max_bytes=base.dram_max_bytes * mem_scale,
        step_lines=tuple((a * step_scale, b * step_scale, c3) for a, b, c3 in base.step_lines))
    q = q0.model_copy(update=dict(tok_s=tok_s, ttft_s=ttft, max_budget=budget))
    assert C._meets_all(c, q) == _meets_all_reference(c, q)
