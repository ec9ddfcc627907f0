"""GGUF reader: tiny GGUF files written with gguf.GGUFWriter, read back and checked byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from optimizer.arch.from_gguf import gguf_tensor_class, read_gguf
from optimizer.errors import ModelFormatError

Q = gguf.GGMLQuantizationType
D, FF, VOCAB, HEADS, KV = 64, 256, 100, 4, 2  # FF = 256 so K-quant rows (256 per block) fit


def _expected_bytes(n_elements: int, qtype: Q) -> int:
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    assert n_elements % block == 0
    return n_elements // block * type_size


def _add(w: gguf.GGUFWriter, written: dict, name: str, shape: tuple[int, ...], qtype: Q) -> None:
    """Add a tensor of numpy shape `shape` (rows last dim = ne0) stored as `qtype`; record what was written."""
    n = int(np.prod(shape))
    rng = np.random.default_rng(len(written))
    data = rng.standard_normal(shape, dtype=np.float32)
    if qtype == Q.F32:
        w.add_tensor(name, data)
    elif qtype == Q.F16:
        w.add_tensor(name, data.astype(np.float16))
    elif qtype in (Q.Q8_0, Q.Q4_0):
        w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    else:  # no numpy quantizer (Q4_K, Q6_K, IQ...): raw bytes of the exact size
        nbytes = _expected_bytes(n, qtype)
        raw = np.zeros((*shape[:-1], nbytes // int(np.prod(shape[:-1]))), dtype=np.uint8)
        w.add_tensor(name, raw, raw_dtype=qtype)
    written[name] = (qtype.name, n, _expected_bytes(n, qtype))


def _finish(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _llama(path: Path, arch: str = "llama", split_max_tensors: int = 0) -> dict:
    w = gguf.GGUFWriter(path, arch, split_max_tensors=split_max_tensors)
    w.add_name("tiny-llama")
    w.add_block_count(2)
    w.add_embedding_length(D)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_feed_forward_length(FF)
    w.add_context_length(4096)
    w.add_rope_dimension_count(D // HEADS)
    w.add_token_list([f"t{i}" for i in range(VOCAB)])
    written: dict = {}
    _add(w, written, "token_embd.weight", (VOCAB, D), Q.Q8_0)
    for i in range(2):
        p = f"blk.{i}."
        _add(w, written, p + "attn_norm.weight", (D,), Q.F32)
        _add(w, written, p + "attn_q.weight", (D, D), Q.Q4_0)
        _add(w, written, p + "attn_k.weight", (KV * D // HEADS, D), Q.F16)
        _add(w, written, p + "attn_v.weight", (KV * D // HEADS, D), Q.Q8_0)
        _add(w, written, p + "attn_output.weight", (D, D), Q.IQ4_NL if i == 0 else Q.Q5_1)
        _add(w, written, p + "ffn_norm.weight", (D,), Q.F32)
        _add(w, written, p + "ffn_gate.weight", (FF, D), Q.Q8_0)
        _add(w, written, p + "ffn_up.weight", (FF, D), Q.F16)
        _add(w, written, p + "ffn_down.weight", (D, FF), Q.Q4_K if i == 0 else Q.Q6_K)
    _add(w, written, "output_norm.weight", (D,), Q.F32)
    _add(w, written, "output.weight", (VOCAB, D), Q.Q8_0)
    _finish(w)
    return written


def test_llama_tensors_bytes_and_spec(tmp_path):
    path = tmp_path / "tiny.gguf"
    written = _llama(path)
    wf = read_gguf(path)
    assert wf.format == "gguf"
    assert wf.file_bytes == os.path.getsize(path)
    got = {t.name: t for t in wf.tensors}
    assert set(got) == set(written)
    for name, (dtype, n, nbytes) in written.items():
        assert (got[name].dtype, got[name].n_elements, got[name].n_bytes) == (dtype, n, nbytes), name
    tensor_bytes = sum(t.n_bytes for t in wf.tensors)
    assert tensor_bytes < wf.file_bytes
    reader = gguf.GGUFReader(path)
    # what is not tensor bytes is the header (metadata + tensor table) plus alignment padding
    assert wf.file_bytes - tensor_bytes >= reader.data_offset
    assert wf.file_bytes - tensor_bytes - reader.data_offset < reader.alignment * len(written)

    s = wf.spec
    assert (len(s.layers), s.hidden_size, s.vocab_size, s.max_context) == (2, D, VOCAB, 4096)
    assert s.num_attention_heads == HEADS and s.layers[0].kv[0].kv_heads == KV
    assert s.name == "tiny-llama" and s.source == str(path) and s.family == "gqa"
    # the spec's parameter count matches the tensor table (no biases in llama)
    assert s.total_params() == sum(t.n_elements for t in wf.tensors)

    assert got["token_embd.weight"].tensor_class == "embed" and got["token_embd.weight"].layer is None
    assert got["output.weight"].tensor_class == "head"
    assert got["output_norm.weight"].tensor_class == "norms"
    assert got["blk.1.attn_k.weight"].tensor_class == "attention" and got["blk.1.attn_k.weight"].layer == 1
    assert got["blk.0.ffn_up.weight"].tensor_class == "dense_ffn"
    assert got["blk.0.attn_norm.weight"].tensor_class == "norms"
    by_class = wf.bytes_by_class()
    assert sum(by_class.values()) == tensor_bytes
    assert by_class["embed"] == written["token_embd.weight"][2]
    assert wf.bytes_by_layer_class()[(1, "dense_ffn")] == sum(
        written[f"blk.1.ffn_{x}.weight"][2] for x in ("gate", "up", "down"))
    assert wf.dtypes_by_class()["dense_ffn"] == {"Q8_0": 2 * _expected_bytes(FF * D, Q.Q8_0),
                                                 "F16": 2 * FF * D * 2, "Q4_K": _expected_bytes(FF * D, Q.Q4_K),
                                                 "Q6_K": _expected_bytes(FF * D, Q.Q6_K)}


def test_qwen3moe(tmp_path):
    path = tmp_path / "moe.gguf"
    E, K, FFE = 8, 2, 32
    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_block_count(1)
    w.add_embedding_length(D)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_key_length(32)
    w.add_value_length(32)
    w.add_context_length(32768)
    w.add_expert_count(E)
    w.add_expert_used_count(K)
    w.add_vocab_size(VOCAB)
    written: dict = {}
    _add(w, written, "token_embd.weight", (VOCAB, D), Q.F16)
    _add(w, written, "blk.0.attn_q.weight", (HEADS * 32, D), Q.Q8_0)
    _add(w, written, "blk.0.attn_q_norm.weight", (32,), Q.F32)
    _add(w, written, "blk.0.ffn_gate_inp.weight", (E, D), Q.F32)
    _add(w, written, "blk.0.ffn_up_exps.weight", (E, FFE, D), Q.Q4_0)
    _add(w, written, "blk.0.ffn_down_exps.weight", (E, D, FFE), Q.Q8_0)
    _finish(w)
    wf = read_gguf(path)
    got = {t.name: t for t in wf.tensors}
    assert all(got[n].n_bytes == b and got[n].dtype == dt for n, (dt, _, b) in written.items())
    assert got["blk.0.ffn_up_exps.weight"].tensor_class == "routed_experts"
    assert got["blk.0.ffn_gate_inp.weight"].tensor_class == "router"
    assert got["blk.0.attn_q_norm.weight"].tensor_class == "norms"
    s = wf.spec
    layer = s.layers[0]
    assert (layer.n_routed_experts, layer.experts_per_token) == (E, K)
    assert layer.expert_params == 3 * D * FFE  # moe_intermediate_size taken from the ffn_up_exps shape
    assert layer.kv[0].width == 2 * KV * 32
    assert s.vocab_size == VOCAB and s.layers[0].params["router"] == E * D


def test_deepseek2_mla(tmp_path):
    path = tmp_path / "ds.gguf"
    w = gguf.GGUFWriter(path, "deepseek2")
    w.add_block_count(2)
    w.add_embedding_length(D)
    w.add_head_count(HEADS)
    w.add_head_count_kv(1)
    w.add_key_length(576)
    w.add_value_length(512)
    w.add_key_length_mla(192)
    w.add_value_length_mla(128)
    w.add_rope_dimension_count(64)
    w.add_kv_lora_rank(512)
    w.add_q_lora_rank(32)
    w.add_context_length(163840)
    w.add_feed_forward_length(FF)
    w.add_expert_count(4)
    w.add_expert_used_count(2)
    w.add_expert_shared_count(1)
    w.add_expert_feed_forward_length(32)
    w.add_leading_dense_block_count(1)
    w.add_vocab_size(VOCAB)
    written: dict = {}
    _add(w, written, "blk.0.attn_kv_a_mqa.weight", (576, D), Q.Q8_0)
    _add(w, written, "blk.0.attn_kv_a_norm.weight", (512,), Q.F32)
    _add(w, written, "blk.0.ffn_up.weight", (FF, D), Q.Q8_0)
    _add(w, written, "blk.1.ffn_up_shexp.weight", (32, D), Q.Q8_0)
    _add(w, written, "blk.1.exp_probs_b.bias", (4,), Q.F32)
    _add(w, written, "blk.1.ffn_gate_up_exps.weight", (4, 64, D), Q.Q8_0)
    _add(w, written, "blk.2.nextn.eh_proj.weight", (D, 2 * D), Q.F16)  # block beyond block_count: MTP
    _finish(w)
    wf = read_gguf(path)
    got = {t.name: t for t in wf.tensors}
    assert got["blk.0.attn_kv_a_mqa.weight"].tensor_class == "attention"
    assert got["blk.0.attn_kv_a_norm.weight"].tensor_class == "norms"
    assert got["blk.1.ffn_up_shexp.weight"].tensor_class == "shared_experts"
    assert got["blk.1.exp_probs_b.bias"].tensor_class == "router"
    assert got["blk.1.ffn_gate_up_exps.weight"].tensor_class == "routed_experts"
    s = wf.spec
    assert s.family == "deepseek_v3" and s.architecture == "DeepseekV3ForCausalLM"
    assert [l.is_mtp for l in s.layers] == [False, False, True]
    assert not s.layers[0].is_moe and s.layers[1].is_moe
    assert s.layers[1].kv[0].kind == "mla" and s.layers[1].kv[0].width == 512 + 64
    # attention FLOPs use kv_lora/rope; head sizes came from key_length_mla/value_length_mla: q_b = H*192*q_lora
    assert s.layers[1].params["attention"] > HEADS * 192 * 32


def test_split_gguf_sums_shards(tmp_path):
    written = _llama(tmp_path / "tiny.gguf", split_max_tensors=10)
    shards = sorted(tmp_path.glob("tiny-*-of-*.gguf"))
    assert len(shards) >= 2 and shards[0].name == f"tiny-00001-of-{len(shards):05d}.gguf"
    wf = read_gguf(shards[0])
    assert wf.file_bytes == sum(os.path.getsize(p) for p in shards)
    assert {t.name: t.n_bytes for t in wf.tensors} == {n: b for n, (_, _, b) in written.items()}
    assert len(wf.spec.layers) == 2
    assert read_gguf(shards[-1]).file_bytes == wf.file_bytes  # any shard finds the set
    shards[1].unlink()
    with pytest.raises(ModelFormatError, match=shards[1].name):
        read_gguf(shards[0])


def test_malformed_files(tmp_path):
    good = tmp_path / "good.gguf"
    _llama(good)
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ModelFormatError, match=r"trunc\.gguf: .*truncated"):
        read_gguf(trunc)
    cut = tmp_path / "cut.gguf"  # complete header, tensor data cut short
    cut.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(ModelFormatError, match=r"cut\.gguf: .*truncated"):
        read_gguf(cut)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 definitely not gguf" * 10)
    with pytest.raises(ModelFormatError, match=r"junk\.gguf: not a GGUF file"):
        read_gguf(junk)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="not a GGUF file"):
        read_gguf(empty)
    with pytest.raises(ModelFormatError, match="no such GGUF file"):
        read_gguf(tmp_path / "absent.gguf")


def test_unsupported_architecture_and_missing_key(tmp_path):
    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(path, "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    _finish(w)
    with pytest.raises(ModelFormatError, match=r"unsupported GGUF architecture 'mamba' \(supported: llama,"):
        read_gguf(path)
    path = tmp_path / "nolayers.gguf"
    w = gguf.GGUFWriter(path, "qwen3")
    w.add_embedding_length(D)
    _finish(w)
    with pytest.raises(ModelFormatError, match=r"nolayers\.gguf: GGUF metadata has no valid 'qwen3\.block_count'"):
        read_gguf(path)


@pytest.mark.parametrize("name,cls,layer", [
    ("token_embd.weight", "embed", None), ("output.weight", "head", None), ("output_norm.weight", "norms", None),
    ("blk.3.attn_q_b.weight", "attention", 3), ("blk.3.attn_kv_b.weight", "attention", 3),
    ("blk.3.attn_k_b.weight", "attention", 3), ("blk.3.attn_sinks.weight", "norms", 3),
    ("blk.3.ffn_gate_inp.bias", "router", 3), ("blk.3.ffn_gate_inp_shexp.weight", "shared_experts", 3),
    ("blk.3.ffn_down_exps.bias", "routed_experts", 3), ("blk.3.ffn_down.weight", "dense_ffn", 3),
    ("blk.3.indexer.k_norm.weight", "indexer", 3), ("blk.3.attn_compressor_kv.weight", "compressor", 3),
    ("blk.3.post_ffw_norm.weight", "norms", 3), ("blk.61.nextn.shared_head_head.weight", "head", 61),
    ("rope_freqs.weight", "norms", None),
])
def test_tensor_class_names(name, cls, layer):
    assert gguf_tensor_class(name, 1 if "norm" in name or "sinks" in name or "rope" in name else 2) == (cls, layer)


@pytest.mark.parametrize("arch,pattern,family", [("gpt-oss", 2, "gpt_oss"), ("gemma3", 6, "gemma")])
def test_sliding_window_architectures(tmp_path, arch, pattern, family):
    path = tmp_path / f"{arch}.gguf"
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(6)
    w.add_embedding_length(D)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV)
    w.add_key_length(32)
    w.add_context_length(8192)
    w.add_sliding_window(128)
    w.add_vocab_size(VOCAB)
    if arch == "gpt-oss":
        w.add_expert_count(4)
        w.add_expert_used_count(2)
        w.add_expert_feed_forward_length(32)
    else:
        w.add_feed_forward_length(FF)
    w.add_tensor("token_embd.weight", np.zeros((VOCAB, D), dtype=np.float16))
    _finish(w)
    s = read_gguf(path).spec
    assert s.family == family
    assert [l.attn_kind for l in s.layers] == ["full" if (i + 1) % pattern == 0 else "swa" for i in range(6)]
    assert s.layers[0].kv[0].window == 128 and s.layers[0].kv[0].width == 2 * KV * 32
    assert s.global_params.get("head", 0) == 0  # no output.weight: tied embeddings
    if arch == "gpt-oss":
        assert s.layers[0].n_routed_experts == 4 and s.layers[0].experts_per_token == 2
