"""Disaggregated pairing rule (optimizer/fleet/pairing.py): a prefill pool feeds a decode pool only with the same
engine, the same GPU software stack and a fabric between them (one provider, or owned servers)."""

from __future__ import annotations

import random

import pytest

from optimizer.fleet import FleetQuery, pairing, solve_fleet
from optimizer.fleet import model as M


def test_why_not_names_each_broken_condition():
    assert pairing.why_not(pairing.group("rent:lambda/gpu_8x_b200_sxm6", "b200", "vllm"),
                           pairing.group("rent:runpod/h100-sxm podx4", "h100-sxm", "vllm")).startswith("no fabric")
    assert "engine" in pairing.why_not(pairing.group("buy:hgx-h100-8[8/8]", "h100-sxm", "vllm"),
                                       pairing.group("buy:hgx-h100-8[4/8]", "h100-sxm", "sglang"))
    assert "ROCM prefill to CUDA" in pairing.why_not(pairing.group("buy:mi300x-8[4/8]", "mi300x", "vllm"),
                                                     pairing.group("buy:hgx-a100-80-8[8/8]", "a100-80gb-sxm", "vllm"))
    same = pairing.group("rent:runpod/h100-sxm podx4", "h100-sxm", "sglang")
    assert pairing.why_not(same, pairing.group("rent:runpod/h100-sxm podx8", "h100-sxm", "sglang")) is None


def _rows(rng: random.Random) -> list[M.Row]:
    rows = []
    for role in ("aggregated", "prefill", "decode"):
        for _ in range(rng.randint(1, 3)):
            rows.append(M.Row(role, rng.randint(300, 2500), rng.randint(5, 60), rng.choice((1, 2, 4, 8)),
                              None if role == "aggregated" else rng.randint(0, 1),
                              group=None if role == "aggregated" else rng.choice(("a", "b"))))
    return rows


@pytest.mark.parametrize("seed", range(15))
def test_cpsat_with_pairing_keys_equals_brute_force(seed):
    """CP-SAT against the brute-force oracle when prefill/decode rows carry pairing keys; the answer's
    disaggregated pools all share one key."""
    rng = random.Random(1000 + seed)
    rows, rate = _rows(rng), rng.randint(500, 4000)
    want = M.brute_force(rows, rate, max_types=2)
    sol = M.solve(rows, rate, 2, max_types=2, time_limit_s=5)
    if want is None:
        assert sol is None
        return
    assert sol is not None and sol.cost == want
    assert len({r.group for r, c in zip(rows, sol.counts, strict=True) if c and r.role != "aggregated"}) <= 1


def test_brute_force_refuses_a_cheaper_cross_group_pair():
    """By hand: the cheapest prefill (key a, cost 1) and decode (key b, cost 1) rows cannot pair; the cheapest
    legal fleet pairs within key a (1 + 10) or key b (10 + 1): 11, not 2."""
    rows = [M.Row("prefill", 1000, 1, 1, 0, group="a"), M.Row("decode", 1000, 10, 1, 0, group="a"),
            M.Row("prefill", 1000, 10, 1, 0, group="b"), M.Row("decode", 1000, 1, 1, 0, group="b")]
    assert M.brute_force(rows, 1000) == 11
    sol = M.solve(rows, 1000, 1)
    assert sol is not None and sol.cost == 11


QUESTIONS = [  # before the rule: MI300X (ROCm) prefill fed A100 (CUDA) decode; a Lambda B200 prefill pool fed a
    # RunPod decode pool "over InfiniBand"
    FleetQuery("qwen3-8b", 30000, 300, 10.0, 2.0, 0.02, gpus=("h100-sxm", "l40s", "mi300x", "a100-80gb-sxm")),
    pytest.param(FleetQuery("llama-3.1-70b", 16000, 500, 5.0, 2.0, 0.03), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("q", QUESTIONS)
def test_fleet_pairs_only_runnable_pools(q):
    res = solve_fleet(q)
    for f in (res.fleet, res.other):
        if f is None:
            continue
        pre = [p for p in f.pools if p.role == "prefill"]
        dec = [p for p in f.pools if p.role == "decode"]
        for p in pre:
            for d in dec:
                assert pairing.why_not(pairing.group(p.offer, p.accelerator, p.engine),
                                       pairing.group(d.offer, d.accelerator, d.engine)) is None
