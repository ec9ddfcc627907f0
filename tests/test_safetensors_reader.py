"""Safetensors reader: hand-written shard headers (no torch/safetensors needed) plus config.json and index."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from optimizer.arch.from_safetensors import hf_tensor_class, read_safetensors_dir
from optimizer.errors import ModelFormatError

D, FF, VOCAB = 64, 128, 100
ITEM = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "I64": 8}

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": D, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": FF, "vocab_size": VOCAB,
         "max_position_embeddings": 4096}


def _shard(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> dict[str, int]:
    """Write a safetensors file: 8-byte header length, JSON header, zero bytes. Returns name -> bytes."""
    header: dict = {"__metadata__": {"format": "pt"}}
    off, sizes = 0, {}
    for name, (dtype, shape) in tensors.items():
        n = ITEM[dtype]
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        sizes[name] = n
        off += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(off))
    return sizes


def _layer(i: int, dtype: str = "BF16") -> dict[str, tuple[str, list[int]]]:
    p = f"model.layers.{i}."
    return {
        p + "input_layernorm.weight": ("BF16", [D]),
        p + "self_attn.q_proj.weight": (dtype, [D, D]),
        p + "self_attn.q_proj.weight_scale_inv": ("F32", [1, 1]),
        p + "self_attn.k_proj.weight": (dtype, [32, D]),
        p + "self_attn.v_proj.weight": (dtype, [32, D]),
        p + "self_attn.o_proj.weight": (dtype, [D, D]),
        p + "post_attention_layernorm.weight": ("BF16", [D]),
        p + "mlp.gate_proj.weight": (dtype, [FF, D]),
        p + "mlp.up_proj.weight": (dtype, [FF, D]),
        p + "mlp.down_proj.weight": (dtype, [D, FF]),
        p + "mlp.down_proj.weight_scale": ("F32", [1]),
    }


def _llama_dir(tmp_path: Path, extra_layer: bool = False) -> tuple[Path, dict[str, int]]:
    d = tmp_path / "tiny-llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLAMA))
    s1 = {"model.embed_tokens.weight": ("BF16", [VOCAB, D]), **_layer(0)}
    s2 = {**_layer(1, "F8_E4M3"), "model.norm.weight": ("BF16", [D]), "lm_head.weight": ("BF16", [VOCAB, D])}
    if extra_layer:  # an MTP layer beyond num_hidden_layers, DeepSeek style
        s2["model.layers.2.eh_proj.weight"] = ("BF16", [D, 2 * D])
        s2["model.layers.2.enorm.weight"] = ("BF16", [D])
    files = {"model-00001-of-00002.safetensors": s1, "model-00002-of-00002.safetensors": s2}
    sizes: dict[str, int] = {}
    for fname, tensors in files.items():
        sizes.update(_shard(d / fname, tensors))
    index = {"metadata": {"total_size": sum(sizes.values())},
             "weight_map": {n: f for f, ts in files.items() for n in ts}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d, sizes


def test_sharded_llama(tmp_path):
    d, sizes = _llama_dir(tmp_path)
    wf = read_safetensors_dir(d)
    assert wf.format == "safetensors" and wf.path == str(d)
    assert wf.file_bytes == sum(p.stat().st_size for p in d.glob("*.safetensors"))
    got = {t.name: t for t in wf.tensors}
    assert {n: t.n_bytes for n, t in got.items()} == sizes
    assert got["model.layers.1.self_attn.q_proj.weight"].dtype == "F8_E4M3"
    assert got["model.layers.1.self_attn.q_proj.weight"].n_elements == D * D
    assert got["model.embed_tokens.weight"].tensor_class == "embed" and got["model.embed_tokens.weight"].layer is None
    assert got["lm_head.weight"].tensor_class == "head"
    assert got["model.norm.weight"].tensor_class == "norms"
    assert got["model.layers.0.input_layernorm.weight"].tensor_class == "norms"
    assert got["model.layers.1.mlp.up_proj.weight"].tensor_class == "dense_ffn"
    assert got["model.layers.1.mlp.up_proj.weight"].layer == 1
    # scale tensors take the class of their weight
    assert got["model.layers.0.self_attn.q_proj.weight_scale_inv"].tensor_class == "attention"
    assert got["model.layers.0.mlp.down_proj.weight_scale"].tensor_class == "dense_ffn"
    assert wf.bytes_by_class()["dense_ffn"] == 3 * FF * D * (2 + 1) + 2 * 4
    assert wf.dtypes_by_class()["attention"]["F8_E4M3"] == (2 * D * D + 2 * 32 * D)
    assert wf.bytes_by_layer_class()[(None, "embed")] == VOCAB * D * 2
    s = wf.spec
    assert len(s.layers) == 2 and s.hidden_size == D and s.source == str(d)
    # parameter count of the spec equals the element count of the weights (scales excluded)
    assert s.total_params() == sum(t.n_elements for t in wf.tensors if "scale" not in t.name)
    assert read_safetensors_dir(d / "config.json").file_bytes == wf.file_bytes  # a file in the folder works too


def test_mtp_layer(tmp_path):
    d, _ = _llama_dir(tmp_path, extra_layer=True)
    wf = read_safetensors_dir(d)
    got = {t.name: t for t in wf.tensors}
    t = got["model.layers.2.eh_proj.weight"]
    assert t.layer == 2 and t.layer >= len(wf.spec.main_layers) and t.tensor_class == "attention"
    assert got["model.layers.2.enorm.weight"].tensor_class == "norms"


def test_index_only_fallback(tmp_path):
    d, sizes = _llama_dir(tmp_path)
    for p in d.glob("*.safetensors"):
        p.unlink()
    wf = read_safetensors_dir(d)
    assert wf.tensors == () and wf.file_bytes == sum(sizes.values()) and wf.bytes_by_class() == {}
    assert len(wf.spec.layers) == 2


def test_single_file_and_missing_shard(tmp_path):
    d, _ = _llama_dir(tmp_path)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="missing safetensors shard.*model-00002-of-00002.safetensors"):
        read_safetensors_dir(d)
    (d / "model.safetensors.index.json").unlink()  # no index: read whatever *.safetensors is there
    wf = read_safetensors_dir(d)
    assert {t.layer for t in wf.tensors} == {None, 0}


@pytest.mark.parametrize("payload,match", [
    (b"\x01\x02", "truncated"),
    (struct.pack("<Q", 10**9) + b"{}", "header length"),
    (struct.pack("<Q", 5) + b"{nope", "not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    (struct.pack("<Q", 30) + b'{"w": {"dtype": "F32"}}       ', "no valid dtype/shape/data_offsets"),
    (struct.pack("<Q", 56) + b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', "truncated"),
])
def test_malformed_header(tmp_path, payload, match):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLAMA))
    (d / "model.safetensors").write_bytes(payload)
    with pytest.raises(ModelFormatError, match=r"model\.safetensors: .*" + match):
        read_safetensors_dir(d)


def test_bad_config_and_empty_folder(tmp_path):
    d = tmp_path / "e"
    d.mkdir()
    with pytest.raises(ModelFormatError, match="no config.json"):
        read_safetensors_dir(d)
    (d / "config.json").write_text("{bad")
    with pytest.raises(ModelFormatError, match=r"config\.json: not valid JSON"):
        read_safetensors_dir(d)
    (d / "config.json").write_text(json.dumps(LLAMA))
    with pytest.raises(ModelFormatError, match="no safetensors shards"):
        read_safetensors_dir(d)


@pytest.mark.parametrize("name,cls", [
    ("model.layers.3.mlp.experts.5.down_proj.weight_scale_inv", "routed_experts"),
    ("model.layers.3.mlp.shared_experts.up_proj.weight", "shared_experts"),
    ("model.layers.3.mlp.gate.weight", "router"),
    ("model.layers.3.mlp.gate.e_score_correction_bias", "router"),
    ("model.layers.3.mlp.router.weight", "router"),
    ("model.layers.3.mlp.experts.gate_up_proj_blocks", "routed_experts"),
    ("model.layers.3.self_attn.kv_a_proj_with_mqa.weight", "attention"),
    ("model.layers.3.self_attn.sinks", "norms"),
    ("model.layers.3.self_attn.indexer.wk.weight", "indexer"),
    ("layers.3.attn.compressor.wkv.weight", "compressor"),
    ("layers.3.attn.wq_a.scale", "attention"),
    ("layers.3.ffn.experts.7.w1.scale", "routed_experts"),
    ("layers.3.ffn.gate.tid2eid", "lookup"),
    ("layers.3.hc_attn_fn", "norms"),
    ("embed.weight", "embed"), ("head.weight", "head"),
    ("model.layers.61.shared_head.head.weight", "head"),
    ("model.vision_tower.blocks.0.attn.qkv.weight", "vision"),
    ("visual.merger.mlp.0.weight", "vision"),
])
def test_hf_tensor_class(name, cls):
    assert hf_tensor_class(name, 1 if name.endswith(("sinks", "_fn")) else 2) == cls
