"""`rigopt verify` against a fake OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py) with scripted TTFT,
inter-token delay and a /metrics page: the measured figures match the script within 5%, the verdicts follow the
plan's prediction and interval, the loop stops by itself at its request cap and at its time cap, and --calibrate
writes a profile entry as `rigopt calibrate` does."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from optimizer.cli import app
from optimizer.errors import InputError
from optimizer.solver.query import Query
from optimizer.solver.search import cheapest
from optimizer.verify import render_verify, run_verify
from optimizer.verify.bench import percentile
from optimizer.verify.client import ENGINE_METRICS, parse_endpoint, parse_prometheus
from tests.fake_openai import FakeServer, Script
from tests.hyp import examples

runner = CliRunner()


@pytest.fixture(scope="module")
def plan():
    """A served plan: qwen3-8b on one RTX 4090 with vLLM, 200 in / 16 out, 4 in flight (TPOT ~25 ms)."""
    r = cheapest(Query(model="qwen3-8b", context=216, isl=200, osl=16, concurrency=4, gpus=["rtx-4090"],
                       engines=["vllm"], top=1))
    assert r.plan is not None and r.plan.serving is not None
    return r.plan


@pytest.fixture(scope="module")
def plan_file(plan, tmp_path_factory):
    p = tmp_path_factory.mktemp("verify") / "plan.json"
    p.write_text(plan.model_dump_json(indent=1))
    return p


def _close(x: float | None, want: float, rel: float = 0.05) -> bool:
    return x is not None and abs(x - want) <= rel * want


def test_measured_figures_match_the_script(plan):
    # 3 clients x 3 rounds of 120-token prompts and 12 output tokens; the fake server counts 1.5 tokens per word,
    # so the prompts are right only if the probe's ratio is used. Delays of tens of ms: the client's own overhead
    # (connection, a thread, JSON) is a few ms on a loaded machine and stays well inside 5%
    sc = Script(ttft_s=0.15, itl_s=0.02, tokens_per_word=1.5)
    with FakeServer(sc) as srv:
        r = run_verify(plan, srv.url, isl=120, osl=12, concurrency=3, requests=9, max_time_s=60,
                       metrics_interval_s=0.05)
        sent = srv.state.completions
    assert (r.completed, r.failed, r.cut, r.stopped_by) == (9, 0, 0, "requests")
    assert sent == 9 + 1  # the requests and the one probe
    p = r.percentiles
    # medians and means (the tails of 9 requests are one or two samples, at the mercy of the machine's load)
    assert _close(p["ttft_s"]["p50"], sc.ttft_s)
    assert all(p[k]["p50"] <= p[k]["p90"] <= p[k]["p99"] for k in ("ttft_s", "tpot_s", "itl_s"))
    assert _close(p["tpot_s"]["p50"], sc.itl_s) and _close(p["tpot_s"]["mean"], sc.itl_s)
    assert _close(p["itl_s"]["p50"], sc.itl_s)
    # closed loop: 3 requests in flight, each 12 tokens in TTFT + 11 gaps
    latency = sc.ttft_s + 11 * sc.itl_s
    out = {f.metric: f.measured for f in r.figures}
    assert _close(out["output_tok_s"], 3 * 12 / latency)
    assert _close(out["total_tok_s"], 3 * (12 + 120) / latency)
    assert _close(r.prompt_tokens_mean, 120) and r.output_tokens_mean == 12
    # the server's own gauges: 3 running at the peak, KV usage 0.1 per request in the script
    sm = r.server_metrics
    assert sm is not None and sm.engine == "vllm"
    assert sm.running_peak == 3 and sm.kv_usage_peak == pytest.approx(0.3)
    assert r.prediction_source == "re-evaluated"   # not the plan's own workload


def test_verdicts_against_the_plan(plan):
    sv = plan.serving
    # the server behaves as the plan predicts: every figure inside the interval, the SLAs met
    with FakeServer(Script(ttft_s=sv.ttft_s, itl_s=sv.tpot_s, tokens_per_word=1.0)) as srv:
        r = run_verify(plan, srv.url, requests=4, ttft_sla_s=1.0, tpot_sla_s=2 * sv.tpot_s,
                       metrics_interval_s=0.05)
    assert r.prediction_source == "plan"
    verdicts = {f.metric: f.verdict for f in r.figures}
    assert verdicts["tpot_mean"] == "as planned" and verdicts["ttft_mean"] == "as planned", verdicts
    assert [s.met for s in r.slas] == [True, True]
    assert r.verdict == "as planned (SLAs met)"
    text = _rendered(r)
    assert "SLA TTFT p90 <= 1 s: met" in text and "verdict: as planned (SLAs met)" in text
    # 1.5x slower per token than the top of the plan's interval: the TPOT verdict and an SLA at that top say so
    tpot = next(f for f in r.figures if f.metric == "tpot_mean")
    assert tpot.predicted == pytest.approx(sv.tpot_s, rel=1e-9)  # the plan's expected figure, re-read by verify
    slow = 1.5 * tpot.high
    with FakeServer(Script(ttft_s=sv.ttft_s, itl_s=slow, tokens_per_word=1.0)) as srv:
        r = run_verify(plan, srv.url, requests=4, tpot_sla_s=tpot.high, metrics_interval_s=0.05)
    verdicts = {f.metric: f.verdict for f in r.figures}
    assert verdicts["tpot_mean"] == "slower than planned"
    assert r.slas[0].met is False and r.verdict.startswith("SLA missed: TPOT mean")
    assert "MISSED" in _rendered(r)
    with FakeServer(Script(ttft_s=sv.ttft_s, itl_s=slow, tokens_per_word=1.0)) as srv:
        r = run_verify(plan, srv.url, requests=4, metrics_interval_s=0.05)
    assert r.verdict.startswith("slower than planned (tpot_mean")


def _rendered(r) -> str:
    from rich.console import Console
    c = Console(record=True, width=200)
    render_verify(r, c)
    return c.export_text()


def test_the_loop_stops_at_its_request_cap_and_its_time_cap(plan):
    # request cap: exactly that many requests (plus the probe), closed loop and Poisson arrivals alike
    with FakeServer(Script(ttft_s=0.005, itl_s=0.002)) as srv:
        r = run_verify(plan, srv.url, isl=50, osl=4, concurrency=2, requests=5, metrics_interval_s=0.05)
        assert srv.state.completions == 6 and r.completed == 5
    with FakeServer(Script(ttft_s=0.005, itl_s=0.002)) as srv:
        r = run_verify(plan, srv.url, isl=50, osl=4, rate=40.0, requests=7, metrics_interval_s=0.05)
        assert srv.state.completions == 8 and r.completed == 7 and r.stopped_by == "requests"
    # time cap: each request would stream for 75 s; the run ends at its cap, cutting the requests in flight
    cpu0 = time.process_time()
    with FakeServer(Script(ttft_s=0.01, itl_s=0.5)) as srv:
        r = run_verify(plan, srv.url, isl=50, osl=150, concurrency=2, requests=50, max_time_s=0.6,
                       metrics_interval_s=0.05)
        assert srv.state.completions == 1 + 2     # the probe, then one request per client, none after the cap
    assert (r.completed, r.cut, r.stopped_by) == (0, 2, "time")
    assert r.elapsed_s < 0.6 + 1.5                # the tool's own clock: the cap held (plus thread joins)
    assert r.verdict == "no request completed: nothing measured"
    assert time.process_time() - cpu0 < 5.0


def test_cli_verify_json_calibrate_and_errors(plan, plan_file, tmp_path):
    sv = plan.serving
    prof = tmp_path / "profile.yaml"
    with FakeServer(Script(ttft_s=sv.ttft_s, itl_s=sv.tpot_s * 1.2, tokens_per_word=1.0)) as srv:
        res = runner.invoke(app, ["verify", str(plan_file), "--endpoint", srv.url + "/v1", "--requests", "4",
                                  "--json", "--calibrate", "--profile", str(prof)])
        port = srv.httpd.server_address[1]
        paths = set(srv.state.paths)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["schema_id"] == "rigopt.verify/1" and out["completed"] == 4
    assert paths <= {"/v1/models", "/v1/completions", "/metrics"}   # only the named server's routes
    # the profile: a decode factor from the measured TPOT, for the plan's own system, sourced to this run
    data = yaml.safe_load(prof.read_text())
    entry = next(e for e in data["entries"] if e["model"] == plan.model)
    assert (entry["accelerator"], entry["gpus"], entry["engine"]) == ("rtx-4090", 1, "vllm")
    run = next(x for x in entry["runs"] if x["metric"] == "decode")
    assert run["source"].startswith(f"verify-127.0.0.1_{port}")
    assert run["measured"] == pytest.approx(sv.tpot_s * 1.2 * 1e3, rel=0.05)
    assert out["calibration"]["written"] is True
    # bad input: one error line, exit 2
    from tests.cli_sandbox import run_cli
    for endpoint, msg in (("ftp://example.org", "give http://HOST:PORT"),
                          ("http://127.0.0.1:1", "cannot reach http://127.0.0.1:1")):
        r = run_cli(["verify", str(plan_file), "--endpoint", endpoint])
        assert r.code == 2 and len(r.error_lines) == 1 and r.error_lines[0].startswith("error:"), r.err
        assert msg in r.err and not r.traceback


def test_endpoint_forms():
    assert parse_endpoint("http://10.0.0.5:8000").label == "http://10.0.0.5:8000"
    assert parse_endpoint("http://h:8000/v1/").path("/metrics") == "/metrics"
    assert parse_endpoint("https://h/proxy/v1/completions").label == "https://h:443/proxy"
    for bad in ("10.0.0.5:8000", "http://user:pw@h:1", "http://h:1/?q=1", "http://h:99999", "file:///etc"):
        with pytest.raises(InputError):
            parse_endpoint(bad)


def test_prometheus_gauges_of_both_engines():
    text = ("# HELP sglang:num_running_reqs The number of running requests.\n"
            "# TYPE sglang:num_running_reqs gauge\n"
            'sglang:num_running_reqs{model_name="m",dp="0"} 3.0\n'
            'sglang:num_running_reqs{model_name="m",dp="1"} 5.0\n'
            'sglang:token_usage{model_name="m",dp="0"} 0.25\n'
            'sglang:token_usage{model_name="m",dp="1"} 0.5\n'
            "sglang:num_queue_reqs 2\n"
            "process_cpu_seconds_total 1.5e+01\n")
    v = parse_prometheus(text)
    assert v["sglang:num_running_reqs"] == [3.0, 5.0] and v["process_cpu_seconds_total"] == [15.0]
    assert set(ENGINE_METRICS) == {"vllm", "sglang"}


@settings(max_examples=examples(200))
@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=50), st.sampled_from([50, 90, 99]))
def test_percentile_is_numpys_linear(xs, p):
    assert percentile(xs, p) == pytest.approx(float(np.percentile(xs, p)), rel=1e-9, abs=1e-9)


def test_workload_comes_from_the_plan_or_the_options(plan):
    from optimizer.verify.predict import workload_of
    w = workload_of(plan, None, None, None, None)
    assert (w.isl, w.osl, w.concurrency, w.rate_rps) == (200, 16, 4, None)
    assert workload_of(plan, 100, 10, None, 2.5).rate_rps == 2.5
    with pytest.raises(InputError, match="exceed the plan's context"):
        workload_of(plan, 200, 100, None, None)   # longer than max_model_len: the server would refuse them
    with pytest.raises(InputError, match="not both"):
        workload_of(plan, None, None, 2, 1.0)
    with pytest.raises(InputError, match="give --isl and --osl"):
        workload_of(plan.model_copy(update={"serving": None}), None, None, None, None)
    with pytest.raises(InputError, match="--max-time"):
        run_verify(plan, "http://127.0.0.1:1", max_time_s=0)
