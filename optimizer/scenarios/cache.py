"""Content-addressed cache of `cheapest` results.

Key = sha256 of (normalized Query, model file digest when the model is a path, catalogue digest of every file
under the `models/` and `hardware/` data folders, rigopt version, result schema). Entries are CheapestResult JSON
files under `<cache>/<key[:2]>/<key>.json`, written atomically; an unreadable entry is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from optimizer import __version__
from optimizer.solver.query import Query
from optimizer.solver.search import RESULT_SCHEMA, CheapestResult

_SMALL = 64 * 2**20  # files up to this size are hashed by content; larger ones (GGUF, shards) by size and mtime


def _file_digest(h, p: Path) -> None:
    st = p.stat()
    if st.st_size <= _SMALL:
        h.update(p.read_bytes())
    else:
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of every file under `root` (sorted, dot-files skipped)."""
    h = hashlib.sha256()
    root = Path(root)
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)
        and "__pycache__" not in p.parts)
    for p in files:
        h.update(str(p.relative_to(root) if p != root else p.name).encode() + b"\0")
        _file_digest(h, p)
        h.update(b"\0")
    return h.hexdigest()


def catalog_digest() -> str:
    from optimizer.catalog.paths import data_dir
    return hashlib.sha256((tree_digest(data_dir("models")) + tree_digest(data_dir("hardware"))).encode()).hexdigest()


def query_key(q: Query, catalog: str) -> str:
    payload = {"query": q.model_dump(mode="json"), "catalog": catalog, "version": __version__,
               "schema": RESULT_SCHEMA}
    p = Path(q.model)
    if p.is_absolute() and p.exists():  # a config/GGUF path: its content is part of the question
        payload["model_digest"] = tree_digest(p)
    else:
        from optimizer.catalog.hub import parse_hub_id
        from optimizer.catalog.models import catalogue_key_for_hub_id, resolve_model
        hub = parse_hub_id(q.model)
        if hub is not None and not (hub[1] is None and catalogue_key_for_hub_id(hub[0])):
            # a Hugging Face id names a moving target: what the Hub (or its cache) serves now is the question
            m = resolve_model(q.model)
            wf = m.weights_file
            payload["model_digest"] = json.dumps([m.spec.content_key, sorted(m.storage.items()),
                                                  int(getattr(wf, "file_bytes", 0) or 0)])
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def mixed_key(q, catalog: str) -> str:
    """Key of a mixed-inventory question (`hetero.query.MixedQuery`): the same recipe, its own result schema."""
    from optimizer.hetero.query import MIXED_RESULT_SCHEMA
    payload = {"mixed_query": q.model_dump(mode="json"), "catalog": catalog, "version": __version__,
               "schema": MIXED_RESULT_SCHEMA}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ResultCache:
    def __init__(self, root: Path | str | None):
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> CheapestResult | None:
        if self.root is None:
            return None
        p = self._path(key)
        try:
            from optimizer.errors import InputError
            from optimizer.limits import MAX_PLAN_BYTES, read_bounded
            r = CheapestResult.model_validate_json(read_bounded(p, MAX_PLAN_BYTES, "cache entry"))
        except (OSError, ValueError, InputError):
            self.misses += 1
            return None
        self.hits += 1
        return r

    def put(self, key: str, result: CheapestResult) -> None:
        self._write(key, result.model_dump_json())

    def get_mixed(self, key: str) -> dict | None:
        """A cached rigopt.mixed-result/1 answer (a JSON object of that schema), or None (a miss)."""
        if self.root is None:
            return None
        try:
            from optimizer.errors import InputError
            from optimizer.hetero.query import MIXED_RESULT_SCHEMA
            from optimizer.limits import MAX_PLAN_BYTES, read_bounded
            r = json.loads(read_bounded(self._path(key), MAX_PLAN_BYTES, "cache entry"))
        except (OSError, ValueError, InputError):
            self.misses += 1
            return None
        if not (isinstance(r, dict) and r.get("schema_id") == MIXED_RESULT_SCHEMA
                and isinstance(r.get("plan"), (dict, type(None))) and isinstance(r.get("query"), dict)):
            self.misses += 1
            return None
        self.hits += 1
        return r

    def put_mixed(self, key: str, result: dict) -> None:
        self._write(key, json.dumps(result))

    def _write(self, key: str, text: str) -> None:
        if self.root is None:
            return
        p = self._path(key)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, p)
        except OSError:  # the cache is an optimisation: an unwritable entry is a miss next time
            return
