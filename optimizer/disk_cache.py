"""Results that cost a fresh process real time and depend only on the catalogue and rigopt's own code, kept on disk
between runs (the topology summaries: the links a plan's TP/EP/PP groups cross on a node type).

- Where: `$RIGOPT_CACHE_DIR`, else `$XDG_CACHE_HOME/rigopt`, else `~/.cache/rigopt`. Safe to delete at any time.
  `RIGOPT_NO_DISK_CACHE=1` turns it off (nothing read, nothing written).
- Never stale: a table's file name carries a digest of everything its values depend on (the hardware catalogue
  files' bytes and the source files of the code that computes them), so a changed catalogue or a new rigopt
  version reads a different file. A file that cannot be read or parsed is ignored (recomputed); a failed write is
  ignored (the answer never depends on the cache).
- Values are JSON numbers, stored with `repr` precision (floats round-trip exactly), so an answer from the cache
  is byte-identical to a computed one.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_ENV_DIR, _ENV_OFF = "RIGOPT_CACHE_DIR", "RIGOPT_NO_DISK_CACHE"


def cache_root() -> Path | None:
    if os.environ.get(_ENV_OFF, "") not in ("", "0"):
        return None
    if os.environ.get(_ENV_DIR):
        return Path(os.environ[_ENV_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rigopt"


def digest_files(paths: Iterable[Path]) -> str:
    """sha256 over the files' names and bytes, in the order given."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


class DiskTable:
    """A JSON map `str -> list[float]` kept in one file per content digest; loaded once, written at exit."""

    def __init__(self, name: str, digest: str) -> None:
        self.name, self.digest = name, digest
        self._data: dict[str, list[float]] | None = None
        self._dirty = False
        self._lock = threading.Lock()
        self._registered = False

    def _path(self) -> Path | None:
        root = cache_root()
        return None if root is None else root / f"{self.name}-{self.digest[:20]}.json"

    def _load(self) -> dict[str, list[float]]:
        if self._data is None:
            self._data = {}
            p = self._path()
            if p is not None:
                try:
                    raw = json.loads(p.read_text()) if p.is_file() and p.stat().st_size < 64 * 2**20 else {}
                    if isinstance(raw, dict) and raw.get("digest") == self.digest:
                        vals = raw.get("values", {})
                        self._data = {k: [float(x) for x in v] for k, v in vals.items() if isinstance(v, list)}
                except (OSError, ValueError, TypeError, AttributeError):
                    self._data = {}
        return self._data

    def get(self, key: str) -> list[float] | None:
        with self._lock:
            return self._load().get(key)

    def snapshot(self) -> dict[str, list[float]]:
        """A copy of every entry, in the order they were stored."""
        with self._lock:
            return {k: list(v) for k, v in self._load().items()}

    def put(self, key: str, value: list[float]) -> None:
        with self._lock:
            self._load()[key] = value
            self._dirty = True
            if not self._registered:
                atexit.register(self.flush)
                self._registered = True

    def flush(self) -> None:
        """Write the table (atomically: a temporary file renamed over the old one); errors are ignored."""
        with self._lock:
            p = self._path()
            if not self._dirty or p is None or self._data is None:
                return
            body: dict[str, Any] = {"digest": self.digest, "values": self._data}
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name, suffix=".tmp")
                with os.fdopen(fd, "w") as f:
                    json.dump(body, f, separators=(",", ":"))
                os.replace(tmp, p)
                self._dirty = False
            except OSError:
                try:
                    os.unlink(tmp)
                except (OSError, UnboundLocalError):
                    pass
