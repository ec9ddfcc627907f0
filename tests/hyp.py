"""Example budgets for property tests under the hypothesis profiles of tests/conftest.py."""

from hypothesis import settings


def thorough() -> bool:
    """True under --hypothesis-profile=ci-long."""
    return settings.default.max_examples >= 400


def examples(full: int, fast: int | None = None) -> int:
    """`full` examples under ci-long; `fast` (default: an eighth of full, at least 1) under the default profile."""
    if thorough():
        return full
    return fast if fast is not None else max(1, full // 8)
