"""Scenario sweeps (`sweep:` grids expanded into named questions), their pivot report, and `--executor ray`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from optimizer.limits import MAX_QUESTIONS
from optimizer.scenarios import solve
from optimizer.scenarios.loader import ScenarioError, load_scenario
from optimizer.scenarios.report import BatchReport, Row, pivot_csv, pivots
from optimizer.scenarios.schema import NAME_RE, sweep_name

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_product_expands_in_order_with_stable_names(tmp_path):
    f = _write(tmp_path, "defaults: {top: 1}\nsweep:\n  model: [qwen3-8b, llama-3.1-8b]\n  context: [8K, 32K]\n"
                         "  tok_s: [20, 60]\n")
    sc = load_scenario(f)
    names = [q.name for q in sc.questions]
    assert names == ["qwen3-8b_8K_20", "qwen3-8b_8K_60", "qwen3-8b_32K_20", "qwen3-8b_32K_60",
                     "llama-3.1-8b_8K_20", "llama-3.1-8b_8K_60", "llama-3.1-8b_32K_20", "llama-3.1-8b_32K_60"]
    q = sc.questions[2]
    assert q.query.context == 32768 and q.query.tok_s == 20 and q.query.top == 1
    assert q.sweep == {"model": "qwen3-8b", "context": "32K", "tok_s": 20}
    assert [q.name for q in load_scenario(f).questions] == names  # stable


def test_zip_and_listed_questions_together(tmp_path):
    f = _write(tmp_path, "defaults: {model: qwen3-8b}\nquestions:\n  - {name: base, context: 4096}\n"
                         "sweep:\n  mode: zip\n  context: [8K, 16K, 32K]\n  gpus: [[rtx-4090], [rtx-3090, rtx-5090], "
                         "[h100-sxm]]\n")
    sc = load_scenario(f)
    assert [q.name for q in sc.questions] == ["base", "8K_rtx-4090", "16K_rtx-3090-rtx-5090-" +
                                              sweep_name({"c": "16K", "g": ["rtx-3090", "rtx-5090"]})[-8:],
                                              "32K_h100-sxm"]
    assert sc.questions[2].query.gpus == ["rtx-3090", "rtx-5090"]


def test_names_are_file_safe_and_unique():
    pts = [{"model": "org/some model@rev"}, {"model": "org/some-model-rev"}, {"tok_s": 1.5}, {"x": "a" * 300}]
    names = [sweep_name(p) for p in pts]
    import re
    assert all(re.fullmatch(NAME_RE, n) for n in names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("sweep, fragment", [
    ("  modle: [a, b]", "did you mean model"),
    ("  mode: random\n  context: [8K]", "not product or zip"),
    ("  mode: zip\n  context: [8K, 16K]\n  tok_s: [1]", "one length"),
    ("  context: []", "non-empty list"),
    ("  context: 8K", "non-empty list"),
    ("  mode: product", "at least one field"),
])
def test_bad_sweep_is_one_line_with_its_line_number(tmp_path, sweep, fragment):
    f = _write(tmp_path, "defaults: {model: qwen3-8b}\nsweep:\n" + sweep + "\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(f)
    msg = e.value.messages[0]
    assert msg.startswith(f"{f}:") and fragment in msg and "\n" not in msg


def test_bad_value_in_a_sweep_names_the_field(tmp_path):
    f = _write(tmp_path, "defaults: {model: qwen3-8b}\nsweep:\n  context: [8K]\n  tok_s: [20, -5]\n")
    with pytest.raises(ScenarioError) as e:
        load_scenario(f)
    assert "sweep" in e.value.messages[0] and "tok_s" in e.value.messages[0]


def test_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    vals = "[" + ", ".join(str(i + 1) for i in range(200)) + "]"
    f = _write(tmp_path, f"defaults: {{model: qwen3-8b, context: 8K}}\nsweep:\n  tok_s: {vals}\n  concurrency: "
                         f"{vals}\n  top: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n")
    t = time.process_time()
    with pytest.raises(ScenarioError) as e:
        load_scenario(f)
    assert time.process_time() - t < 5
    assert f"{MAX_QUESTIONS:,}" in e.value.messages[0] and "400,000" in e.value.messages[0]


def _row(q, sweep, cost, acc, status="OPTIMAL"):
    return Row(scenario="s", file="s.yaml", question=q, status=status, objective="capex", cost=cost,
               accelerator=acc, devices=1, node="n", n_nodes=1, sweep=sweep)


def test_pivot_puts_the_last_field_in_columns():
    rows = [_row("a", {"model": "m1", "tok_s": "20"}, 100.0, "g1"),
            _row("b", {"model": "m1", "tok_s": "60"}, 300.0, "g2"),
            _row("c", {"model": "m2", "tok_s": "20"}, None, "", status="INFEASIBLE"),
            _row("d", {"model": "m2", "tok_s": "60"}, 900.0, "g3")]
    rep = BatchReport(out_dir="o", files=1, rows=rows, cache_hits=0, cache_misses=4, cache_dir=None, jobs=1,
                      wall_s=0.0, errors=[])
    (row_fs, cols, table), = pivots(rep).values()
    assert row_fs == ["model"] and cols == ["tok_s=20", "tok_s=60"]
    assert table == [["m1", "$100 1x g1", "$300 1x g2"], ["m2", "INFEASIBLE", "$900 1x g3"]]
    assert pivot_csv(row_fs, cols, table).splitlines()[0] == "model,tok_s=20,tok_s=60"


def test_solve_writes_the_pivot(tmp_path):
    f = _write(tmp_path, "defaults: {model: qwen3-8b, gpus: [rtx-4090], top: 1, context: 8K}\n"
                         "sweep:\n  tok_s: [30, 60]\n")
    rep = solve([f], jobs=1, out_dir=tmp_path / "out", progress=False, echo=False, plot=True)
    assert rep.solved == 2
    import csv
    table = list(csv.reader((tmp_path / "out" / "s" / "sweep.csv").read_text().splitlines()))
    by_q = {r.question: r for r in rep.rows}
    assert table[0] == ["-", "tok_s=30", "tok_s=60"]
    assert table[1] == ["-", f"${by_q['30'].cost:,.0f} 1x rtx-4090", f"${by_q['60'].cost:,.0f} 1x rtx-4090"]
    assert (tmp_path / "out" / "s" / "sweep.png").stat().st_size > 1000


@pytest.mark.slow
def test_ray_gives_the_local_pools_answers(tmp_path):
    """The must-show: `rigopt solve scenarios/sweep-example.yaml --executor ray` == `--jobs 2` (a local Ray instance
    on 127.0.0.1 with 2 CPUs)."""
    if not os.environ.get("CI"):  # CI installs the ray extra: there a missing Ray fails
        pytest.importorskip("ray", reason="pip install 'rigopt[ray]'")
    ex = ROOT / "scenarios" / "sweep-example.yaml"
    local = solve([ex], jobs=2, out_dir=tmp_path / "local", progress=False, echo=False, use_cache=False)
    ray_rep = solve([ex], jobs=2, out_dir=tmp_path / "ray", progress=False, echo=False, use_cache=False,
                    executor="ray")

    def key(rep):
        return [(r.question, r.status, r.cost, r.node, r.engine, r.quant, r.kv_dtype, r.layout, r.sweep)
                for r in rep.rows]
    assert key(ray_rep) == key(local) and local.questions == 8
    assert (tmp_path / "ray" / "sweep-example" / "sweep.csv").read_text() == \
        (tmp_path / "local" / "sweep-example" / "sweep.csv").read_text()
