"""Hugging Face ids as MODEL, against a Hub stand-in on 127.0.0.1 (tests/fake_hub.py): no test needs the internet.

HF_ENDPOINT points at the stand-in and HF_HOME at a temporary folder, so huggingface_hub's cache, refs and rigopt's
header manifest live there; every request the stand-in sees is in `hub.log`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from optimizer.catalog import models as catalog_models
from optimizer.catalog.hub import parse_hub_id
from optimizer.catalog.models import resolve_model
from optimizer.errors import CatalogError, ModelFormatError
from optimizer.limits import MAX_CONFIG_BYTES
from tests.fake_hub import FakeHub, Repo, safetensors_bytes

ROOT = Path(__file__).resolve().parents[1]
QWEN3_32B = (ROOT / "models" / "qwen3-32b" / "config.json").read_bytes()
QWEN3_8B = (ROOT / "models" / "qwen3-8b" / "config.json").read_bytes()
ITEM = {"BF16": 2, "F8_E4M3": 1, "F32": 4}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with FakeHub() as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        for var in ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_HUB_CACHE"):
            monkeypatch.delenv(var, raising=False)
        catalog_models._hub_model.cache_clear()
        yield h
        catalog_models._hub_model.cache_clear()


def cli(capsys, monkeypatch, *argv: str) -> tuple[int, str, str]:
    """The real entry point in this process (so the in-process stand-in answers): exit code, stdout, stderr."""
    from optimizer.cli import main
    monkeypatch.setattr(sys, "argv", ["rigopt", *argv])
    catalog_models._hub_model.cache_clear()
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def figures(estimate_json: str) -> dict:
    """The numbers of `rigopt estimate --json` (everything but the model's own name, key and source)."""
    d = json.loads(estimate_json)
    d.pop("model")
    return d


@pytest.mark.parametrize("name, parsed", [
    ("Qwen/Qwen3-32B", ("Qwen/Qwen3-32B", None)),
    ("Qwen/Qwen3-32B@main", ("Qwen/Qwen3-32B", "main")),
    ("org/m@refs/pr/1", ("org/m", "refs/pr/1")),
    ("./org/m", None), ("/abs/path", None), ("a/b/c", None), ("org/config.json", None), ("org/x.gguf", None),
    ("qwen3-32b", None), ("org/..", None), ("org/a--b", None), ("org/m@", None),
])
def test_hub_id_shape(name, parsed):
    assert parse_hub_id(name) == parsed


def test_card_hf_id_wins_without_network(hub, capsys, monkeypatch):
    """models/qwen3-32b/card.yaml says hf_id: Qwen/Qwen3-32B: the shipped card answers and nothing is fetched."""
    assert resolve_model("Qwen/Qwen3-32B").key == "qwen3-32b"
    code, out, _ = cli(capsys, monkeypatch, "estimate", "Qwen/Qwen3-32B", "--json")
    code2, out2, _ = cli(capsys, monkeypatch, "estimate", "qwen3-32b", "--json")
    assert code == code2 == 0
    assert json.loads(out) == json.loads(out2)
    assert hub.log == []


def test_hub_qwen3_32b_matches_shipped(hub, capsys, monkeypatch):
    """`rigopt estimate Qwen/Qwen3-32B@main` (an explicit revision goes to the Hub) with the stand-in serving the
    shipped config.json gives the shipped qwen3-32b's numbers: same config, BF16 (no quantization_config)."""
    hub.repos["Qwen/Qwen3-32B"] = Repo(files={"config.json": QWEN3_32B})
    code, out, err = cli(capsys, monkeypatch, "estimate", "Qwen/Qwen3-32B@main", "--json", "--gpu", "h100-sxm")
    assert code == 0, err
    assert json.loads(out)["model"]["key"] == "Qwen/Qwen3-32B@main"
    code, shipped, _ = cli(capsys, monkeypatch, "estimate", "qwen3-32b", "--json", "--gpu", "h100-sxm")
    assert figures(out) == figures(shipped)
    fetched = {p for m, p, _ in hub.log if m == "GET"}
    assert fetched == {"/api/models/Qwen/Qwen3-32B/revision/main", "/Qwen/Qwen3-32B/resolve/main/config.json"}


def test_hub_id_not_in_catalogue_equals_local_folder(hub, tmp_path, capsys, monkeypatch):
    """A Hub id no card names, served by the stand-in, gives the numbers of the same config.json in a folder."""
    hub.repos["acme/qwen3-8b-copy"] = Repo(files={"config.json": QWEN3_8B})
    local = tmp_path / "qwen3-8b-copy"
    local.mkdir()
    (local / "config.json").write_bytes(QWEN3_8B)
    code, out, err = cli(capsys, monkeypatch, "estimate", "acme/qwen3-8b-copy", "-c", "8K", "--json")
    assert code == 0, err
    code, local_out, _ = cli(capsys, monkeypatch, "estimate", str(local), "-c", "8K", "--json")
    assert figures(out) == figures(local_out)
    # the weights are Qwen3-8B's BF16 parameters: no index, no safetensors, so the parameter-count estimate
    assert json.loads(out)["quants"][0]["weights_bytes"] == json.loads(local_out)["quants"][0]["weights_bytes"]


def _sharded_repo(tmp_path: Path) -> tuple[Repo, Path, int]:
    """Two real (zero-filled) safetensors shards + index, as files in a local folder and in a Hub repo."""
    s1 = {"model.embed_tokens.weight": ("BF16", [16, 32]),            # 16*32*2 = 1024 bytes
          "model.layers.0.self_attn.q_proj.weight": ("BF16", [64, 32])}  # 64*32*2 = 4096
    s2 = {"model.layers.0.mlp.gate_proj.weight": ("F8_E4M3", [32, 64]),  # 32*64*1 = 2048
          "model.norm.weight": ("F32", [32])}                              # 32*4    = 128
    total = 1024 + 4096 + 2048 + 128
    files = {"config.json": QWEN3_8B,
             "model-00001-of-00002.safetensors": safetensors_bytes(s1, ITEM),
             "model-00002-of-00002.safetensors": safetensors_bytes(s2, ITEM)}
    wm = {**{n: "model-00001-of-00002.safetensors" for n in s1}, **{n: "model-00002-of-00002.safetensors" for n in s2}}
    files["model.safetensors.index.json"] = json.dumps({"metadata": {"total_size": total}, "weight_map": wm}).encode()
    folder = tmp_path / "local-ckpt"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return Repo(files=files), folder, total


def test_shard_headers_by_range_request(hub, tmp_path):
    """Exact tensor bytes from the shard headers, fetched by HTTP range request (never a whole shard), equal to
    reading the same shards from a local folder; the hand sum is 1024 + 4096 + 2048 + 128 = 7296 bytes."""
    repo, folder, total = _sharded_repo(tmp_path)
    hub.repos["acme/tiny"] = repo
    m = resolve_model("acme/tiny")
    local = resolve_model(str(folder))
    assert total == 7296
    assert m.weights_file is not None and sum(t.n_bytes for t in m.weights_file.tensors) == total
    assert m.weights_file.bytes_by_class() == local.weights_file.bytes_by_class()
    assert m.weights_file.bytes_by_class() == {"embed": 1024, "attention": 4096, "dense_ffn": 2048, "norms": 128}
    shard_gets = [(p, r) for meth, p, r in hub.log if meth == "GET" and p.endswith(".safetensors")]
    assert len(shard_gets) == 2 and all(r == "bytes=0-100000" for _, r in shard_gets)


def test_offline_reads_the_cache_and_answers_the_same(hub, tmp_path, monkeypatch):
    repo, _, _ = _sharded_repo(tmp_path)
    hub.repos["acme/tiny"] = repo
    online = resolve_model("acme/tiny")
    n = len(hub.log)
    catalog_models._hub_model.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = resolve_model("acme/tiny")
    assert len(hub.log) == n  # nothing asked of the network
    assert offline.weights_file.bytes_by_class() == online.weights_file.bytes_by_class()
    assert offline.spec.content_key == online.spec.content_key


def test_offline_flag_without_cache_is_one_error(hub, capsys, monkeypatch):
    hub.repos["acme/qwen3-8b-copy"] = Repo(files={"config.json": QWEN3_8B})
    code, out, err = cli(capsys, monkeypatch, "estimate", "acme/qwen3-8b-copy", "--offline")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: acme/qwen3-8b-copy: config.json is not in the Hugging Face")
    assert "--offline" in err
    assert hub.log == []
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the flag set it for this process


@pytest.mark.parametrize("case, expect", [
    ("missing", "no such model at"),
    ("gated", "gated repository (HTTP 401)"),
    ("revision", "no such revision"),
    ("malformed", "config.json: not valid JSON"),
    ("oversized", f"larger than the {MAX_CONFIG_BYTES:,}-byte limit"),
    ("no-config", "has no config.json"),
    ("bad-shard-name", "not a file of the repository"),
])
def test_hub_errors_are_one_line_exit_2(hub, capsys, monkeypatch, case, expect):
    hub.repos["acme/gated"] = Repo(files={"config.json": QWEN3_8B}, gated=True)
    hub.repos["acme/malformed"] = Repo(files={"config.json": b'{"hidden_size": 4096,'})
    hub.repos["acme/oversized"] = Repo(files={"config.json": QWEN3_8B}, lie_size={"config.json": MAX_CONFIG_BYTES + 1})
    hub.repos["acme/no-config"] = Repo(files={"model.gguf": b"GGUF"})
    hub.repos["acme/bad-shard-name"] = Repo(files={"config.json": QWEN3_8B, "model.safetensors.index.json":
                                                   json.dumps({"weight_map": {"w": "../../etc/passwd"}}).encode()})
    hub.repos["acme/revision"] = Repo(files={"config.json": QWEN3_8B})
    name = {"missing": "acme/none", "revision": "acme/revision@v9"}.get(case, f"acme/{case}")
    code, out, err = cli(capsys, monkeypatch, "estimate", name)
    assert code == 2, err
    assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and expect in err, err
    assert "Traceback" not in err


def test_no_network_reachable_is_one_error(tmp_path, monkeypatch, capsys):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code, out, err = cli(capsys, monkeypatch, "estimate", "acme/unreachable")
    assert code == 2 and err.startswith("error: acme/unreachable: cannot reach the Hub at http://127.0.0.1:")


def test_local_path_wins_over_hub_id(hub, tmp_path, monkeypatch):
    """An existing folder `org/name` relative to the working directory is read; the Hub is not asked."""
    d = tmp_path / "acme" / "local-model"
    d.mkdir(parents=True)
    (d / "config.json").write_bytes(QWEN3_8B)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("acme/local-model").key == "local-model"
    assert hub.log == []


def test_quantization_config_sets_storage(hub):
    """A Hub checkpoint's quantization_config is its storage: DeepSeek-V3's config.json (fp8, weight_block_size
    [128, 128]) -> the same map as the shipped card (fp8-block128; embed, head, router, norms BF16)."""
    cfg = (ROOT / "models" / "deepseek-v3" / "config.json").read_bytes()
    hub.repos["acme/dsv3-copy"] = Repo(files={"config.json": cfg})
    m = resolve_model("acme/dsv3-copy")
    assert m.storage == resolve_model("deepseek-v3").storage == {
        "default": "fp8-block128", "embed": "bf16", "head": "bf16", "router": "bf16", "norms": "bf16"}


def test_scenario_file_takes_a_hub_id(tmp_path):
    from optimizer.scenarios.loader import _model
    assert _model("acme/some-model@main", tmp_path) == "acme/some-model@main"
    with pytest.raises(ValueError):
        _model("./acme/missing", tmp_path)


def test_catalogue_hf_ids_are_unique():
    ids = [c.hf_id.lower() for c in catalog_models.load_cards().values()]
    assert len(ids) == len(set(ids))


def test_storage_from_hf_matches_cards():
    """gpt-oss-120b's config.json (quant_method mxfp4, modules_to_not_convert attention/router/embed/head) gives
    the card's storage: BF16 with MXFP4 routed experts."""
    from optimizer.arch.hf_quant import storage_from_hf
    cfg = json.loads((ROOT / "models" / "gpt-oss-120b" / "config.json").read_text())
    assert storage_from_hf(cfg) == dict(catalog_models.load_cards()["gpt-oss-120b"].storage)
    with pytest.raises(ModelFormatError, match="bitsandbytes"):
        storage_from_hf({"quantization_config": {"quant_method": "bitsandbytes"}})


@pytest.mark.usefixtures("hub")
def test_errors_are_rigopt_errors():
    with pytest.raises(CatalogError):
        resolve_model("acme/absent")


def test_single_file_checkpoint_header_by_range(hub):
    """No index: the header of model.safetensors alone, by range request. 8 x 32 BF16 = 512 bytes of embedding."""
    st = safetensors_bytes({"model.embed_tokens.weight": ("BF16", [8, 32])}, ITEM)
    hub.repos["acme/one-file"] = Repo(files={"config.json": QWEN3_8B, "model.safetensors": st})
    m = resolve_model("acme/one-file")
    assert m.weights_file is not None and m.weights_file.bytes_by_class() == {"embed": 8 * 32 * 2}
    assert [r for meth, p, r in hub.log if p.endswith("model.safetensors") and meth == "GET"] == ["bytes=0-100000"]


def test_offline_needs_the_manifest_of_an_online_run(hub, monkeypatch):
    """A config.json in the Hub cache without rigopt's header manifest (e.g. downloaded by another tool) is one
    error offline rather than an answer that would differ from the online one."""
    hub.repos["acme/tiny2"] = Repo(files={"config.json": QWEN3_8B})
    resolve_model("acme/tiny2")
    from optimizer.catalog.hub import cache_dir
    (manifest,) = (cache_dir() / "models--acme--tiny2" / ".rigopt").glob("*.json")
    manifest.unlink()
    catalog_models._hub_model.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CatalogError, match="run once without --offline"):
        resolve_model("acme/tiny2")


def test_scenario_file_question_on_a_hub_id(hub, tmp_path, capsys):
    """A scenario question may name a Hub id: it is solved from the fetched config (4 requests: listing, HEAD
    for the size, HEAD + GET by hf_hub_download), and the result cache keys on what the Hub served."""
    from optimizer.scenarios import solve
    hub.repos["acme/q8"] = Repo(files={"config.json": QWEN3_8B})
    sc = tmp_path / "s.yaml"
    sc.write_text("name: hub\nquestions:\n  - name: a\n    model: acme/q8@main\n    context: 8192\n"
                  "    gpus: [rtx-4090]\n    engines: [vllm]\n")
    rep = solve([str(sc)], jobs=1, out_dir=str(tmp_path / "out"), fmt="json", plot=False, use_cache=False)
    capsys.readouterr()
    assert rep.exit_code == 0 and rep.errors == []
    plan = json.loads((tmp_path / "out" / "s" / "a.plan.json").read_text())
    assert plan["model"] == "acme/q8@main" and plan["hardware"]["accelerator"] == "rtx-4090"
    assert len(hub.log) == 4
