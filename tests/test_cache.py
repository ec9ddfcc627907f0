"""The one cache mechanism (optimizer/cache.py): bounded, least-recently-used, keyed by content."""

import dataclasses

import numpy as np
import pytest

from optimizer.cache import BoundedCache, clear_all, fingerprint, memoize, stats


def test_bounded_lru_evicts_the_least_recently_used():
    c: BoundedCache[str, int] = BoundedCache("test.lru", maxsize=2)
    calls = []

    def compute(k):
        calls.append(k)
        return len(k)

    assert c.get_or_compute("a", lambda: compute("a")) == 1
    assert c.get_or_compute("bb", lambda: compute("bb")) == 2
    assert c.get_or_compute("a", lambda: compute("a")) == 1       # hit: "a" becomes most recent
    c.get_or_compute("ccc", lambda: compute("ccc"))                # evicts "bb", not "a"
    assert len(c) == 2 and "a" in c and "bb" not in c and "ccc" in c
    assert calls == ["a", "bb", "ccc"] and c.hits == 1 and c.misses == 3
    with pytest.raises(ValueError):
        BoundedCache("test.bad", 0)


def test_fingerprint_is_by_content_not_identity():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    b = a.copy()
    assert a is not b and fingerprint(a) == fingerprint(b)
    b[0, 0] = 99
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) != fingerprint(a.astype(np.float32))        # dtype is content
    assert fingerprint(a) != fingerprint(a.reshape(4, 3))              # so is shape

    @dataclasses.dataclass
    class P:
        x: int
        y: list

    assert fingerprint(P(1, [2, 3])) == fingerprint(P(1, [2, 3])) != fingerprint(P(1, [3, 2]))
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint((1, "1")) != fingerprint(("1", 1))
    with pytest.raises(TypeError):
        fingerprint(object())


def test_memoize_is_bounded_and_clearable():
    calls = []

    @memoize("test.memo", maxsize=2)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert [square(2), square(2), square(3), square(4), square(2)] == [4, 4, 9, 16, 4]
    assert calls == [2, 3, 4, 2]                      # 2 was evicted by 3 and 4, then recomputed
    assert stats()["test.memo"]["size"] == 2
    square.cache_clear()
    assert stats()["test.memo"]["size"] == 0
    square(5)
    clear_all()
    assert stats()["test.memo"]["size"] == 0


def test_without_gc_pauses_and_restores_the_collector():
    """The collector is off inside (nested calls too) and back as it was after, also when the call raises."""
    import gc

    from optimizer.cache import without_gc

    seen = []

    @without_gc
    def inner():
        seen.append(gc.isenabled())

    @without_gc
    def outer(fail: bool):
        seen.append(gc.isenabled())
        inner()
        seen.append(gc.isenabled())
        if fail:
            raise ValueError("boom")

    was = gc.isenabled()
    try:
        gc.enable()
        outer(False)
        assert seen == [False, False, False] and gc.isenabled()
        with pytest.raises(ValueError):
            outer(True)
        assert gc.isenabled()
        gc.disable()  # off before: stays off after
        outer(False)
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
