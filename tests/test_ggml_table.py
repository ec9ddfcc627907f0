"""The GGML block table (optimizer/arch/formats.py) read from the disk cache equals the gguf package's own, so
formats and KV sizes do not depend on whether gguf was imported; a damaged or partial cache file is recomputed;
and a second fresh process never imports gguf."""

import json
import subprocess
import sys
from pathlib import Path

import gguf

from optimizer.arch import formats

ROOT = Path(__file__).resolve().parents[1]


def _gguf_table():
    return {qt.name: (block, size) for qt, (block, size) in gguf.GGML_QUANT_SIZES.items()}


def test_table_equals_gguf_in_order():
    assert list(formats._GGML_SIZES.items()) == list(_gguf_table().items())
    assert formats.KV_DTYPES["q8_0"] == 34 / 32  # ggml-common.h block_q8_0: fp16 scale + 32 int8


def test_cached_table_round_trips_and_damage_is_recomputed(monkeypatch, tmp_path):
    monkeypatch.setenv("RIGOPT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("RIGOPT_NO_DISK_CACHE", raising=False)
    computed = formats.ggml_quant_sizes()   # empty cache: from gguf (its table object writes at exit)
    assert not list(tmp_path.glob("ggml-quant-sizes-*.json"))
    table = formats._ggml_table()
    assert table is not None
    for k, (b, s) in computed.items():  # what that exit-time write stores
        table.put(k, [float(b), float(s)])
    table.put("", [float(len(computed))])
    table.flush()
    files = list(tmp_path.glob("ggml-quant-sizes-*.json"))
    assert len(files) == 1
    assert list(formats.ggml_quant_sizes().items()) == list(_gguf_table().items())
    body = json.loads(files[0].read_text())
    del body["values"]["Q4_K"]  # a partial table: the count no longer matches
    files[0].write_text(json.dumps(body))
    assert list(formats.ggml_quant_sizes().items()) == list(_gguf_table().items())
    files[0].write_text("{not json")
    assert list(formats.ggml_quant_sizes().items()) == list(_gguf_table().items())


def test_second_fresh_process_does_not_import_gguf(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "RIGOPT_CACHE_DIR": str(tmp_path)}
    code = "import sys, optimizer.arch.formats as f; print('gguf' in sys.modules, f.FORMATS['q4_k'].bits_per_weight)"
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0].split() == ["True", "4.5"]
    assert runs[1].split() == ["False", "4.5"]
