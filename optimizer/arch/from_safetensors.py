"""Read a Hugging Face checkpoint folder (config.json + safetensors headers, never tensor data) into a WeightsFile.

Each shard's header is the first 8 bytes (little-endian u64 N) followed by N bytes of JSON
`{name: {dtype, shape, data_offsets: [a, b]}, "__metadata__": {...}}`; a tensor's bytes are b - a.

Tensor classes from HF names (first match wins):
  scale tensors (.scale, _scale, _scale_inv, weight_scale, .weight_scale_2, input_scale) take the class of their weight;
  vision/visual/multi_modal_projector/audio -> vision; tid2eid -> lookup; embed_tokens / embed.weight -> embed;
  lm_head / head.weight -> head; indexer submodule -> indexer; compressor submodule -> compressor;
  *norm*, attention sinks, mHC (hc_*) -> norms; shared_expert(s) -> shared_experts; .experts. -> routed_experts;
  .gate.{weight,bias,e_score_correction_bias} / router -> router; other mlp/ffn/feed_forward -> dense_ffn;
  self_attn / .attn. / eh_proj, e_proj, h_proj -> attention; anything else: norms if 1-D, else attention.
Layer: `layers.N.` (N >= num_hidden_layers is an MTP layer); `mtp.N.` is read as layer num_hidden_layers + N.

If no shard is present but model.safetensors.index.json has metadata.total_size, the result has
file_bytes = total_size and tensors = () (per-class bytes are then unknown). If the index names shards and only
some are present, that is an error naming the missing ones (a partial download would undercount).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from optimizer.arch.from_config import spec_from_config
from optimizer.arch.weights_file import TensorInfo, WeightsFile
from optimizer.errors import ModelFormatError
from optimizer.limits import MAX_SAFETENSORS_DIM, MAX_SIZE_BYTES, clip_for_message

_SCALE = re.compile(r"(\.weight_scale_2|\.weight_scale_inv|_scale_inv|\.weight_scale|weight_scale|input_scale|\.scale|_scale)$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d{1,9})\.")
_MTP = re.compile(r"(?:^|\.)mtp\.(\d{1,9})\.")
from optimizer.limits import MAX_SAFETENSORS_HEADER_BYTES as _MAX_HEADER  # noqa: E402


def hf_tensor_class(name: str, n_dims: int = 2) -> str:
    """Tensor class of a Hugging Face / DeepSeek-style checkpoint tensor name."""
    n = _SCALE.sub("", name)
    if n != name:  # a scale tensor: classify the weight it belongs to
        n = n.rstrip("._")
        n = n if n.endswith(".weight") else n + ".weight"
    if any(k in n for k in ("vision", "visual", "multi_modal_projector", "audio_tower", "vit.")):
        return "vision"
    if "tid2eid" in n:
        return "lookup"
    if "embed_tokens" in n or re.search(r"(?:^|\.)embed\.weight$", n):
        return "embed"
    if "lm_head" in n or re.search(r"(?:^|\.)head\.weight$", n):
        return "head"
    if ".indexer." in n or n.startswith("indexer."):
        return "indexer"
    if ".compressor." in n or n.startswith("compressor."):
        return "compressor"
    if "norm" in n or re.search(r"(?:^|\.|_)sinks?\b", n) or re.search(r"(?:^|\.)hc_", n):
        return "norms"
    if "shared_expert" in n:
        return "shared_experts"
    if ".experts." in n:
        return "routed_experts"
    if re.search(r"\.gate\.(weight|bias|e_score_correction_bias)$", n) or ".router." in n or ".gate.tid2eid" in n:
        return "router"
    if re.search(r"(?:^|\.)(mlp|ffn|feed_forward)\.", n):
        return "dense_ffn"
    if "self_attn" in n or ".attn." in n or re.search(r"(?:^|\.)(eh_proj|e_proj|h_proj)\.", n):
        return "attention"
    return "norms" if n_dims <= 1 else "attention"


def _layer(name: str, n_layers: int) -> int | None:
    m = _LAYER.search(name)
    if m:
        return int(m.group(1))
    m = _MTP.search(name)
    return n_layers + int(m.group(1)) if m else None


def _load_json(path: Path) -> Any:
    from optimizer.limits import MAX_CONFIG_BYTES, MAX_INDEX_BYTES, read_json_bounded
    limit = MAX_CONFIG_BYTES if path.name == "config.json" else MAX_INDEX_BYTES
    return read_json_bounded(path, limit, path.name, path.name, ModelFormatError)


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """{tensor name: {dtype, shape, data_offsets}} of one shard, validated against the file size."""
    label = path.name
    from optimizer.errors import InputError
    from optimizer.limits import check_regular_file
    try:
        check_regular_file(path, "safetensors shard")
    except InputError as e:
        raise ModelFormatError(str(e)) from None
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelFormatError(f"{label}: truncated safetensors file ({len(head)} bytes, no header length)")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, _MAX_HEADER):
                raise ModelFormatError(f"{label}: header length {n} exceeds the file ({size} bytes); "
                                       "truncated or not a safetensors file")
            raw = f.read(n)
    except OSError as e:
        raise ModelFormatError(f"{label}: cannot read file ({e.strerror or e})") from None
    from optimizer.limits import json_depth_ok
    if not json_depth_ok(raw):
        raise ModelFormatError(f"{label}: safetensors header is nested too deeply")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFormatError(f"{label}: safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{label}: safetensors header is not a JSON object")
    return check_header(header, label, size - 8 - n)


# Element sizes of the safetensors dtypes (huggingface/safetensors safetensors/src/tensor.rs, `enum Dtype` and
# `Dtype::bitsize`; the sub-byte float formats F4 / F6_* and F8_E8M0 since safetensors 0.6). A header naming any
# other dtype, or whose shape does not fill its data_offsets, is refused as the safetensors library refuses it
# (SafeTensorError::TensorInvalidInfo).
DTYPE_BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
              "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "C64": 64, "F64": 64, "I64": 64, "U64": 64}


def index_total_size(index: Any, label: str) -> int | None:
    """`metadata.total_size` of a parsed model.safetensors.index.json: None when absent; a ModelFormatError when
    present but not a whole number of bytes in 1..MAX_SIZE_BYTES (-1, 1e309, "big" are refused, not read as 0)."""
    meta = index.get("metadata") if isinstance(index, dict) else None
    if not isinstance(meta, dict) or meta.get("total_size") is None:
        return None
    total = meta["total_size"]
    if isinstance(total, bool) or not isinstance(total, int) or not 0 < total <= MAX_SIZE_BYTES:
        raise ModelFormatError(f"{label}: metadata.total_size must be a byte count within 1..{MAX_SIZE_BYTES}, got "
                               f"{clip_for_message(total, 40)}")
    return total


def check_header(header: dict[str, Any], label: str, data_bytes: int | None) -> dict[str, dict[str, Any]]:
    """{tensor name: entry} of a parsed safetensors header (the `__metadata__` entry dropped), each entry checked for
    a dtype, a shape and data offsets; offsets are checked against `data_bytes` (the bytes after the header) when the
    file size is known (a header fetched by HTTP range request from the Hub comes without it)."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(entry, dict) and isinstance(entry.get("dtype"), str) and isinstance(entry.get("shape"), list)
        offs = entry.get("data_offsets") if isinstance(entry, dict) else None
        ok = ok and isinstance(offs, list) and len(offs) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) for x in offs + entry["shape"])
        if not ok:
            raise ModelFormatError(f"{label}: tensor {clip_for_message(name)!r} has no valid dtype/shape/data_offsets in the header")
        assert isinstance(offs, list)  # checked by `ok` above
        a, b = offs
        if not 0 <= a <= b <= MAX_SIZE_BYTES or any(not 0 <= s <= MAX_SAFETENSORS_DIM for s in entry["shape"]) \
                or len(entry["shape"]) > 16:
            raise ModelFormatError(f"{label}: tensor {clip_for_message(name)!r} has invalid data_offsets {clip_for_message(offs)} or shape")
        bits = DTYPE_BITS.get(entry["dtype"])
        if bits is None:
            raise ModelFormatError(f"{label}: tensor {clip_for_message(name)!r} has unknown dtype "
                                   f"{clip_for_message(entry['dtype'], 20)!r} (safetensors defines {', '.join(DTYPE_BITS)})")
        n_el = 1
        for d in entry["shape"]:
            n_el *= d
        if (n_el * bits + 7) // 8 != b - a:
            raise ModelFormatError(f"{label}: tensor {clip_for_message(name)!r}: shape {clip_for_message(entry['shape'], 60)} "
                                   f"of {entry['dtype']} is not its {b - a:,} data bytes")
        if data_bytes is not None and b > data_bytes:
            raise ModelFormatError(f"{label}: truncated: tensor {clip_for_message(name)!r} ends at data byte {b}, "
                                   f"file holds {data_bytes}")
        out[name] = entry
    return out


def tensors_from_headers(headers: dict[str, dict[str, dict[str, Any]]], n_layers: int) -> tuple[TensorInfo, ...]:
    """TensorInfo rows (class, layer, bytes) of checked headers, shard by shard in the given order."""
    tensors: list[TensorInfo] = []
    for header in headers.values():
        for name, e in header.items():
            n_el = 1
            for s in e["shape"]:
                n_el *= s
            a, b = e["data_offsets"]
            dims = sum(1 for s in e["shape"] if s > 1)
            tensors.append(TensorInfo(name=name, dtype=e["dtype"], n_elements=n_el, n_bytes=b - a,
                                      tensor_class=hf_tensor_class(name, dims), layer=_layer(name, n_layers)))
    return tuple(tensors)


def read_safetensors_dir(path: str | Path) -> WeightsFile:
    """Read config.json and every safetensors shard header in a checkpoint folder (or beside a given file)."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if not folder.is_dir():
        raise ModelFormatError(f"{p}: no such checkpoint folder")
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelFormatError(f"{folder.name}: no config.json in {folder}")
    config = _load_json(cfg_path)
    spec = spec_from_config(config, name=folder.name, source=str(folder))
    n_layers = len(spec.main_layers)

    index_path = folder / "model.safetensors.index.json"
    index = _load_json(index_path) if index_path.is_file() else None
    if index is not None and not isinstance(index, dict):
        raise ModelFormatError(f"{index_path.name}: not a JSON object")
    if index is not None and index.get("weight_map"):
        wm = index["weight_map"]
        if not isinstance(wm, dict):
            raise ModelFormatError(f"{index_path.name}: 'weight_map' is not an object")
        shard_names = sorted({str(v) for v in wm.values()})
        from optimizer.limits import safe_component
        bad = [n for n in shard_names if safe_component(n, "") != n]
        if bad:  # a shard is a plain file name in this folder: no paths, control characters or 300-char names
            raise ModelFormatError(f"{index_path.name}: weight_map names shard {clip_for_message(bad[0])}, "
                                   "not a file name in the checkpoint folder")
    else:
        shard_names = sorted(q.name for q in folder.glob("*.safetensors"))
    present = [folder / s for s in shard_names if (folder / s).is_file()]

    if not present:
        total = index_total_size(index, f"{folder.name}: model.safetensors.index.json")
        if total is not None:
            return WeightsFile(path=str(folder), spec=spec, tensors=(), file_bytes=total, format="safetensors")
        raise ModelFormatError(f"{folder.name}: no safetensors shards and no metadata.total_size in "
                               "model.safetensors.index.json")
    missing = [s for s in shard_names if not (folder / s).is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ModelFormatError(f"{folder.name}: missing safetensors shard(s) "
                               f"{clip_for_message(', '.join(missing[:3]))}{more} "
                               "named in model.safetensors.index.json")

    headers = {shard.name: read_safetensors_header(shard) for shard in present}
    return WeightsFile(path=str(folder), spec=spec, tensors=tensors_from_headers(headers, n_layers),
                       file_bytes=sum(q.stat().st_size for q in present), format="safetensors")
