"""The topology links kept on disk between processes (optimizer/disk_cache.py, topology_links.py): identical to the
graph's answers, never stale, ignored when broken, off when asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optimizer.cache import clear_all
from optimizer.catalog.hardware import load_hardware
from optimizer.disk_cache import DiskTable, digest_files
from optimizer.layout import Parallel
from optimizer.topology_links import _TABLE, _plan_links, graph_links, plan_links

ROOT = Path(__file__).resolve().parents[1]
CASES = [("hgx-h100-8", 1, 8, 8, 0), ("hgx-h100-8", 2, 8, 16, 16), ("pcie-l40s-8", 1, 8, 8, 0),
         ("pcie-l40s-8", 1, 1, 1, 8), ("hgx-a100-80-8", 2, 4, 16, 8)]


@pytest.fixture
def fresh_table(tmp_path, monkeypatch):
    monkeypatch.setenv("RIGOPT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("RIGOPT_NO_DISK_CACHE", raising=False)
    _TABLE.clear()
    clear_all()
    yield tmp_path
    _TABLE.clear()
    clear_all()


def _node(key):
    return load_hardware().nodes[key]


def test_links_from_disk_equal_the_graphs(fresh_table):
    cold = {c: _plan_links(_node(c[0]), *c[1:]) for c in CASES}
    _TABLE[0].flush()
    files = list(fresh_table.glob("topology-links-*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())["values"]
    assert len(stored) == len(CASES)
    _TABLE.clear()  # a new process: reads the file, asks no graph
    warm = {c: _plan_links(_node(c[0]), *c[1:]) for c in CASES}
    assert warm == cold
    for c in CASES:
        assert stored[f"{c[0]}|{c[1]}|{c[2]}|{c[3]}|{c[4]}"] == graph_links(*c)


def test_broken_file_is_recomputed(fresh_table):
    want = _plan_links(_node("hgx-h100-8"), 1, 8, 8, 0)
    _TABLE[0].flush()
    f = next(fresh_table.glob("topology-links-*.json"))
    f.write_text('{"digest": "' + _TABLE[0].digest + '", "values": {"hgx-h100-8|1|8|8|0": "garbage"')
    _TABLE.clear()
    assert _plan_links(_node("hgx-h100-8"), 1, 8, 8, 0) == want
    f.write_text(json.dumps({"digest": _TABLE[0].digest, "values": {"hgx-h100-8|1|8|8|0": [1.0]}}))  # wrong shape
    _TABLE.clear()
    assert _plan_links(_node("hgx-h100-8"), 1, 8, 8, 0) == want


def test_digest_follows_the_catalogue(tmp_path):
    a, b = tmp_path / "nodes.yaml", tmp_path / "hosts.yaml"
    a.write_text("x: 1\n")
    b.write_text("y: 2\n")
    d1 = digest_files([a, b])
    a.write_text("x: 2\n")
    assert digest_files([a, b]) != d1
    t1, t2 = DiskTable("t", d1), DiskTable("t", digest_files([a, b]))
    assert t1._path() != t2._path()


def test_off_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RIGOPT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RIGOPT_NO_DISK_CACHE", "1")
    t = DiskTable("t", "0" * 64)
    t.put("k", [1.0])
    t.flush()
    assert list(tmp_path.iterdir()) == []


def test_answer_is_identical_with_and_without_the_disk_cache(tmp_path):
    """A fresh process with a cold disk cache, one with a warm one and one with the cache off print the same JSON."""
    argv = [sys.executable, "-m", "optimizer", "cheapest", "qwen3-30b-a3b", "--context", "32K", "--tok-s", "40",
            "--json"]
    outs = []
    for env_extra in ({}, {}, {"RIGOPT_NO_DISK_CACHE": "1"}):
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "RIGOPT_CACHE_DIR": str(tmp_path), **env_extra}
        r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr[-400:]
        d = json.loads(r.stdout)
        d.pop("solve_s"), d.pop("total_s")
        outs.append(d)
    assert len(list(tmp_path.glob("topology-links-*.json"))) == 1
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.usefixtures("fresh_table")
def test_plan_links_uses_the_table():
    par = Parallel(tp=8, pp=1, dp=1, ep=True)
    a = plan_links(_node("hgx-h100-8"), 1, par)
    assert "hgx-h100-8|1|8|8|0" in _TABLE[0]._load()
    assert a.tp_bw == graph_links("hgx-h100-8", 1, 8, 8, 0)[0]
