"""Scenario files with mixed-hardware inventories: validated by the scenario schema, solved by `rigopt solve` with
the same answer as `rigopt mixed` on the command line, and every unusable field reported at its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from optimizer.cli import app
from optimizer.hetero.query import MixedQuery
from optimizer.scenarios import ScenarioError, load_scenario, scenario_json_schema, solve

TWO_TYPES = "1x rtx-4090, 1x rtx-3090, 64GB ddr5"
TWO_BOXES = "box1: 1x rtx-4090, 128GB ddr5; box2: 1x rtx-4090; net: 10gbe"

FILE = f"""\
name: mixed hardware
defaults:
  model: qwen3-30b-a3b
  context: 32K
questions:
  - name: string-form
    owned: "{TWO_TYPES}"
    tok_s: 20
    quants: q8_0
  - name: structured-form
    tok_s: 20
    quants: [q8_0]
    owned:
      boxes:
        - gpus: {{rtx-4090: 1, rtx-3090: 1}}
          dram: 64GB
          dram_kind: ddr5
  - name: two-boxes
    context: 8K
    quants: q8_0
    owned:
      boxes:
        - {{name: box1, gpus: [rtx-4090], dram: 128GB, dram_kind: ddr5}}
        - {{name: box2, gpus: [rtx-4090]}}
      net: 10gbe
  - name: owned-mapping
    tok_s: 20
    quants: q8_0
    owned: {{accelerators: {{rtx-4090: 1, rtx-3090: 1}}, dram: 64GB}}
"""


def cli_plan(*args: str) -> dict:
    r = CliRunner().invoke(app, ["mixed", *args, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def same(a: dict, b: dict) -> None:
    """Equal plans: everything but the solver's wall time."""
    drop = {"solve_s"}
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}


def test_loader_maps_each_form_onto_the_mixed_planner(tmp_path: Path):
    f = tmp_path / "mixed.yaml"
    f.write_text(FILE)
    qs = {q.name: q.query for q in load_scenario(f).questions}
    assert all(isinstance(q, MixedQuery) for q in qs.values())
    assert qs["string-form"].inventory == TWO_TYPES  # the --owned string itself
    # the structured forms are written as the inventory strings they stand for (64 GB = 64e9 bytes)
    assert qs["structured-form"].inventory == "1x rtx-4090, 1x rtx-3090, 64GB ddr5"
    assert qs["owned-mapping"].inventory == "1x rtx-4090, 1x rtx-3090, 64GB"
    assert qs["two-boxes"].inventory == "box1: 1x rtx-4090, 128GB ddr5; box2: 1x rtx-4090; net: 10gbe"
    q = qs["string-form"]
    assert (q.model, q.context, q.tok_s, q.quants, q.engine, q.buy) == (
        "qwen3-30b-a3b", 32768, 20.0, ("q8_0",), "llamacpp", False)


def test_solve_gives_the_cli_answer(tmp_path: Path):
    f = tmp_path / "mixed.yaml"
    f.write_text(FILE)
    rep = solve([f], jobs=1, out_dir=tmp_path / "out", progress=False, echo=False)
    assert rep.exit_code == 0 and [r.status for r in rep.rows] == ["OPTIMAL"] * 4
    plans = {r.question: json.loads(Path(r.plan_file).read_text()) for r in rep.rows}
    assert all(p["schema_id"] == "rigopt.mixed-plan/1" for p in plans.values())
    cli = cli_plan("qwen3-30b-a3b", "--owned", TWO_TYPES, "--context", "32K", "--tok-s", "20", "--quant", "q8_0")
    same(plans["string-form"], cli)
    # the structured form is the same hardware: the same stages, quantization and speed
    for k in ("stages", "quant", "tok_s", "cost_usd"):
        assert plans["structured-form"][k] == cli[k]
    cli2 = cli_plan("qwen3-30b-a3b", "--owned", TWO_BOXES, "--context", "8K", "--quant", "q8_0")
    same(plans["two-boxes"], cli2)
    assert {s["box"] for s in cli2["stages"]} == {0, 1}
    row = next(r for r in rep.rows if r.question == "two-boxes")
    assert row.n_nodes == 2 and row.devices == len(cli2["stages"]) and row.tok_s == round(cli2["tok_s"], 2)
    result = json.loads((tmp_path / "out" / "mixed" / "two-boxes.result.json").read_text())
    assert result["schema_id"] == "rigopt.mixed-result/1" and result["check"]["ok"]
    assert result["check"]["terms_s"]["network_hops"] > 0
    # a second run answers every question from the cache, with the same plans
    again = solve([f], jobs=1, out_dir=tmp_path / "out", progress=False, echo=False)
    assert (again.cache_hits, again.cache_misses) == (4, 0) and all(r.cached for r in again.rows)
    for r in again.rows:  # string-form and structured-form are one question (one cache entry): equal up to wall time
        same(json.loads(Path(r.plan_file).read_text()), plans[r.question])


@pytest.mark.slow
def test_buy_question_matches_cli_buy(tmp_path: Path):
    f = tmp_path / "buy.yaml"
    f.write_text(
        "model: deepseek-v4-flash\ncontext: 128K\ntok_s: 10\nmin_expert_bits: 4\nbuy: true\nconfidence: 0\n"
        "owned: '2x rtx-3090, 128GB ddr4'\n"
    )
    rep = solve([f], jobs=1, out_dir=tmp_path / "out", progress=False, echo=False)
    plan = json.loads(Path(rep.rows[0].plan_file).read_text())
    cli = cli_plan(
        "deepseek-v4-flash", "--owned", "2x rtx-3090, 128GB ddr4", "--context", "128K", "--tok-s", "10",
        "--min-bits", "4", "--buy", "--confidence", "0",  # experts on the CPU: on the expected figures
    )
    same(plan, cli)
    assert plan["cost_usd"] > 0 and rep.rows[0].capex_usd == plan["cost_usd"]


@pytest.mark.parametrize(
    "body,line,msg",
    [
        ("owned: '1x rtx-4090, 1x rtx-3090'\nisl: 1000\nosl: 100\n", 4, "isl: not supported with a mixed inventory"),
        ("buy: true\n", 3, "buy: buying on top needs `owned`"),
        ("owned: 2x rtx-4090\nisl: 100\nosl: 10\nbuy_types: rtx-5090\n", 4, "isl: not supported with a mixed"),
        ("owned:\n  boxes:\n    - gpus: [rtx-4090, rtx-9999]\n", 3, "unknown accelerator 'rtx-9999'"),
        ("owned:\n  boxes:\n    - gpus: [rtx-4090]\n      dramm: 64GB\n", 6, "did you mean 'dram'"),
        ("owned:\n  boxes:\n    - gpus: [rtx-4090]\n  net: 7gbe\n", 3, "unknown network '7gbe'"),
        ("owned: 'box1: 1x rtx-4090; box2: 1x rtx-3090'\nengines: [vllm, llamacpp]\n", 4, "one engine"),
        ("owned: '1x rtx-4090, 1x rtx-3090'\nobjective: hourly\n", 4, "objective: a mixed inventory is planned"),
    ],
)
def test_bad_mixed_fields_are_reported_at_their_line(tmp_path: Path, body: str, line: int, msg: str):
    f = tmp_path / "q.yaml"
    f.write_text("model: qwen3-30b-a3b\ncontext: 8K\n" + body)
    with pytest.raises(ScenarioError) as e:
        load_scenario(f)
    first = e.value.messages[0]
    assert first.startswith(f"{f}:{line}: ") and msg in first, first


def test_schema_shows_the_inventory_forms():
    s = scenario_json_schema()
    defs = s["$defs"]
    q = defs["QuestionFields"]["properties"]
    assert {"buy", "buy_types", "owned", "max_budget"} <= set(q)
    assert {"$ref": "#/$defs/InventorySpec"} in q["owned"]["anyOf"]
    assert set(defs["InventorySpec"]["properties"]) == {"inventory", "boxes", "net"}
    assert {"gpus", "dram", "dram_kind", "nvme", "nvme_gen", "host", "psu_watts", "name"} == set(
        defs["BoxSpec"]["properties"]
    )
    r = CliRunner().invoke(app, ["schema", "scenario"])
    assert r.exit_code == 0 and json.loads(r.output)["$defs"]["BoxSpec"] == defs["BoxSpec"]


def test_export_of_a_mixed_plan_file_writes_the_cli_scripts(tmp_path: Path):
    """`rigopt export <mixed plan>.json` writes the same per-box scripts as `rigopt mixed --export`, and refuses a
    tampered plan with one error before writing anything."""
    from optimizer.errors import InputError
    from optimizer.export.hetero import export_mixed_plan

    plan = cli_plan("qwen3-30b-a3b", "--owned", TWO_BOXES, "--context", "8K", "--quant", "q8_0")
    f = tmp_path / "p.json"
    f.write_text(json.dumps(plan))
    r = CliRunner().invoke(app, ["export", str(f), "--out", str(tmp_path / "ex")])
    assert r.exit_code == 0, r.output
    r2 = CliRunner().invoke(
        app,
        ["mixed", "qwen3-30b-a3b", "--owned", TWO_BOXES, "--context", "8K", "--quant", "q8_0", "--export",
         str(tmp_path / "run.sh")],
    )
    assert r2.exit_code == 0, r2.output
    assert (tmp_path / "ex" / "launch-box1.sh").read_text() == (tmp_path / "run.sh").read_text()
    assert (tmp_path / "ex" / "launch-box2.sh").read_text() == (tmp_path / "run.box2.sh").read_text()
    assert json.loads((tmp_path / "ex" / "plan.json").read_text()) == plan

    def tampered(edit) -> str:
        bad = json.loads(json.dumps(plan))
        edit(bad)
        with pytest.raises(InputError) as e:
            export_mixed_plan(bad, "bad.json", tmp_path / "never")
        assert not (tmp_path / "never").exists()
        return str(e.value)

    assert "independent check" in tampered(lambda d: d["stages"][0].update(end=d["stages"][0]["end"] + 1))
    assert "control character" in tampered(lambda d: d["stages"][0].update(uid="box2/cuda0\nrm -rf /"))
    assert "not a device of the inventory" in tampered(lambda d: d["stages"][0].update(uid="box1/cuda7"))
    assert "unknown field" in tampered(lambda d: d.update(extra=1))
    assert "not a catalogue key" in tampered(lambda d: d.update(model="Qwen3-30B-A3B"))
    # more memory than the card has: the float check refuses it (q8_0 on one 24 GB card)
    assert "independent check" in tampered(
        lambda d: d.update(stages=[{**d["stages"][0], "start": 0, "end": 48,
                                    "gpu_expert_layers": list(range(48))}])
    )
