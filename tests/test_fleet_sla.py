"""`rigopt cheapest` in the SLA form (--tpot / --percentile, or --rate with --ttft and --tok-s) and the same
question in a scenario file: both are the fleet solver's answer, and the same one; the old forms are untouched."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from optimizer.cli import app
from optimizer.errors import InputError
from optimizer.fleet import FleetQuery, solve_fleet
from optimizer.fleet.sla import SlaFields, fleet_query, wants_fleet
from optimizer.scenarios import solve as solve_scenarios

# a small, quick question: Qwen3-8B on H100s only, 2,000 in / 200 out at 10 req/s
ARGS = ["qwen3-8b", "--isl", "2000", "--osl", "200", "--rate", "10", "--ttft", "0.5", "--gpus", "h100"]
SCENARIO = """\
questions:
  - name: sla
    model: qwen3-8b
    isl: 2000
    osl: 200
    rate_rps: 10
    ttft_s: 0.5
    tpot_s: 0.03
    percentile: 95
    gpus: h100
"""


def _same(d: dict) -> dict:
    """A fleet result without its timings (the answer, not how long it took)."""
    return {k: v for k, v in d.items() if k not in ("solve_s", "total_s")}


def test_routing_rules():
    base = dict(model="m", isl=1000, osl=100, rate_rps=2.0)
    assert wants_fleet(SlaFields(**base, ttft_s=1.0, tpot_s=0.05))
    assert wants_fleet(SlaFields(**base, percentile=95.0))
    assert wants_fleet(SlaFields(**base, ttft_s=1.0, tok_s=20.0))  # a rate with both SLAs in the older form
    assert not wants_fleet(SlaFields(**base, ttft_s=1.0))  # a rate with one target: one deployment, as before
    assert not wants_fleet(SlaFields(**base, tok_s=20.0))
    assert not wants_fleet(SlaFields(model="m", ttft_s=1.0, tok_s=20.0))  # no rate: the plain question


def test_fleet_query_fields():
    q = fleet_query(SlaFields(model="m", isl=1000, osl=100, rate_rps=2.0, ttft_s=1.0, tok_s=20.0, percentile=95.0,
                              engines=("SGLang",)))
    assert q.tpot_s == pytest.approx(1 / 20.0) and q.percentile == pytest.approx(0.95)
    assert q.engines == ("sglang",) and q.objective == "capex"  # cheapest's default objective
    assert fleet_query(SlaFields(model="m", isl=1, osl=1, rate_rps=1.0, ttft_s=1.0, tpot_s=0.1)).percentile == 0.9
    with pytest.raises(InputError, match="needs --rate"):
        fleet_query(SlaFields(model="m", isl=1000, osl=100, ttft_s=1.0, tpot_s=0.05), {"rate_rps": "--rate"})
    with pytest.raises(InputError, match="disagree"):
        fleet_query(SlaFields(model="m", isl=1, osl=1, rate_rps=1.0, ttft_s=1.0, tpot_s=0.05, tok_s=10.0))
    with pytest.raises(InputError, match="capex .* or hourly"):
        fleet_query(SlaFields(model="m", isl=1, osl=1, rate_rps=1.0, ttft_s=1.0, tpot_s=0.05, objective="power"))
    with pytest.raises(InputError, match="not llamacpp"):
        fleet_query(SlaFields(model="m", isl=1, osl=1, rate_rps=1.0, ttft_s=1.0, tpot_s=0.05, engines=("llamacpp",)))


def test_cli_sla_form_is_the_fleet_and_matches_the_scenario(tmp_path):
    r = CliRunner().invoke(app, ["cheapest", *ARGS, "--tpot", "0.03", "--percentile", "95", "--json"])
    assert r.exit_code == 0, r.output
    cli = json.loads(r.output)
    assert cli["schema_id"] == "rigopt.fleet/1" and cli["fleet"]["ttft_s"] <= 0.5 and cli["fleet"]["tpot_s"] <= 0.03
    direct = solve_fleet(FleetQuery("qwen3-8b", 2000, 200, 10.0, 0.5, 0.03, percentile=0.95, objective="capex",
                                    gpus=("h100",)))
    assert _same(cli) == _same(json.loads(direct.model_dump_json()))
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "fleet.yaml").write_text(SCENARIO)
    rep = solve_scenarios([tmp_path / "sc"], jobs=1, out_dir=tmp_path / "out", progress=False, echo=False)
    assert rep.exit_code == 0 and rep.rows[0].status == "OPTIMAL" and rep.rows[0].devices == cli["fleet"]["gpus"]
    from_file = json.loads((tmp_path / "out" / "fleet" / "sla.fleet.json").read_text())
    assert _same(from_file) == _same(cli)


def test_cli_rate_with_ttft_and_tok_s_is_the_fleet_and_ttft_alone_is_one_plan():
    r = CliRunner().invoke(app, ["cheapest", *ARGS, "--tok-s", "40", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["schema_id"] == "rigopt.fleet/1" and d["tpot_s"] == pytest.approx(1 / 40) and d["percentile"] == 0.9
    r = CliRunner().invoke(app, ["cheapest", *ARGS, "--json"])  # one target: the single-deployment question
    assert r.exit_code in (0, 3), r.output
    assert json.loads(r.output)["schema_id"] == "rigopt.cheapest/1"


@pytest.mark.parametrize(
    "extra,msg",
    [
        (["--tpot", "0.03", "--owned", "2x h100"], "--owned"),
        (["--tpot", "0.03", "--objective", "power"], "capex"),
        (["--tpot", "0.03", "--engine", "llamacpp"], "llamacpp"),
        (["--percentile", "20", "--tpot", "0.03"], "between 50 and 99.9"),
    ],
)
def test_cli_sla_form_bad_input_is_one_error_line(extra, msg):
    r = CliRunner().invoke(app, ["cheapest", *ARGS, *extra], standalone_mode=False)
    assert isinstance(r.exception, InputError) and msg in str(r.exception)


def test_cli_sla_form_needs_the_workload():
    r = CliRunner().invoke(app, ["cheapest", "qwen3-8b", "--tpot", "0.05"], standalone_mode=False)
    assert isinstance(r.exception, InputError)
    assert "needs --isl, --osl, --rate, --ttft" in str(r.exception)


def test_scenario_sla_form_errors_name_file_and_line(tmp_path):
    from optimizer.scenarios.loader import ScenarioError, load_scenario

    p = tmp_path / "bad.yaml"
    p.write_text("model: qwen3-8b\nisl: 2000\nosl: 200\ntpot_s: 0.03\nconcurrency: 4\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert str(p) in e.value.messages[0] and "concurrency" in e.value.messages[0]
    p.write_text("model: qwen3-8b\nisl: 2000\nosl: 200\ntpot_s: 0.03\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(p)
    assert "needs rate_rps, ttft_s" in e.value.messages[0]
