"""Read a GGUF file's header and tensor table (never its tensor data) into a WeightsFile.

The tensor table gives each tensor's GGML type and exact byte size; the metadata is mapped to a Hugging Face-style
config dict and handed to `spec_from_config`, so a GGUF and its source checkpoint yield the same ModelSpec.

Tensor classes from GGUF names (llama.cpp naming, gguf.constants.TENSOR_NAMES):
  token_embd -> embed; output -> head; output_norm / token_embd_norm / *norm* -> norms;
  blk.N.attn_* (q, k, v, qkv, output, q_a, q_b, kv_a_mqa, kv_b, k_b, v_b, gate) -> attention;
  blk.N.attn_sinks -> norms (per spec.TENSOR_CLASSES and from_config, which count sinks as norms);
  blk.N.ffn_{gate,up,down,gate_up}_{exps,chexps} -> routed_experts; *_shexp -> shared_experts;
  blk.N.ffn_gate_inp / exp_probs_b -> router; other blk.N.ffn_{gate,up,down} -> dense_ffn;
  *indexer* -> indexer; *compress* -> compressor; nextn.eh_proj -> attention, nextn.embed_tokens -> embed,
  nextn.shared_head_head -> head; v.* / mm.* (multimodal projector files) -> vision.
  Any other name: norms if it is 1-D, else attention.
MTP: with `ARCH.nextn_predict_layers` = n > 0 the last n of `block_count` blocks are MTP layers (llama.cpp
convention); tensors in blocks >= block_count are MTP layers as well.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import gguf
import numpy as np
from gguf import Keys

from optimizer.arch.from_config import spec_from_config
from optimizer.arch.spec import ModelSpec
from optimizer.arch.weights_file import TensorInfo, WeightsFile
from optimizer.errors import ModelFormatError
from optimizer.limits import (
    MAX_GGUF_ARRAY_ITEMS,
    MAX_GGUF_KV,
    MAX_GGUF_SHARDS,
    MAX_GGUF_TENSORS,
    MAX_LAYERS,
    clip_for_message,
)

# ---------------------------------------------------------------------------------------------
# Tensor classes
# ---------------------------------------------------------------------------------------------
_BLK = re.compile(r"^blk\.(\d{1,9})\.(.+)$")
_EXPS = re.compile(r"^ffn_(gate|up|down|gate_up)_(exps|chexps)\b")
_DENSE = re.compile(r"^ffn_(gate|up|down|gate_up)\b")


def gguf_tensor_class(name: str, n_dims: int = 2) -> tuple[str, int | None]:
    """(tensor class, layer) for a GGUF tensor name."""
    if name.startswith(("v.", "mm.", "a.")):
        return "vision", None
    m = _BLK.match(name)
    if not m:
        if name.startswith("token_embd.") and "norm" not in name:
            return "embed", None
        if name.startswith("output.") or name == "output":
            return "head", None
        if "norm" in name or n_dims <= 1:
            return "norms", None
        return "attention", None
    layer, rest = int(m.group(1)), m.group(2)
    if "indexer" in rest:
        cls = "indexer"
    elif "compress" in rest:
        cls = "compressor"
    elif rest.startswith("nextn.embed_tokens"):
        cls = "embed"
    elif rest.startswith("nextn.shared_head_head"):
        cls = "head"
    elif rest.startswith("nextn.eh_proj"):
        cls = "attention"
    elif "norm" in rest or rest.startswith("attn_sinks"):
        cls = "norms"
    elif rest.startswith("exp_probs_b") or re.match(r"^ffn_gate_inp\.", rest):
        cls = "router"
    elif re.match(r"^ffn_\w+_shexp\b", rest):
        cls = "shared_experts"
    elif _EXPS.match(rest):
        cls = "routed_experts"
    elif _DENSE.match(rest):
        cls = "dense_ffn"
    elif rest.startswith("attn_"):
        cls = "attention"
    else:
        cls = "norms" if n_dims <= 1 else "attention"
    return cls, layer


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
_SHARD = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_HF_ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
            "qwen3moe": "Qwen3MoeForCausalLM", "deepseek2": "DeepseekV3ForCausalLM", "gpt-oss": "GptOssForCausalLM",
            "gemma3": "Gemma3ForCausalLM"}
SUPPORTED_GGUF_ARCHS = tuple(_HF_ARCH)


@dataclass
class _Shard:
    path: Path
    fields: dict[str, Any]
    tensors: list[tuple[str, str, tuple[int, ...], int, int]]  # name, dtype, ne (ggml order), n_elements, n_bytes
    size: int


def _field_value(field: Any) -> Any:
    types = field.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        if types[-1] == gguf.GGUFValueType.STRING:
            return _StrArray(int(field.parts[4][0]))  # token lists: only the length (parts: key, type, itype, n)
        return field.contents()
    return field.contents()


class _StrArray:
    """Length of a string array (e.g. tokenizer.ggml.tokens) without decoding 100k+ strings."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class _PastEnd(Exception):
    pass


class _Reader(gguf.GGUFReader):
    """GGUFReader with a bounds check on every read (a corrupt array length can otherwise loop on empty reads past
    the end of the file) and plain-ndarray slicing, which parses large token lists about 3x faster."""

    def __init__(self, path: Any, mode: Any = "r"):
        self._label = Path(path).name
        super().__init__(path, mode)

    def _build_fields(self, offs: int, count: int) -> int:
        if int(count) > MAX_GGUF_KV:
            raise ModelFormatError(f"{self._label}: header declares {int(count):,} key/value "
                                   f"pairs (limit {MAX_GGUF_KV:,})")
        return super()._build_fields(offs, count)

    def _build_tensor_info(self, offs: int, count: int) -> Any:
        if int(count) > MAX_GGUF_TENSORS:
            raise ModelFormatError(f"{self._label}: header declares {int(count):,} tensors "
                                   f"(limit {MAX_GGUF_TENSORS:,})")
        return super()._build_tensor_info(offs, count)

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> Any:
        """Arrays checked against MAX_GGUF_ARRAY_ITEMS before any item is read; numeric arrays read as one block
        and string arrays (token lists: rigopt needs only their length) skipped length by length, instead of the
        library's one numpy object per item (10^6 empty tokens cost 12 CPU-s and 670 MiB that way)."""
        G = gguf.GGUFValueType
        if G(raw_type) != G.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        offs = orig_offs
        raw_itype = self._get(offs, np.uint32)
        offs += 4
        alen = self._get(offs, np.uint64)
        offs += 8
        n = int(alen[0])
        if n > MAX_GGUF_ARRAY_ITEMS:
            raise ModelFormatError(f"{self._label}: an array of {n:,} items in the header "
                                   f"(limit {MAX_GGUF_ARRAY_ITEMS:,})")
        itype = G(int(raw_itype[0]))
        nptype = self.gguf_scalar_to_np.get(itype)
        if nptype is not None:
            val = self._get(offs, nptype, n)
            return offs + int(val.nbytes) - orig_offs, [raw_itype, alen, val], [2], [G.ARRAY, itype]
        if itype == G.STRING:
            import struct
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self.__dict__["_plain"] = self.data.view(np.ndarray)
            buf = memoryview(cast(Any, plain))
            unpack = struct.Struct("<Q" if (self.byte_order == "S") == (sys.byteorder == "big") else ">Q").unpack_from
            end = plain.shape[0]
            for _ in range(n):
                if offs + 8 > end:
                    raise _PastEnd(f"needs byte {offs + 8}")
                offs += 8 + unpack(buf, offs)[0]
            if offs > end:
                raise _PastEnd(f"needs byte {offs}")
            return offs - orig_offs, [raw_itype, alen], [], [G.ARRAY, G.STRING]
        return super()._get_field_parts(orig_offs, raw_type)

    def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> Any:
        plain = self.__dict__.get("_plain")
        if plain is None:
            plain = self.__dict__["_plain"] = self.data.view(np.ndarray)
        count = int(count)
        end = offset + np.dtype(dtype).itemsize * count
        if count < 0 or end > plain.shape[0]:
            raise _PastEnd(f"needs byte {end}")
        arr = plain[offset:end].view(dtype=dtype)[:count]
        return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))


def _read_one(path: Path) -> _Shard:
    label = path.name
    if not path.is_file():
        raise ModelFormatError(f"{label}: no such GGUF file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ModelFormatError(f"{label}: cannot read file ({e.strerror or e})") from None
    if magic != b"GGUF":
        raise ModelFormatError(f"{label}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    try:
        reader = _Reader(path, "r")
        fields = {k: _field_value(v) for k, v in reader.fields.items()
                  if not k.startswith(("GGUF.", "tokenizer.")) or k == Keys.Tokenizer.LIST}
        tensors = []
        for t in reader.tensors:
            ne = tuple(int(x) for x in t.shape)
            tensors.append((t.name, t.tensor_type.name, ne, int(t.n_elements), int(t.n_bytes)))
            if t.data_offset + t.n_bytes > size:
                raise ModelFormatError(
                    f"{label}: truncated: tensor {t.name} ends at byte {t.data_offset + t.n_bytes}, file has {size}")
        del reader
    except ModelFormatError:
        raise
    except _PastEnd as e:
        raise ModelFormatError(f"{label}: truncated: the header or a tensor {e}, the file has {size} bytes") from None
    except Exception as e:  # ValueError/KeyError/IndexError/UnicodeDecodeError from a corrupt header
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelFormatError(f"{label}: corrupt GGUF header (file is {size} bytes; "
                               f"gguf reader: {msg})") from None
    return _Shard(path, fields, tensors, size)


def _shard_paths(first: _Shard) -> list[Path]:
    count = first.fields.get(Keys.Split.LLM_KV_SPLIT_COUNT)
    m = _SHARD.match(first.path.name)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or not 0 <= count <= MAX_GGUF_SHARDS):
        raise ModelFormatError(f"{first.path.name}: split.count must be an integer within 0..{MAX_GGUF_SHARDS}, "
                               f"got {clip_for_message(count, 40)}")
    if not count or count <= 1:
        return [first.path]
    if not m:
        raise ModelFormatError(f"{first.path.name}: split.count={count} but the name does not follow "
                               f"'<name>-00001-of-{count:05d}.gguf'")
    return [first.path.with_name(f"{m.group('prefix')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def read_gguf(path: str | Path) -> WeightsFile:
    """Read a GGUF (or all shards of a split GGUF, given any shard) into a WeightsFile; no tensor data is read."""
    p = Path(path)
    m = _SHARD.match(p.name)
    if m and int(m.group("no")) != 1:  # any shard given: start from the first (it holds the metadata)
        p = p.with_name(f"{m.group('prefix')}-00001-of-{m.group('count')}.gguf")
        if not p.is_file():
            raise ModelFormatError(f"{p.name}: missing first shard of split GGUF {Path(path).name}")
    first = _read_one(p)
    shards = [first]
    for sp in _shard_paths(first)[1:]:
        if not sp.is_file():
            raise ModelFormatError(f"{sp.name}: missing shard of split GGUF {first.path.name}")
        shards.append(_read_one(sp))

    tensors_raw = [t for s in shards for t in s.tensors]
    names = [t[0] for t in tensors_raw]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ModelFormatError(f"{first.path.name}: tensor {dup} appears in more than one shard")
    expected = first.fields.get(Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT)
    if expected is not None and (not isinstance(expected, int) or expected != len(tensors_raw)):
        raise ModelFormatError(f"{first.path.name}: split.tensors.count={expected} but the shards hold "
                               f"{len(tensors_raw)} tensors")

    spec = _spec(first.fields, {t[0]: t[2] for t in tensors_raw}, first.path.name, str(p))
    infos = []
    for name, dtype, ne, n_el, n_bytes in tensors_raw:
        cls, layer = gguf_tensor_class(name, sum(1 for d in ne if d > 1))
        infos.append(TensorInfo(name=name, dtype=dtype, n_elements=n_el, n_bytes=n_bytes, tensor_class=cls,
                                layer=layer))
    return WeightsFile(path=str(p), spec=spec, tensors=tuple(infos), file_bytes=sum(s.size for s in shards),
                       format="gguf")


# ---------------------------------------------------------------------------------------------
# Metadata -> HF-style config dict -> ModelSpec
# ---------------------------------------------------------------------------------------------
# Keys added to gguf after the oldest supported version (pyproject: gguf>=0.10); literal names as fallback.
_A = Keys.Attention
_NEXTN = getattr(Keys.LLM, "NEXTN_PREDICT_LAYERS", "{arch}.nextn_predict_layers")
_SWA_PATTERN = getattr(_A, "SLIDING_WINDOW_PATTERN", "{arch}.attention.sliding_window_pattern")
_K_MLA = getattr(_A, "KEY_LENGTH_MLA", "{arch}.attention.key_length_mla")
_V_MLA = getattr(_A, "VALUE_LENGTH_MLA", "{arch}.attention.value_length_mla")
_IDX = getattr(_A, "Indexer", None)
_IDX_HEADS = getattr(_IDX, "HEAD_COUNT", "{arch}.attention.indexer.head_count")
_IDX_DIM = getattr(_IDX, "KEY_LENGTH", "{arch}.attention.indexer.key_length")
_IDX_TOPK = getattr(_IDX, "TOP_K", "{arch}.attention.indexer.top_k")


def _spec(fields: dict[str, Any], shapes: dict[str, tuple[int, ...]], label: str, source: str) -> ModelSpec:
    arch = fields.get(Keys.General.ARCHITECTURE)
    if not isinstance(arch, str):
        raise ModelFormatError(f"{label}: GGUF metadata has no '{Keys.General.ARCHITECTURE}'")
    if arch not in SUPPORTED_GGUF_ARCHS:
        raise ModelFormatError(f"{label}: unsupported GGUF architecture '{clip_for_message(arch, 40)}' "
                               f"(supported: {', '.join(SUPPORTED_GGUF_ARCHS)})")

    def key(k: str) -> str:
        return k.format(arch=arch)

    def get(k: str, default: Any = None) -> Any:
        v = fields.get(key(k))
        return default if v is None else v

    def _num(k: str, v: Any) -> Any:
        if isinstance(v, list):  # per-layer arrays (e.g. head_count_kv): take the largest non-zero entry
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
                raise ModelFormatError(f"{label}: GGUF metadata '{clip_for_message(key(k), 60)}' must hold numbers")
            v = max((x for x in v if x), default=0)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return v

    def req_int(k: str) -> int:
        v = _num(k, get(k))
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ModelFormatError(f"{label}: GGUF metadata has no valid '{key(k)}' (got {clip_for_message(v, 40)})")
        return v

    def opt_int(k: str, default: int = 0) -> int:
        v = _num(k, get(k))
        if v is None or v == 0:
            return default
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ModelFormatError(f"{label}: GGUF metadata '{key(k)}' must be a non-negative integer "
                                   f"(got {clip_for_message(v, 40)})")
        return v

    def ne(name: str, dim: int) -> int:
        s = shapes.get(name)
        return int(s[dim]) if s is not None and len(s) > dim else 0

    def first_ne(suffix: str, dim: int) -> int:
        for name, s in shapes.items():
            m = _BLK.match(name)
            if m and m.group(2) == suffix and len(s) > dim:
                return int(s[dim])
        return 0

    L = req_int(Keys.LLM.BLOCK_COUNT)
    if L > MAX_LAYERS:
        raise ModelFormatError(f"{label}: GGUF metadata '{key(Keys.LLM.BLOCK_COUNT)}' = {L} is more than "
                               f"{MAX_LAYERS} layers")
    d = req_int(Keys.LLM.EMBEDDING_LENGTH)
    H = req_int(Keys.Attention.HEAD_COUNT)
    ctx = req_int(Keys.LLM.CONTEXT_LENGTH)
    toks = fields.get(Keys.Tokenizer.LIST)
    vocab = (opt_int(Keys.LLM.VOCAB_SIZE) or (len(toks) if isinstance(toks, (list, _StrArray)) else 0)
             or ne("token_embd.weight", 1))
    if not vocab:
        raise ModelFormatError(f"{label}: cannot tell the vocabulary size (no '{key(Keys.LLM.VOCAB_SIZE)}', "
                               f"'{Keys.Tokenizer.LIST}' or token_embd.weight)")
    # MTP: llama.cpp counts nextn layers inside block_count; blocks beyond block_count are MTP too.
    n_mtp = opt_int(_NEXTN)
    max_blk = max((int(m.group(1)) for n in shapes if (m := _BLK.match(n))), default=-1)
    if max_blk >= MAX_LAYERS:
        raise ModelFormatError(f"{label}: tensor blk.{max_blk}.* is beyond {MAX_LAYERS} layers")
    n_main = L - n_mtp if 0 < n_mtp < L else L
    n_mtp = max(n_mtp if n_main < L else 0, max_blk + 1 - n_main, 0)

    E = opt_int(Keys.LLM.EXPERT_COUNT)
    inter = opt_int(Keys.LLM.FEED_FORWARD_LENGTH) or first_ne("ffn_up.weight", 1)
    moe_inter = opt_int(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH) or first_ne("ffn_up_exps.weight", 1)
    cfg: dict[str, Any] = {
        "hidden_size": d, "num_hidden_layers": n_main, "num_attention_heads": H,
        "num_key_value_heads": opt_int(Keys.Attention.HEAD_COUNT_KV, H),
        "vocab_size": vocab, "max_position_embeddings": ctx,
        "tie_word_embeddings": "output.weight" not in shapes,
        "attention_bias": any(n.endswith("attn_q.bias") for n in shapes),
        "architectures": [_HF_ARCH[arch]],
    }
    if inter:
        cfg["intermediate_size"] = inter
    hd = opt_int(Keys.Attention.KEY_LENGTH)
    if hd and arch != "deepseek2":
        cfg["head_dim"] = hd
    k_used = opt_int(Keys.LLM.EXPERT_USED_COUNT)

    if arch == "llama":
        cfg["model_type"] = "mixtral" if E else "llama"
        if E:
            cfg.update(num_local_experts=E, num_experts_per_tok=k_used, intermediate_size=moe_inter or inter)
    elif arch in ("qwen2", "qwen3"):
        cfg["model_type"] = arch
    elif arch == "qwen3moe":
        cfg.update(model_type="qwen3_moe", num_experts=E, num_experts_per_tok=k_used,
                   moe_intermediate_size=moe_inter, decoder_sparse_step=1)
    elif arch == "gpt-oss":
        cfg.update(model_type="gpt_oss", num_local_experts=E, experts_per_token=k_used,
                   intermediate_size=moe_inter or inter, attention_bias=True,
                   sliding_window=opt_int(Keys.Attention.SLIDING_WINDOW) or None)
        # llama.cpp: swa pattern 2 (even layers sliding, odd layers full), as HF layer_types
        cfg["layer_types"] = _layer_types(get(_SWA_PATTERN), L, default_pattern=2)
    elif arch == "gemma3":
        cfg.update(model_type="gemma3_text", sliding_window=opt_int(Keys.Attention.SLIDING_WINDOW) or None)
        # llama.cpp hard-codes a 5 local : 1 global pattern for gemma3 when the key is absent
        cfg["layer_types"] = _layer_types(get(_SWA_PATTERN), L, default_pattern=6)
    elif arch == "deepseek2":
        rope = req_int(Keys.Rope.DIMENSION_COUNT)
        k_mla, v_mla = opt_int(_K_MLA), opt_int(_V_MLA)
        # MLA-absorbed GGUFs store key_length 576 / value_length 512 and the per-head sizes under *_mla;
        # older GGUFs store the per-head sizes in key_length / value_length directly.
        qk = k_mla or opt_int(Keys.Attention.KEY_LENGTH)
        v_dim = v_mla or opt_int(Keys.Attention.VALUE_LENGTH)
        if not qk or not v_dim:
            raise ModelFormatError(f"{label}: GGUF metadata has no '{key(_K_MLA)}' / "
                                   f"'{key(_V_MLA)}' for MLA head sizes")
        n_shared = opt_int(Keys.LLM.EXPERT_SHARED_COUNT)
        if not n_shared and moe_inter and first_ne("ffn_up_shexp.weight", 1):
            n_shared = first_ne("ffn_up_shexp.weight", 1) // moe_inter
        cfg.update(model_type="deepseek_v3", q_lora_rank=opt_int(Keys.Attention.Q_LORA_RANK) or None,
                   kv_lora_rank=req_int(Keys.Attention.KV_LORA_RANK), qk_rope_head_dim=rope,
                   qk_nope_head_dim=qk - rope, v_head_dim=v_dim, n_routed_experts=E, num_experts_per_tok=k_used,
                   moe_intermediate_size=moe_inter, n_shared_experts=n_shared,
                   first_k_dense_replace=opt_int(Keys.LLM.LEADING_DENSE_BLOCK_COUNT),
                   num_nextn_predict_layers=n_mtp)
        cfg.setdefault("intermediate_size", 0)
        if fields.get(key(_IDX_HEADS)):
            cfg.update(model_type="deepseek_v32", index_n_heads=opt_int(_IDX_HEADS),
                       index_head_dim=opt_int(_IDX_DIM),
                       index_topk=opt_int(_IDX_TOPK))
    if n_mtp and arch != "deepseek2":
        cfg.update(use_mtp=True, num_mtp_modules=n_mtp)

    name = fields.get(Keys.General.NAME)
    name = name if isinstance(name, str) and name and len(name) <= 256 and name.isprintable() else label
    try:
        return spec_from_config(cfg, name=name, source=source)
    except ModelFormatError as e:
        raise ModelFormatError(f"{label}: {e} (from GGUF metadata)") from None


def _layer_types(pattern: Any, L: int, default_pattern: int) -> list[str]:
    """HF-style layer_types from a GGUF sliding_window_pattern (int period or per-layer bools, True = SWA)."""
    if isinstance(pattern, list) and pattern:
        return ["sliding_attention" if pattern[i % len(pattern)] else "full_attention" for i in range(L)]
    if isinstance(pattern, float) and pattern.is_integer():
        pattern = int(pattern)
    n = pattern if isinstance(pattern, int) and pattern > 0 else default_pattern
    return ["full_attention" if (i + 1) % n == 0 else "sliding_attention" for i in range(L)]
