"""rigopt fleet: money per token and break-even volumes by hand, percentile TTFT against the serving model,
replica counts against a linear scan, CP-SAT against brute force, disaggregated TTFT with the KV transfer,
partly filled servers and cloud shapes."""

from __future__ import annotations

import json
import math
import random

import pytest

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.errors import InputError
from optimizer.fleet import ApiPrice, FleetQuery, solve_fleet
from optimizer.fleet import model as M
from optimizer.fleet.capacity import (
    SLA,
    Config,
    Replica,
    kv_transfer_s,
    min_replicas,
    min_replicas_scan,
    ttft_at,
    wait_quantile,
)
from optimizer.fleet.money import HOURS_PER_MONTH, break_even_tokens, own_monthly_usd, token_cost
from optimizer.fleet.offers import buy_offers, load_shapes, rent_offers
from optimizer.fleet.solve import Search, _check
from optimizer.layout import Parallel


# ------------------------------------------------------------------------------------------------ money
def test_token_cost_by_hand():
    # $10/h, $4/h of it on prefill; 1 req/s of 1000 in / 100 out: 3.6M input and 0.36M output tokens per hour
    tc = token_cost(10.0, 4.0, 1.0, 1000, 100)
    assert tc.usd_per_m_in == pytest.approx(4.0 / 3.6)
    assert tc.usd_per_m_out == pytest.approx(6.0 / 0.36)
    assert tc.usd_per_m_blended == pytest.approx(10.0 / 3.96)


def test_own_monthly_and_break_even_by_hand():
    # $36,000 over 36 months = $1,000/month; 1 kW x 730 h x $0.12 = $87.60
    assert own_monthly_usd(36_000, 1000, 36, 0.12) == pytest.approx(1087.6)
    assert HOURS_PER_MONTH == 730.0
    # renting at $2.50 per M tokens: owning wins above 1087.6 / 2.5e-6 = 435.04M tokens a month
    assert break_even_tokens(1087.6, 2.5e-6) == pytest.approx(435.04e6)
    assert break_even_tokens(1087.6, 0.0) is None


def test_api_price_parse_and_blend():
    p = ApiPrice.parse("in:0.27,out:1.10")
    assert (p.usd_per_m_in, p.usd_per_m_out) == (0.27, 1.10)
    # 8000 in / 1000 out: (8000 x 0.27 + 1000 x 1.10) / 9000 per M = 0.362222 $/M
    assert p.blended_per_token(8000, 1000) * 1e6 == pytest.approx(3260 / 9000)
    for bad in ("in:0.27", "in:x,out:1", "0.27,1.10", "in:-1,out:1"):
        with pytest.raises(InputError):
            ApiPrice.parse(bad)


def test_bad_queries_are_input_errors():
    for kw in ({"rate_rps": -1}, {"ttft_s": 0}, {"percentile": 0.2}, {"objective": "power"}, {"isl": 0}):
        args = dict(model="qwen3-8b", isl=1000, osl=100, rate_rps=1.0, ttft_s=1.0, tpot_s=0.05) | kw
        with pytest.raises(InputError):
            FleetQuery(**args)


# ------------------------------------------------------------------------------------------------ offers
def test_partly_filled_server_capex_is_base_plus_gpus_bought():
    hw = load_hardware()
    node = hw.nodes["hgx-h200-8"]
    offs = {o.key: o for o in buy_offers({"h200-sxm"})}
    four = offs["buy:hgx-h200-8[4/8]"]
    from optimizer.catalog.hardware import purchase_usd

    assert four.gpus == 4 and not four.full_node
    assert four.capex_usd == pytest.approx(node.node_base_usd + 4 * purchase_usd("h200-sxm").usd)
    assert four.power_watts == pytest.approx(node.node_base_watts + 4 * hw.accelerators["h200-sxm"].tdp_watts)
    assert offs["buy:hgx-h200-8[8/8]"].full_node


def test_cloud_shapes_are_sourced_and_expand_per_gpu_billing():
    for s in load_shapes():
        assert s.source and s.as_of and s.usd_per_hour > 0
    rent = rent_offers({"h100-sxm"})
    counts = sorted(o.gpus for o in rent if o.key.startswith("rent:runpod/"))
    assert counts == [1, 2, 4, 8]
    p4 = next(o for o in rent if o.key == "rent:runpod/h100-sxm podx4")
    assert p4.usd_per_hour == pytest.approx(4 * 3.49)
    p5 = next(o for o in rent if o.key == "rent:aws/p5.48xlarge")
    assert p5.usd_per_hour == pytest.approx(55.04) and p5.kv_transport == "rdma"
    assert p5.kv_link_bw == pytest.approx(400e9 / 8)  # EFA 3,200 Gb/s per instance over 8 GPUs


# ------------------------------------------------------------------------------------------------ capacity
@pytest.fixture(scope="module")
def qwen_rep():
    m = resolve_model("qwen3-8b")
    sla = SLA(2000, 200, 0.5, 0.03, 0.9)
    return Replica(m, Config("hgx-h100-8", "h100-sxm", 1, 1, "vllm", "native", None, Parallel(tp=1)), sla)


def test_wait_quantile_p90_matches_serving_model(qwen_rep):
    for rate in (0.5, 3.0, 6.0):  # all below the replica's saturation (about 7.5 req/s)
        ev = qwen_rep.at("aggregated", rate)
        assert ev.serving.stable
        assert ttft_at(ev, 0.9) == pytest.approx(ev.serving.ttft_p90_s, rel=1e-9)
    assert wait_quantile(0.05, 1.0, 0.9) == 0.0  # 95% of arrivals find the prefill idle
    # rho 0.5: mean wait 0.5 / (2 x 0.5) x 1 s = 0.5 s; p99 = 0.5 / 0.5 x ln(0.5 / 0.01) = ln 50
    assert wait_quantile(0.5, 1.0, 0.99) == pytest.approx(math.log(50))


def test_higher_percentile_never_lowers_ttft(qwen_rep):
    ev = qwen_rep.at("aggregated", 6.0)
    assert ttft_at(ev, 0.5) <= ttft_at(ev, 0.9) <= ttft_at(ev, 0.99)


@pytest.mark.parametrize("rate", [0.7, 4.0, 13.0, 41.0])
def test_min_replicas_equals_linear_scan(qwen_rep, rate):
    n = min_replicas(qwen_rep, rate)
    assert n == min_replicas_scan(qwen_rep, rate)
    assert qwen_rep.ok("aggregated", rate / n)
    assert n == 1 or not qwen_rep.ok("aggregated", rate / (n - 1))


@pytest.mark.parametrize(
    "cfg",
    [
        Config("pcie-l40s-8", "l40s", 1, 1, "vllm", "native", None, Parallel(tp=1)),
        Config("hgx-h100-8", "h100-sxm", 2, 1, "sglang", "native", None, Parallel(tp=2)),
    ],
)
def test_min_replicas_equals_linear_scan_other_hardware(cfg):
    rep = Replica(resolve_model("qwen3-8b"), cfg, SLA(1000, 300, 1.0, 0.04, 0.95))
    for rate in (2.0, 25.0):
        assert min_replicas(rep, rate) == min_replicas_scan(rep, rate)


def test_capacity_is_feasible_and_bracketed(qwen_rep):
    for role in ("aggregated", "decode"):
        cap = qwen_rep.capacity(role)
        assert cap > 0 and qwen_rep.ok(role, cap)
        assert not qwen_rep.ok(role, qwen_rep.optimistic(role, steps=9) * 1.0001)
        assert qwen_rep.optimistic(role) >= cap


# ------------------------------------------------------------------------------------------------ CP-SAT
def _random_rows(rng: random.Random) -> list[M.Row]:
    rows = []
    for role in ("aggregated", "prefill", "decode"):
        for _ in range(rng.randint(1, 2)):
            rows.append(
                M.Row(
                    role,
                    rng.randint(300, 2500),
                    rng.randint(5, 60),
                    rng.choice((1, 2, 4, 8)),
                    None if role == "aggregated" else rng.randint(0, 1),
                )
            )
    return rows


@pytest.mark.parametrize("seed", range(25))
def test_cpsat_equals_brute_force(seed):
    rng = random.Random(seed)
    rows = _random_rows(rng)
    rate = rng.randint(500, 4000)
    for disagg in (True, False):
        for types in (1, 2):
            want = M.brute_force(rows, rate, allow_disagg=disagg, max_types=types)
            sol = M.solve(rows, rate, 2, allow_disagg=disagg, max_types=types, time_limit_s=5)
            if want is None:
                assert sol is None
                continue
            assert sol.status == "OPTIMAL" and sol.cost == want
            cap = {
                r: sum(x.cap * c for x, c in zip(rows, sol.counts, strict=True) if x.role == r)
                for r in ("aggregated", "prefill", "decode")
            }
            assert cap["aggregated"] >= sol.rate_agg and min(cap["prefill"], cap["decode"]) >= sol.rate_pd
            assert sol.rate_agg + sol.rate_pd == rate


def test_cpsat_mixes_types_when_cheaper():
    # 1,000 milli-req/s: small (cap 400, $11) x3 = 33; tiny (cap 200, $6) x5 = 30; big (cap 1,000, $30, 8 GPUs)
    # = 30; two small + one tiny = 28: the mixed fleet is cheapest
    rows = [
        M.Row("aggregated", 400, 11, 1, None),
        M.Row("aggregated", 1000, 30, 8, None),
        M.Row("aggregated", 200, 6, 1, None),
    ]
    sol = M.solve(rows, 1000, 1, max_types=2)
    assert sol.cost == 28 and sol.counts == (2, 0, 1)
    one = M.solve(rows, 1000, 1, max_types=1)  # one type: $30 either way; fewer GPUs wins (5 tiny vs 8)
    assert one.cost == 30 and one.counts == (0, 0, 5)


def test_prefill_row_needs_decode_link_as_fast():
    # the prefill row measured for a fast link (class 0) cannot pair with a slow-link (class 1) decode pool
    rows = [M.Row("prefill", 1000, 1, 1, 0), M.Row("decode", 1000, 1, 1, 1), M.Row("decode", 1000, 5, 1, 0)]
    sol = M.solve(rows, 1000, 2, max_types=1)
    assert sol.counts == (1, 0, 1) and sol.cost == 6
    assert M.brute_force(rows, 1000, max_types=1) == 6


# ------------------------------------------------------------------------------------------------ disaggregated TTFT
def test_disaggregated_ttft_includes_kv_transfer_by_hand():
    q = FleetQuery("qwen3-8b", 4000, 200, 4.0, 1.0, 0.04, objective="hourly")
    s = Search(q, resolve_model("qwen3-8b"), SLA(4000, 200, 1.0, 0.04, 0.9))
    cands = s.candidates("hourly")
    pre = next(c for c in cands if c.offer.key == "rent:aws/g6e.xlarge" and c.cfg.engine == "vllm")
    dec = next(c for c in cands if c.offer.key == "rent:lambda/gpu_1x_h100_sxm5" and c.cfg.engine == "vllm")
    # KV of one 4000-token qwen3-8b prompt: 36 layers x 8 KV heads x 128 x 2 (K, V) x 2 B (bf16) = 147,456 B/token
    kvb = pre.rep.kv_bytes()
    assert kvb == pytest.approx(4000 * 36 * 8 * 128 * 2 * 2, rel=0.01)
    link = min(pre.offer.kv_link_bw, dec.offer.kv_link_bw)  # g6e.xlarge: 25 Gb/s TCP = 3.125e9 B/s
    assert link == pytest.approx(3.125e9)
    t = kv_transfer_s(kvb, link, pre.offer.kv_link_latency_s)
    assert t == pytest.approx(kvb / 3.125e9 + pre.offer.kv_link_latency_s)
    ok, ttft, tpot = _check([(pre, "prefill", 2, t), (dec, "decode", 1, None)], 0.0, 4.0, q)
    ev_p, ev_d = pre.rep.at("prefill", 2.0), dec.rep.at("decode", 4.0)
    assert ttft == pytest.approx(ttft_at(ev_p, 0.9) + t + ev_d.tpot_s)
    assert tpot == pytest.approx(ev_d.tpot_s)
    assert t > 0.15  # 590 MB over TCP: the transfer is a real part of the TTFT here


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def flash_4gpu():
    return solve_fleet(
        FleetQuery(
            "deepseek-v4-flash",
            8192,
            1024,
            1.0,
            2.0,
            0.05,
            objective="capex",
            gpus=("h200-sxm",),
            engines=("sglang",),
            quants=("fp8",),
            compare_other=False,
        )
    )


def test_v4_flash_fp8_on_h200_is_four_gpus_of_a_partly_filled_node(flash_4gpu):
    f = flash_4gpu.fleet
    assert f is not None and f.gpus == 4
    assert [p.offer for p in f.pools] == ["buy:hgx-h200-8[4/8]"]
    assert f.ttft_s <= 2.0 and f.tpot_s <= 0.05


def test_fleet_result_is_checked_and_money_consistent():
    res = solve_fleet(
        FleetQuery("qwen3-8b", 2000, 200, 30.0, 0.5, 0.03, gpus=("h100-sxm", "l40s"), api_price=ApiPrice(0.27, 1.10))
    )
    f, m = res.fleet, res.money
    assert f is not None and res.other is not None
    assert f.ttft_s <= 0.5 and f.tpot_s <= 0.03
    served = sum(p.replicas * p.rate_per_replica_rps for p in f.pools if p.role != "decode")
    assert served == pytest.approx(30.0)
    for p in f.pools:
        assert p.rate_per_replica_rps <= p.capacity_rps * (1 + 1e-9)
    assert m.usd_per_hour == pytest.approx(f.usd_per_hour)
    tokens_h = 30.0 * 2200 * 3600
    assert m.usd_per_m_blended == pytest.approx(f.usd_per_hour / tokens_h * 1e6)
    own = own_monthly_usd(res.other.capex_usd, res.other.power_watts)
    assert m.own_monthly_usd == pytest.approx(own)
    assert m.own_beats_rent_above_tokens_per_month == pytest.approx(own / (f.usd_per_hour / tokens_h))
    api = (2000 * 0.27 + 200 * 1.10) / 2200 / 1e6
    assert m.own_beats_api_above_tokens_per_month == pytest.approx(own / api)
    assert m.rent_24x7_beats_api_above_tokens_per_month == pytest.approx(f.usd_per_hour * 730 / api)
    again = solve_fleet(
        FleetQuery("qwen3-8b", 2000, 200, 30.0, 0.5, 0.03, gpus=("h100-sxm", "l40s"), api_price=ApiPrice(0.27, 1.10))
    )
    assert json.dumps(again.fleet.model_dump()) == json.dumps(f.model_dump())  # deterministic


@pytest.mark.slow
def test_more_traffic_never_costs_less():
    costs = [
        solve_fleet(FleetQuery("qwen3-8b", 2000, 200, r, 0.5, 0.03, gpus=("h100-sxm",), compare_other=False)).fleet.cost
        for r in (5.0, 20.0, 60.0)
    ]
    assert costs == sorted(costs)


# ------------------------------------------------------------------------------------------------ CLI
@pytest.mark.slow
def test_cli_fleet_json_and_one_line_errors(tmp_path):
    import subprocess
    import sys

    from typer.testing import CliRunner

    from optimizer.cli import app

    r = CliRunner().invoke(
        app,
        [
            "fleet",
            "qwen3-8b",
            "--isl",
            "2000",
            "--osl",
            "200",
            "--rate",
            "10",
            "--ttft",
            "0.5",
            "--tpot",
            "0.03",
            "--gpus",
            "h100",
            "--percentile",
            "95",
            "--api-price",
            "in:0.27,out:1.10",
            "--json",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["schema_id"] == "rigopt.fleet/1" and d["percentile"] == 0.95
    assert d["fleet"]["ttft_s"] <= 0.5
    assert d["money"]["api_usd_per_m_blended"] == pytest.approx((2000 * 0.27 + 200 * 1.10) / 2200)
    assert (tmp_path / "out" / "k8s.yaml").is_file()
    for bad in (["--api-price", "in:0.27"], ["--percentile", "20"], ["--objective", "power"]):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "optimizer",
                "fleet",
                "qwen3-8b",
                "--isl",
                "2000",
                "--osl",
                "200",
                "--rate",
                "10",
                "--ttft",
                "0.5",
                "--tpot",
                "0.03",
                *bad,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("error:"), p.stderr
