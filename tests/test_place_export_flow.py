"""place -> export in one flow: the placement's flags land in the launch scripts, every file they name is
written, every printed command splits with shlex and uses only flags the pinned engines accept."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from optimizer.cli import app
from tests.test_export import ALLOW_FILES, allow_list

runner = CliRunner()


def _flags_ok(argv: list[str], tool: str) -> list[str]:
    allowed = allow_list(tool)
    return [a for a in argv if a.startswith("-") and a.split("=")[0] not in allowed and not a.lstrip("-").isdigit()]


def _script_argv(path: Path) -> list[str]:
    """The argv of the exec line of a launch script (continuation lines joined), split as a shell would."""
    text = path.read_text()
    body = text[text.index("exec "):]
    return shlex.split(body.replace("\\\n", " "))[1:]


def _run_script(path: Path, cwd: Path) -> list[str]:
    """Run a launch script with a stub `python3` that prints its arguments: the argv after the shell expanded
    it (the version check's `python3 -c` succeeds silently)."""
    bin_dir = cwd / "stub-bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "python3"
    stub.write_text('#!/usr/bin/env bash\n[ "$1" = -c ] && exit 0\nprintf \'%s\\0\' "$@"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(path)], cwd=cwd, env=env, capture_output=True, check=True)
    return r.stdout.decode().split("\0")[:-1]


def test_cheapest_loads_export_writes_the_placement_and_its_file(tmp_path):
    plan = tmp_path / "plan.json"
    # rented: H200s come as whole 8-GPU instances (cloud_shapes.yaml), an expert-parallel plan to place experts on
    r = runner.invoke(app, ["cheapest", "deepseek-v4-flash", "-c", "32K", "--gpus", "h200", "--engine", "sglang",
                            "--min-bits", "0", "--loads", "zipf:1.0", "--top", "1", "--out", str(plan),
                            "--export", "auto", "--objective", "hourly"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "plan"
    assert str(tmp_path) not in (out / "launch-node0.sh").read_text()  # nothing names the machine that ran rigopt
    # the folder is portable: copied elsewhere and started from another directory, the script names the file
    # beside itself (a stub python3 on PATH prints the argv the script execs)
    copied = tmp_path / "server" / "deploy"
    shutil.copytree(out, copied)
    argv = _run_script(copied / "launch-node0.sh", tmp_path)
    assert argv[:2] == ["-m", "sglang.launch_server"]
    loc = Path(argv[argv.index("--init-expert-location") + 1])
    assert loc.is_file() and loc.parent == copied.resolve()
    m = json.loads(loc.read_text())["physical_to_logical_map"]
    assert len(m) == 43 and len({len(row) for row in m}) == 1
    assert int(argv[argv.index("--ep-num-redundant-experts") + 1]) == len(m[0]) - 256
    assert not _flags_ok(argv[argv.index("sglang.launch_server") + 1:], "sglang")


def test_export_placement_file_and_engine_default(tmp_path):
    plan = tmp_path / "plan.json"
    r = runner.invoke(app, ["cheapest", "deepseek-v4-flash", "-c", "32K", "--gpus", "h200", "--engine", "vllm",
                            "--min-bits", "0", "--top", "1", "--out", str(plan), "--objective", "hourly"])
    assert r.exit_code == 0, r.output
    place = tmp_path / "place.json"
    r = runner.invoke(app, ["place", str(plan), "--loads", "zipf:1.0", "--out", str(place)])
    assert r.exit_code == 0, r.output
    # every command line place prints splits with shlex and names only accepted vLLM flags
    line = next(x for x in r.output.splitlines() if x.startswith("export vllm:"))
    words = shlex.split(line.split(":", 1)[1])
    assert not _flags_ok(words, "vllm")
    assert json.loads(words[words.index("--eplb-config") + 1])["num_redundant_experts"] > 0
    r = runner.invoke(app, ["export", str(plan), "--placement", str(place), "--out", str(tmp_path / "x")])
    assert r.exit_code == 0, r.output       # no --engine: the plan's own
    argv = _script_argv(tmp_path / "x" / "launch-node0.sh")
    assert argv[:2] == ["vllm", "serve"] and "--enable-eplb" in argv
    assert not _flags_ok(argv[3:], "vllm")


def test_cheapest_export_other_engine_is_one_error_line(tmp_path):
    r = runner.invoke(app, ["cheapest", "qwen3-8b", "-c", "8K", "--gpus", "rtx-4090", "--engine", "llamacpp",
                            "--top", "1", "--out", str(tmp_path / "p.json"), "--export", "vllm"])
    assert r.exit_code != 0
    assert "use --export auto" in str(r.exception) or "use --export auto" in r.output
    assert set(ALLOW_FILES) >= {"vllm", "sglang", "llamacpp"}


def test_place_and_export_agree_with_zero_redundant_experts(tmp_path):
    # a placement without spare slots is still a placement: `place` prints `--enable-eplb` with
    # num_redundant_experts 0 (vLLM ParallelConfig accepts any non-negative count with EPLB), and
    # `export --placement` writes the same flags, not none
    plan = tmp_path / "plan.json"
    # 30 tok/s needs two H200s of a partly filled server (DP2 x EP2): an expert-parallel plan to place
    assert runner.invoke(app, ["cheapest", "deepseek-v4-flash", "-c", "32K", "--tok-s", "30", "--gpus", "h200",
                               "--engine", "vllm", "--min-bits", "0", "--top", "1", "--out", str(plan)]).exit_code == 0
    place = tmp_path / "place.json"
    r = runner.invoke(app, ["place", str(plan), "--loads", "zipf:1.0", "--redundant-experts", "0",
                            "--out", str(place)])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("export vllm:"))
    printed = shlex.split(line.split(":", 1)[1])
    assert json.loads(printed[printed.index("--eplb-config") + 1])["num_redundant_experts"] == 0
    r = runner.invoke(app, ["export", str(plan), "--placement", str(place), "--out", str(tmp_path / "x")])
    assert r.exit_code == 0, r.output
    argv = _script_argv(tmp_path / "x" / "launch-node0.sh")
    i = argv.index(printed[0])
    assert argv[i:i + len(printed)] == printed
    assert not _flags_ok(argv[3:], "vllm")
