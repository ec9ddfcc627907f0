"""CLI behaviour through typer's runner and through the real entry point (exit codes, one-line errors)."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from optimizer.cli import app
from tests.gguf_files import write_llama_gguf

runner = CliRunner()


def run_main(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optimizer", *args], capture_output=True, text=True, timeout=120)


def test_estimate_json_schema():
    r = runner.invoke(app, ["estimate", "deepseek-v4-pro", "--context", "384K", "--json", "-q", "native"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["schema_id"] == "rigopt.estimate/1"
    assert d["context"] == 393216
    assert d["model"]["key"] == "deepseek-v4-pro"
    row = d["quants"][0]
    assert row["quant"] == "native"
    # the engine holds the checkpoint less its MTP layer (loaded only with --spec mtp)
    assert row["mtp_bytes"] > 0
    assert abs((row["weights_bytes"] + row["mtp_bytes"]) / 1e9 - 864.70) / 864.70 < 0.01
    # V4-Pro KV at 384K in vLLM layout ≈ 2.04 GiB per sequence (hand calculation, see test_kv.py), not tens of GB
    assert 2.0 < d["kv"]["per_seq_bytes"] / 2**30 < 2.1
    # 8x H200 (8 x 141 GB) holds 865 GB of weights, so 8x h200 (or fewer of a bigger part) must be listed
    counts = {o["accelerator"]: o["count"] for o in row["fits_multi"]}
    assert counts["h200-sxm"] == 8
    assert "rtx-5090" not in row["fits_single"]


def test_estimate_with_hardware_json():
    r = runner.invoke(app, ["estimate", "deepseek-v4-pro", "-c", "1M", "--gpu", "h200", "--gpus", "8", "--json"])
    assert r.exit_code == 0, r.output
    h = json.loads(r.output)["hardware"]
    assert h["count"] == 8 and h["accelerator"] == "h200-sxm"
    assert h["per_device"]["fits"] is True
    assert h["max_context_tokens"] == 1048576
    assert 0 < h["decode"]["tok_s_per_seq"] <= h["decode"]["tok_s_bound_per_seq"]


def test_estimate_table_for_people():
    r = runner.invoke(app, ["estimate", "llama-3.1-8b", "-c", "8192", "--gpu", "rtx-4090"])
    assert r.exit_code == 0, r.output
    assert "fits" in r.output and "tok/s" in r.output


def test_catalog_listings():
    for what in ("models", "gpus", "nodes"):
        r = runner.invoke(app, ["catalog", what, "--json"])
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        rows = d[what]
        assert len(rows) > 10
        assert all(row.get("source") or row.get("config_source") for row in rows)


@pytest.mark.parametrize("args,needle", [
    (["estimate", "deepseek-v4-prp"], "did you mean: deepseek-v4-pro"),
    (["estimate", "deepseek-v4-pro", "--context", "-5"], "token count"),
    (["estimate", "deepseek-v4-pro", "--context", "10G"], "token count"),
    (["estimate", "deepseek-v4-pro", "-q", "q7_z"], "unknown quantization"),
    (["estimate", "deepseek-v4-pro", "--gpu", "h10"], "did you mean"),
    (["estimate", "deepseek-v4-pro", "--engine", "tensorrt"], "unknown engine"),
    (["estimate", "deepseek-v4-pro", "--concurrency", "0"], "concurrency"),
    (["estimate", "deepseek-v4-pro", "--concurrency", "99999999999"], "concurrency"),
    (["estimate", "deepseek-v4-pro", "--gpu", "h100", "--gpus", "10000000"], "--gpus"),
    (["estimate", "llama-3.1-8b", "--gpu", "rtx-4090", "--confidence", "1.5"], "--confidence"),
    (["cheapest", "llama-3.1-8b", "--confidence", "-0.1"], "--confidence"),
    (["bogus-command"], "No such command"),
])
def test_bad_input_one_line_exit_2(args, needle):
    p = run_main(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = p.stderr.strip()
    assert needle in err
    assert "Traceback" not in err and len(err.splitlines()) <= 2


def test_malformed_config_is_one_line(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    p = run_main("estimate", str(bad))
    assert p.returncode == 2 and "not valid JSON" in p.stderr and "Traceback" not in p.stderr
    missing = tmp_path / "m2" / "config.json"
    missing.parent.mkdir()
    missing.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    p = run_main("estimate", str(missing))
    assert p.returncode == 2 and "num_hidden_layers" in p.stderr
    unknown = tmp_path / "m3" / "config.json"
    unknown.parent.mkdir()
    unknown.write_text(json.dumps({"model_type": "mamba_x"}))
    p = run_main("estimate", str(unknown))
    assert p.returncode == 2 and "unsupported model_type 'mamba_x'" in p.stderr


def test_config_path_and_gguf_file(tmp_path):
    cfg = tmp_path / "tiny" / "config.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
                               "vocab_size": 100, "max_position_embeddings": 512}))
    r = runner.invoke(app, ["estimate", str(cfg), "-c", "512", "--json", "-q", "bf16"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["kv"]["growth_bytes_per_token"] == 2 * 2 * 16 * 2 * 2

    path = tmp_path / "tiny.gguf"
    write_llama_gguf(path, blocks=1, d=64, kv_dim=32, ff=128, vocab=100, ctx=512, output=False)
    r = runner.invoke(app, ["estimate", str(path), "-c", "256", "--json", "-q", "native"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    f16 = (100 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 3 * 128 * 64) * 2
    f32 = 3 * 64 * 4
    assert d["quants"][0]["weights_bytes"] == f16 + f32  # exact tensor bytes from the header


@pytest.mark.parametrize("what,key", [("scenario", "$id"), ("plan", "properties"), ("cheapest", "properties"),
                                      ("estimate", "properties")])
def test_schema_commands_print_json_schema(what, key):
    r = runner.invoke(app, ["schema", what])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert key in d
