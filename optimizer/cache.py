"""The one cache mechanism: bounded LRU maps keyed by content, never by `id()`.

    _CACHE: BoundedCache[tuple[str, int], float] = BoundedCache("speed.decode", maxsize=4096)
    value = _CACHE.get_or_compute((fingerprint(spec), n), lambda: expensive(spec, n))

    @memoize("catalog.models", maxsize=64)       # the same, as a decorator keyed by the (hashable) arguments
    def load(key: str) -> Model: ...

Keys are hashable values built from what the result depends on; `fingerprint` digests objects that are not
hashable or are large (numpy arrays, pydantic models, dataclasses, nested containers) into a short hex string
of their content. Every cache registers itself, so `clear_all()` resets them (tests, catalogue reloads) and
`stats()` reports hits and sizes.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import wraps
from typing import Any, Generic, ParamSpec, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = ParamSpec("P")
T = TypeVar("T")

_REGISTRY: list[BoundedCache[Any, Any]] = []


class BoundedCache(Generic[K, V]):
    """A least-recently-used map of at most `maxsize` entries (thread-safe; values computed outside the lock)."""

    def __init__(self, name: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.name = name
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        _REGISTRY.append(self)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        with self._lock:
            data = self._data
            try:
                value = data[key]  # hashes the key once on a hit (then move_to_end), not three times
            except KeyError:
                self.misses += 1
            else:
                data.move_to_end(key)
                self.hits += 1
                return value
        value = compute()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


def memoize(name: str, maxsize: int) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorator: a BoundedCache keyed by the call's arguments (which must be hashable values, such as keys,
    paths with size and mtime, or fingerprints). `f.cache_clear()` empties it, as with functools.lru_cache."""
    def wrap(fn: Callable[P, T]) -> Callable[P, T]:
        cache: BoundedCache[Hashable, T] = BoundedCache(name, maxsize)

        @wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            key = (args, tuple(sorted(kwargs.items()))) if kwargs else args
            return cache.get_or_compute(key, lambda: fn(*args, **kwargs))

        setattr(call, "cache", cache)  # noqa: B010 (a function's attribute mypy does not know: setattr, not .cache)
        setattr(call, "cache_clear", cache.clear)  # noqa: B010
        return call
    return wrap


def clear_all() -> None:
    """Empty every registered cache."""
    for c in _REGISTRY:
        c.clear()


def stats() -> dict[str, dict[str, int]]:
    """Hits, misses, size and bound of every registered cache, by name."""
    return {c.name: {"hits": c.hits, "misses": c.misses, "size": len(c), "maxsize": c.maxsize} for c in _REGISTRY}


def fingerprint(obj: object) -> str:
    """A stable digest (16 hex digits of BLAKE2b) of an object's content: numpy arrays by dtype, shape and bytes;
    pydantic models and dataclasses by their fields; mappings, sequences and scalars by value. Equal content
    gives equal fingerprints across processes; different content collides with negligible probability."""
    h = hashlib.blake2b(digest_size=8)
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: object) -> None:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(json.dumps(obj).encode() + b"\x00")
        return
    if isinstance(obj, bytes):
        h.update(b"b%d:" % len(obj) + obj)
        return
    tobytes = getattr(obj, "tobytes", None)
    if callable(tobytes) and hasattr(obj, "dtype") and hasattr(obj, "shape"):   # numpy array or scalar
        h.update(f"nd{obj.dtype.str}{obj.shape}:".encode())
        h.update(tobytes())
        return
    dump = getattr(obj, "model_dump", None)
    if callable(dump):                                                           # pydantic model
        h.update(f"pm{type(obj).__qualname__}:".encode())
        _feed(h, dump(mode="python"))
        return
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(f"dc{type(obj).__qualname__}:".encode())
        for f in dataclasses.fields(obj):
            h.update(f.name.encode() + b"=")
            _feed(h, getattr(obj, f.name))
        return
    if isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b"}")
        return
    if isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
        return
    if isinstance(obj, (set, frozenset)):
        h.update(b"s{")
        for d in sorted(fingerprint(v) for v in obj):
            h.update(d.encode())
        h.update(b"}")
        return
    raise TypeError(f"fingerprint: cannot digest {type(obj).__name__}; pass its content instead")


_GC_LOCK = threading.Lock()
_GC_DEPTH = [0, False]  # calls inside without_gc, and whether the collector was on when the first one began


def without_gc(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn` with Python's cyclic garbage collector paused while it runs (on again after, if it was on).

    A search builds tens of thousands of short-lived objects and almost no reference cycles; every generation-2
    collection it triggers walks every live object (the catalogues, the rows kept so far) and frees nothing. On the
    default `cheapest` question that was a quarter to a third of the search's CPU time (in-process). Reference
    counting still frees what is dropped; cycles wait for the next collection after `fn` returns. Nested and
    concurrent calls (threads of `rigopt serve`) turn it back on only when the last one ends."""

    @wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with _GC_LOCK:
            if _GC_DEPTH[0] == 0:
                _GC_DEPTH[1] = gc.isenabled()
                gc.disable()
            _GC_DEPTH[0] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with _GC_LOCK:
                _GC_DEPTH[0] -= 1
                if _GC_DEPTH[0] == 0 and _GC_DEPTH[1]:
                    gc.enable()

    return run
