"""Every command runs from an installed wheel, not the source tree: the wheel ships the catalogue, the
measurements and the fitted factors (`rigopt validate` after `pip install .` once failed on a missing file).

The wheel is built offline (hatchling is a test dependency) and installed without dependencies into a folder of
its own, first on the path of this interpreter (whose packages supply the dependencies); commands run from an
empty folder, and the test checks that the `optimizer` package they import is the installed one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(ROOT)], check=True, timeout=300)
    wheel = next((tmp / "dist").glob("rigopt-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                    str(tmp / "site"), str(wheel)], check=True, timeout=300)
    return tmp


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RIGOPT_DATA_DIR")}
    env["PYTHONPATH"] = str(tmp / "site")
    return env


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "optimizer", *args], cwd=work, env=_env(tmp), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_every_command_runs_from_the_installed_wheel(venv):
    where = subprocess.run([sys.executable, "-c", "import optimizer.catalog.paths as p; print(p.__file__); "
                            "print(p.data_dir('measurements'))"], cwd=venv, env=_env(venv), capture_output=True,
                           text=True, check=True).stdout.split()
    assert all(str(venv / "site") in w and str(ROOT) not in w for w in where), where
    r = run(venv, "cheapest", "qwen3-8b", "-c", "8K", "--tok-s", "20", "--gpus", "rtx-4090", "--top", "1",
            "--out", "plan.json", "--plot", "frontier.png")
    assert r.returncode == 0, r.stderr
    assert (venv / "work" / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    for args in (("estimate", "deepseek-v4-flash", "--gpu", "h200", "--gpus", "8", "--isl", "8K", "--osl", "1K"),
                 ("export", "plan.json", "--out", "exp"),
                 ("catalog", "gpus"), ("schema", "scenario"), ("catalog", "models"), ("catalog", "nodes")):
        r = run(venv, *args)
        assert r.returncode == 0, (args, r.stderr)
    assert (venv / "work" / "exp" / "launch-node0.sh").is_file()
    r = run(venv, "validate", "--json", "--metric", "weights_per_gpu_bytes")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cases"]
    # the prediction intervals ship too (optimizer/estimate/uncertainty.yaml)
    r = run(venv, "estimate", "llama-3.1-8b", "--gpu", "rtx-4090", "-q", "q4_k_m", "-e", "llamacpp", "--json")
    assert r.returncode == 0, r.stderr
    hw = json.loads(r.stdout)["hardware"]
    assert hw["trust"]["decode"]["n_rows"] >= 8 and hw["decode"]["tok_s_per_seq_low"] < hw["decode"]["tok_s_per_seq"]
    (venv / "work" / "s.yaml").write_text("model: qwen3-8b\ncontext: 8K\ngpus: rtx-4090\n")
    r = run(venv, "solve", "s.yaml", "--out", "o", "--jobs", "1")
    assert r.returncode == 0, r.stderr
    # rented H200s come as whole 8-GPU instances: an expert-parallel plan, something for `place` to place
    moe = run(venv, "cheapest", "qwen3-30b-a3b", "-c", "8K", "--gpus", "h200", "--engine", "vllm", "--top", "1",
              "--objective", "hourly", "--out", "moe.json")
    assert moe.returncode == 0, moe.stderr
    r = run(venv, "place", "moe.json", "--loads", "zipf:1.0")
    assert r.returncode == 0, r.stderr
