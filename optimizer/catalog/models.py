"""Model catalogue: load cards, resolve a user's MODEL argument to an architecture.

MODEL may be a catalogue key or alias, a path to a config.json, a model folder (config.json and/or
model.safetensors.index.json), a .gguf file, or a Hugging Face Hub id `org/name[@revision]` (optimizer/catalog/hub.py).
Precedence: an existing local path, then a catalogue key or alias, then a card's `hf_id` (without @revision: the
shipped card answers, no network), then the Hub.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from optimizer.arch.from_config import spec_from_config
from optimizer.arch.spec import ModelSpec
from optimizer.arch.weights_file import WeightsFile
from optimizer.cache import memoize
from optimizer.catalog.hub import hub_model, parse_hub_id
from optimizer.catalog.model_schema import ModelCard
from optimizer.catalog.paths import data_dir
from optimizer.errors import CatalogError, InputError, ModelFormatError
from optimizer.limits import (
    MAX_CONFIG_BYTES,
    MAX_NAME_CHARS,
    MAX_PATH_CHARS,
    check_regular_file,
    clip_for_message,
    exists,
    has_control,
    load_yaml,
    read_json_bounded,
)


@dataclass(frozen=True)
class ResolvedModel:
    key: str
    spec: ModelSpec
    card: ModelCard | None = None
    weights_file: WeightsFile | None = None  # set when the model was read from a GGUF / safetensors file
    storage_map: tuple[tuple[str, str], ...] | None = None  # a Hub checkpoint's formats (catalog/hub.py)

    @property
    def storage(self) -> dict[str, str]:
        """How tensor classes are stored: the card's, or a GGUF file's own types (the dominant one per class)."""
        if self.card is not None:
            return dict(self.card.storage)
        if self.storage_map is not None:
            return dict(self.storage_map)
        wf = self.weights_file
        if wf is not None and getattr(wf, "format", "") == "gguf" and wf.tensors:
            from optimizer.arch.formats import FORMATS
            out = {}
            for cls, by_type in wf.dtypes_by_class().items():
                fmt = max(by_type, key=lambda t: (by_type[t], t)).lower()
                if fmt in FORMATS:
                    out[cls] = fmt
            main = max(out, key=lambda c: wf.bytes_by_class().get(c, 0), default=None)
            return {"default": out.get(main, "bf16") if main is not None else "bf16", **out}
        return {"default": "bf16"}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


@memoize("catalog.model_cards", maxsize=1)
def load_cards() -> dict[str, ModelCard]:
    root = data_dir("models")
    cards: dict[str, ModelCard] = {}
    for card_path in sorted(root.glob("*/card.yaml")):
        try:
            raw = load_yaml(card_path.read_text())
            card = ModelCard.model_validate(raw)
        except yaml.YAMLError as e:
            raise CatalogError(f"{card_path}: malformed YAML ({str(e).splitlines()[0]})") from None
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise CatalogError(f"{card_path}: field '{loc}': {err['msg']}") from None
        if card.key != card_path.parent.name:
            raise CatalogError(f"{card_path}: key '{card.key}' does not match its folder name")
        cards[card.key] = card
    return cards


@memoize("catalog.model_aliases", maxsize=1)
def _alias_map() -> dict[str, str]:
    out: dict[str, str] = {}
    for key, card in load_cards().items():
        for a in [key, *card.aliases]:
            n = _norm(a)
            if n in out and out[n] != key:
                raise CatalogError(f"model alias '{a}' is used by both {out[n]} and {key}")
            out[n] = key
    return out


@memoize("catalog.model_hf_ids", maxsize=1)
def _hf_id_map() -> dict[str, str]:
    """Normalised card hf_id -> catalogue key (Hub ids are case-insensitive)."""
    return {card.hf_id.strip().lower(): key for key, card in load_cards().items()}


def catalogue_key_for_hub_id(name: str) -> str | None:
    """The catalogue key whose card names this Hub id (no @revision), None otherwise."""
    return _hf_id_map().get(name.strip().lower())


def catalogue_key(name: str) -> str:
    if len(name) > MAX_NAME_CHARS:
        raise CatalogError(f"unknown model '{clip_for_message(name, 40)}' ({len(name):,} characters; catalogue "
                           f"names have at most {MAX_NAME_CHARS})")
    n = _norm(name)
    amap = _alias_map()
    if n in amap:
        return amap[n]
    close = difflib.get_close_matches(n, list(amap), n=3, cutoff=0.6)
    close_keys = list(dict.fromkeys(amap[c] for c in close))
    raise CatalogError(f"unknown model '{clip_for_message(name)}'", did_you_mean=close_keys)


@memoize("catalog.models", maxsize=64)
def _catalogue_model(key: str) -> ResolvedModel:
    card = load_cards()[key]
    cfg_path = data_dir("models") / key / "config.json"
    spec = spec_from_config(_read_json(cfg_path), name=card.name, source=f"models/{key}/config.json")
    return ResolvedModel(key=key, spec=spec, card=card)


def _read_json(path: Path) -> Any:
    return read_json_bounded(path, MAX_CONFIG_BYTES, "config", clip_for_message(str(path)), ModelFormatError)


def resolve_model(name: str) -> ResolvedModel:
    """Turn a MODEL argument into an architecture (and card, when it is a catalogue model).
    Files are read once per (path, size, mtime): the planner resolves the same model many times."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_PATH_CHARS or has_control(name):
        n = len(name) if isinstance(name, str) else 0
        raise InputError(f"not a model name or path: {clip_for_message(name, 40)} ({n:,} characters; a name or "
                         f"path has 1..{MAX_PATH_CHARS} characters and no control characters)")
    p = Path(name).expanduser()
    hub = parse_hub_id(name)
    if hub is not None and not exists(p):
        if _norm(name) in _alias_map():
            return _catalogue_model(_alias_map()[_norm(name)])
        repo, rev = hub
        key = catalogue_key_for_hub_id(repo) if rev is None else None
        return _catalogue_model(key) if key is not None else _hub_model(repo, rev)
    looks_like_path = name.endswith((".json", ".gguf")) or "/" in name or name.startswith(".")
    if looks_like_path or (exists(p) and _norm(name) not in _alias_map()):
        if not exists(p):
            raise ModelFormatError(f"{clip_for_message(name)}: no such file or folder")
        check_regular_file(p, "model")
        st = p.stat()
        return _resolve_path(str(p.resolve()), st.st_size, st.st_mtime_ns)
    return _catalogue_model(catalogue_key(name))


@memoize("catalog.hub_models", maxsize=16)  # per process: the Hub (or its cache) is read once per id
def _hub_model(repo: str, rev: str | None) -> ResolvedModel:
    h = hub_model(repo, rev)
    return ResolvedModel(key=f"{repo}@{rev}" if rev else repo, spec=h.spec, weights_file=h.weights_file,
                         storage_map=h.storage)


@memoize("catalog.model_files", maxsize=32)   # keyed by (path, size, mtime): content changes miss
def _resolve_path(path: str, _size: int, _mtime_ns: int) -> ResolvedModel:
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        from optimizer.arch.from_gguf import read_gguf
        wf = read_gguf(p)
        return ResolvedModel(key=p.stem, spec=wf.spec, weights_file=wf)
    if p.is_dir():
        if any(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").exists():
            from optimizer.arch.from_safetensors import read_safetensors_dir
            wf = read_safetensors_dir(p)
            return ResolvedModel(key=p.name, spec=wf.spec, weights_file=wf)
        p = p / "config.json"
    raw = _read_json(p)
    spec = spec_from_config(raw, name=str(p), source=str(p))
    return ResolvedModel(key=p.parent.name if p.name == "config.json" else p.stem, spec=spec)
