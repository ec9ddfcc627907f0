"""`solve`: batch runs over scenario files, continuation past bad files, cache, summaries, plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from optimizer.scenarios import solve
from optimizer.scenarios.cache import query_key
from optimizer.solver.plan import Plan
from optimizer.solver.query import Query

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

GOOD = """\
name: small models on a 4090
defaults:
  gpus: rtx-4090
  context: 8K
questions:
  - name: qwen3-8b
    model: qwen3-8b
    tok_s: 20
  - name: qwen3-30b
    model: qwen3-30b-a3b
    context: 32K
"""
INFEASIBLE = """\
model: llama-3.1-8b
context: 4096
gpus: [rtx-4090]
max_budget: 100
top: 1
"""
BAD = """\
model: qwen3-8b
context: 8K
tok_s: 20
colour: blue
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    scen = root / "scenarios"
    scen.mkdir()
    (scen / "a-good.yaml").write_text(GOOD)
    (scen / "b-bad.yaml").write_text(BAD)
    (scen / "c-infeasible.yaml").write_text(INFEASIBLE)
    out = root / "out"
    first = solve([scen], jobs=2, out_dir=out, fmt="md", plot=True, progress=False, echo=False)
    second = solve([scen], jobs=2, out_dir=out, fmt="md", plot=False, progress=False, echo=False)
    return scen, out, first, second


def test_rows_in_file_and_question_order_and_exit_code(runs):
    _, _, first, _ = runs
    got = [(r.scenario, r.question, r.status) for r in first.rows]
    assert got == [("a-good", "qwen3-8b", "OPTIMAL"), ("a-good", "qwen3-30b", "OPTIMAL"),
                   ("b-bad", "-", "BAD_FILE"), ("c-infeasible", "c-infeasible", "INFEASIBLE")]
    assert (first.files, first.questions, first.solved, first.infeasible, first.bad_files) == (3, 3, 2, 1, 1)
    assert first.exit_code == 1


def test_bad_file_is_reported_with_file_line_field_and_the_run_goes_on(runs):
    scen, _, first, _ = runs
    bad = first.rows[2]
    assert bad.note.startswith(f"{scen / 'b-bad.yaml'}:4: colour: unknown key")
    assert any(e.startswith(f"{scen / 'b-bad.yaml'}:4: colour:") for e in first.errors)
    infeasible = first.rows[3]
    assert "budget" in infeasible.note and infeasible.cost is None and infeasible.plan_file == ""


def test_plan_and_result_files(runs):
    _, out, first, _ = runs
    for r in first.rows[:2]:
        p = out / "a-good" / f"{r.question}.plan.json"
        assert r.plan_file == str(p)
        plan = Plan.model_validate_json(p.read_text())
        assert plan.schema_id == "rigopt.plan/1" and plan.hardware.accelerator == "rtx-4090"
        assert r.cost == plan.costs.objective_value and r.tok_s == pytest.approx(plan.speed.tok_s_per_seq, abs=0.01)
    assert not (out / "c-infeasible" / "c-infeasible.plan.json").exists()
    res = json.loads((out / "c-infeasible" / "c-infeasible.result.json").read_text())
    assert res["status"] == "INFEASIBLE" and res["relaxations"]


def test_summary_files(runs):
    _, out, first, _ = runs
    md = (out / "summary.md").read_text()
    assert "| a-good | qwen3-8b | OPTIMAL |" in md and "BAD_FILE" in md and "INFEASIBLE" in md
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["OPTIMAL", "OPTIMAL", "BAD_FILE", "INFEASIBLE"]
    assert rows[0]["node"] and rows[0]["engine"] and rows[0]["quant"] and float(rows[0]["tok_s"]) >= 20
    assert float(rows[0]["headroom_gib"]) >= 0
    assert json.loads((out / "summary.json").read_text())["exit_code"] == 1


def test_second_run_is_served_from_the_cache(runs):
    _, _, first, second = runs
    assert (first.cache_hits, first.cache_misses) == (0, 3)
    assert (second.cache_hits, second.cache_misses) == (3, 0)
    assert [r.cached for r in second.rows] == [True, True, False, True]  # the bad file is never cached
    strip = {"cached", "seconds", "plots"}
    assert [r.model_dump(exclude=strip) for r in second.rows] == [r.model_dump(exclude=strip) for r in first.rows]


def test_changed_question_is_solved_again_and_no_cache_disables(runs, tmp_path):
    scen, out, _, _ = runs
    (tmp_path / "a-good.yaml").write_text(GOOD.replace("tok_s: 20", "tok_s: 25"))
    rep = solve([tmp_path / "a-good.yaml"], jobs=1, out_dir=tmp_path / "o", cache_dir=out / ".cache",
                progress=False, echo=False)
    assert (rep.cache_hits, rep.cache_misses) == (1, 1) and [r.cached for r in rep.rows] == [False, True]
    rep = solve([scen / "a-good.yaml"], jobs=1, out_dir=out, use_cache=False, progress=False, echo=False)
    assert (rep.cache_hits, rep.cache_misses, rep.cache_dir) == (0, 2, None) and rep.exit_code == 0


def test_cache_key_covers_query_catalogue_and_version(monkeypatch):
    q = Query(model="qwen3-8b", context=8192)
    k = query_key(q, "cat-a")
    assert k == query_key(Query(model="qwen3-8b", context=8192), "cat-a")
    assert k != query_key(q, "cat-b")
    assert k != query_key(q.model_copy(update={"tok_s": 1.0}), "cat-a")
    import optimizer.scenarios.cache as cache
    monkeypatch.setattr(cache, "__version__", "99.0")
    assert k != query_key(q, "cat-a")


def test_plots_are_valid_pngs(runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    _, out, first, _ = runs
    import json as _json
    for r in first.rows[:2]:
        plan = _json.loads((out / "a-good" / f"{r.question}.plan.json").read_text())
        offload = bool(plan["offload"]["offloaded_layers"] or plan["offload"]["nvme_layers"])
        want = [f"{r.question}.pareto.png", f"{r.question}.memory.png"]
        want += [f"{r.question}.layers.png"] if offload else []
        assert [Path(p).name for p in r.plots] == want
    assert [Path(p).name for p in first.rows[3].plots] == ["c-infeasible.pareto.png"]  # no plan: no memory bars
    for p in (out / "a-good").glob("*.png"):
        assert p.read_bytes()[:8] == PNG_SIGNATURE
        img = plt.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_all_good_exit_code_0_and_formats(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("model: qwen3-8b\ncontext: 8K\ngpus: rtx-4090\n")
    rep = solve([tmp_path / "s.yaml"], jobs=1, out_dir=tmp_path / "o", fmt="csv", progress=False)
    assert rep.exit_code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("scenario,question,status")
    rep = solve([tmp_path / "s.yaml"], jobs=1, out_dir=tmp_path / "o", fmt="json", progress=False)
    assert json.loads(capsys.readouterr().out)["cache_hits"] == 1


def test_missing_path_is_a_bad_file_and_empty_input_is_an_error(tmp_path):
    from optimizer.errors import InputError
    rep = solve([tmp_path / "nope.yaml"], jobs=1, out_dir=tmp_path / "o", progress=False, echo=False)
    assert rep.rows[0].status == "BAD_FILE" and "no such file" in rep.rows[0].note and rep.exit_code == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        solve([tmp_path / "empty"], out_dir=tmp_path / "o", progress=False, echo=False)
