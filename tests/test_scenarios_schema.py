"""Scenario files: schema, line-numbered errors, defaults, JSON Schema, shipped examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimizer.scenarios import ScenarioError, expand, load_scenario, scenario_json_schema
from optimizer.scenarios.schema import Question, QuestionFields, Scenario

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "scenarios"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    return e.value.messages


MULTI = """\
name: demo
defaults:
  model: qwen3-8b
  context: 32K
questions:
  - name: first
    tok_s: 20
  - name: second
    tok_s: fast
    concurrency: 2
"""


def test_wrong_type_names_file_line_and_field(tmp_path):
    p = write(tmp_path, "x.yaml", MULTI)
    msgs = errors_of(p)
    assert msgs == [f"{p}:9: questions[1].tok_s: Input should be a valid number, unable to parse string as a number"]


def test_unknown_key_names_file_line_and_field_with_suggestion(tmp_path):
    p = write(tmp_path, "x.yaml", MULTI.replace("    tok_s: fast\n", "    tok_ss: 20\n"))
    [msg] = errors_of(p)
    assert msg.startswith(f"{p}:9: questions[1].tok_ss: unknown key")
    assert "did you mean 'tok_s'" in msg


def test_unknown_top_level_and_defaults_keys(tmp_path):
    p = write(tmp_path, "x.yaml", MULTI.replace("  context: 32K\n", "  context: 32K\n  gpu: h100\n")
              .replace("name: demo\n", "name: demo\nbogus: 1\n"))
    msgs = errors_of(p)
    assert f"{p}:2: bogus: unknown key (allowed: name, description, defaults, questions, sweep)" in msgs
    assert any(m.startswith(f"{p}:6: defaults.gpu: unknown key") and "'gpus'" in m for m in msgs)


def test_every_error_is_reported_one_line_each(tmp_path):
    p = write(tmp_path, "x.yaml", MULTI.replace("    concurrency: 2\n", "    concurrency: 0\n    extra: 1\n"))
    msgs = errors_of(p)
    assert len(msgs) == 3 and all("\n" not in m for m in msgs)
    assert f"{p}:10: questions[1].concurrency: Input should be greater than or equal to 1" in msgs
    assert any(m.startswith(f"{p}:11: questions[1].extra: unknown key") for m in msgs)


def test_catalogue_names_are_checked_at_load_time_with_lines(tmp_path):
    p = write(tmp_path, "x.yaml", "model: qwen3-8bb\ncontext: 8K\ngpus: [rtx-4090, h9000]\n")
    msgs = errors_of(p)
    assert any(m.startswith(f"{p}:3: gpus: unknown accelerator 'h9000'") for m in msgs)
    p2 = write(tmp_path, "y.yaml", "model: qwen3-8bb\ncontext: 8K\n")
    [m] = errors_of(p2)
    assert m.startswith(f"{p2}:1: model: unknown model 'qwen3-8bb'") and "qwen3-8b" in m


def test_inherited_bad_value_points_at_defaults(tmp_path):
    p = write(tmp_path, "x.yaml", MULTI.replace("model: qwen3-8b", "model: no-such-model")
              .replace("    tok_s: fast\n", "    tok_s: 1\n"))
    msgs = errors_of(p)
    assert msgs[0].startswith(f"{p}:3: defaults.model: unknown model")


def test_missing_required_field(tmp_path):
    p = write(tmp_path, "x.yaml", "questions:\n  - name: a\n    model: qwen3-8b\n")
    assert errors_of(p) == [f"{p}:2: questions[0].context: required (set it on the question or in defaults)"]


def test_bad_yaml_duplicate_keys_and_bad_top_level(tmp_path):
    p = write(tmp_path, "x.yaml", "model: qwen3-8b\ncontext: [8K\n")
    [m] = errors_of(p)
    assert m.startswith(f"{p}:") and "invalid YAML" in m
    p = write(tmp_path, "d.yaml", "model: qwen3-8b\ncontext: 8K\ncontext: 16K\n")
    assert errors_of(p) == [f"{p}:3: context: duplicate key"]
    p = write(tmp_path, "l.yaml", "- 1\n- 2\n")
    assert "expected a mapping" in errors_of(p)[0]
    p = write(tmp_path, "e.yaml", "")
    assert errors_of(p) == [f"{p}:1: empty scenario file"]


def test_duplicate_question_names(tmp_path):
    p = write(tmp_path, "x.yaml", MULTI.replace("name: second", "name: first").replace("fast", "1"))
    assert errors_of(p) == [f"{p}:8: questions[1].name: duplicate question name 'first'"]


def test_json_files_get_line_numbers_too(tmp_path):
    p = write(tmp_path, "x.json", json.dumps({"model": "qwen3-8b", "context": "8K", "tok_s": "fast"}, indent=2))
    [m] = errors_of(p)
    assert m.startswith(f"{p}:4: tok_s: Input should be a valid number")


@pytest.mark.parametrize("text,tokens", [("393216", 393216), ("384K", 393216), ("'384K'", 393216), ("1M", 1048576),
                                         ("128k", 131072)])
def test_context_forms(tmp_path, text, tokens):
    p = write(tmp_path, "x.yaml", f"model: deepseek-v4-pro\ncontext: {text}\n")
    [q] = load_scenario(p).questions
    assert q.query.context == tokens


def test_defaults_merge_and_normalization(tmp_path):
    p = write(tmp_path, "x.yaml", """\
defaults:
  model: DeepSeek_V4_Pro
  context: 384K
  gpus: h200, rtx4090
  engines: llama.cpp
questions:
  - objective: hourly
  - name: own
    owned: {accelerators: {rtx4090: 2}, dram: 256GB}
    quants: Q4_K_M
""")
    sc = load_scenario(p)
    a, b = sc.questions
    assert (a.name, b.name) == ("q1", "own")
    assert a.query.model == "deepseek-v4-pro" and a.query.objective == "hourly" and a.query.context == 393216
    assert a.query.gpus == ["h200-sxm", "rtx-4090"] and a.query.engines == ["llamacpp"]
    assert a.query.workers == 1  # batch default: parallelism is across questions
    assert b.query.owned.accelerators == {"rtx-4090": 2} and b.query.owned.dram_bytes == 256 * 10**9
    assert b.query.quants == ["q4_k_m"] and b.query.objective == "capex"


def test_owned_string_form_and_single_question_name(tmp_path):
    p = write(tmp_path, "my box.yaml", "model: qwen3-30b-a3b\ncontext: 32K\nowned: 2x rtx-4090, 256GB ddr5\n")
    [q] = load_scenario(p).questions
    assert q.name == "my-box"
    assert q.query.owned.accelerators == {"rtx-4090": 2} and q.query.owned.dram_bytes == 256 * 10**9


def test_model_paths_are_relative_to_the_scenario_file(tmp_path):
    cfg = ROOT / "models" / "qwen3-8b" / "config.json"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(cfg.read_text())
    p = write(tmp_path, "x.yaml", "model: ./m/config.json\ncontext: 8K\n")
    [q] = load_scenario(p).questions
    assert q.query.model == str((tmp_path / "m" / "config.json").resolve())
    p = write(tmp_path, "y.yaml", "model: ./nope/config.json\ncontext: 8K\n")
    assert errors_of(p)[0].startswith(f"{p}:1: model: ./nope/config.json: no such file")


def test_json_schema_is_published_and_strict():
    s = scenario_json_schema()
    json.dumps(s)
    assert s["$id"] == "rigopt.scenario/1" and len(s["anyOf"]) == 2
    defs = s["$defs"]
    for name in ("Scenario", "Question", "QuestionFields", "OwnedSpec"):
        assert defs[name]["additionalProperties"] is False
    assert set(defs["Question"]["properties"]) == set(Question.model_fields)
    assert set(defs["Scenario"]["properties"]) == set(Scenario.model_fields)
    ctx = defs["QuestionFields"]["properties"]["context"]["anyOf"]
    assert {"integer", "string", "null"} == {t.get("type") for t in ctx}
    assert set(QuestionFields.model_fields) <= set(defs["Question"]["properties"])


def test_shipped_examples_load():
    files = expand([EXAMPLES])
    assert len(files) >= 6
    loaded = {f.stem: load_scenario(f) for f in files}
    from optimizer.hetero.query import MixedQuery
    from optimizer.solver.query import Query
    mixed = [q.query for sc in loaded.values() for q in sc.questions if isinstance(q.query, MixedQuery)]
    assert any(";" in q.inventory and "net:" in q.inventory for q in mixed)  # scenarios/mixed-hardware.yaml
    assert any(q.buy for q in mixed)
    qs = [q.query for sc in loaded.values() for q in sc.questions if isinstance(q.query, Query)]
    assert any(q.model == "deepseek-v4-pro" and q.context == 393216 and q.objective == "capex" for q in qs)
    assert any(q.model == "deepseek-v4-pro" and q.context == 393216 and q.objective == "hourly" for q in qs)
    assert any(q.model == "deepseek-v4-flash" and q.context == 2**20 for q in qs)
    assert any(q.gpus == ["m4-max-128gb"] for q in qs)
    assert any(q.owned is not None and q.owned.accelerators == {"rtx-4090": 2} for q in qs)
    assert any(q.max_budget for q in qs)
    assert any(q.model in ("qwen3-30b-a3b", "deepseek-r1-distill-qwen-32b") and q.gpus == ["rtx-4090"] for q in qs)
