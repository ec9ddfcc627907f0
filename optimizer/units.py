"""Units and human-friendly parsing. GB = 10^9 bytes, GiB = 2^30 bytes; never mixed silently."""

from __future__ import annotations

import re

from optimizer.errors import InputError
from optimizer.limits import (  # noqa: F401
    MAX_CONCURRENCY,
    MAX_CONTEXT_TOKENS,
    MAX_GPUS,
    MAX_NUMBER_CHARS,
    MAX_SIZE_BYTES,
    clip_for_message,
)

KB, MB, GB, TB = 10**3, 10**6, 10**9, 10**12
KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40

MAX_DEVICES = MAX_GPUS  # names kept for importers; the limits live in optimizer.limits

_TOKEN_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_tokens(text: str | int) -> int:
    """Parse a token count: 393216, '384K' (=393216), '384k' (=393216), '1M' (=1048576).

    K and M are binary (1024, 1048576), matching how context windows are named
    (a "128K" model has 131072 positions).
    """
    if isinstance(text, bool):
        raise InputError("expected a token count, got a boolean")
    if isinstance(text, int):
        value = text
    else:
        m = _TOKEN_RE.match(str(text)) if len(str(text)) <= MAX_NUMBER_CHARS else None
        if not m:
            raise InputError(f"cannot read token count {clip_for_message(text)}: use an integer, "
                             "or a number with K or M (384K = 393216)")
        num, suffix = m.groups()
        mult = {"": 1, "k": 1024, "m": 1024 * 1024}[suffix.lower()]
        f = float(num) * mult
        if f > MAX_CONTEXT_TOKENS:
            raise InputError(f"token count {clip_for_message(text)} is larger than {MAX_CONTEXT_TOKENS} tokens")
        if f != int(f):
            raise InputError(f"token count {clip_for_message(text)} is not a whole number of tokens")
        value = int(f)
    if value <= 0:
        raise InputError(f"token count must be positive, got {clip_for_message(text)}")
    if value > MAX_CONTEXT_TOKENS:
        raise InputError(f"token count {clip_for_message(text)} is larger than {MAX_CONTEXT_TOKENS} tokens")
    return value


_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]i?[bB]?|[bB])?\s*$")
_BYTE_MULT = {"": 1, "b": 1, "k": KB, "kb": KB, "m": MB, "mb": MB, "g": GB, "gb": GB, "t": TB, "tb": TB,
              "ki": KiB, "kib": KiB, "mi": MiB, "mib": MiB, "gi": GiB, "gib": GiB, "ti": TiB, "tib": TiB}


def parse_bytes(text: str | int) -> int:
    """Parse '256GB' (decimal), '256GiB' (binary), '1.5TB', or a plain byte count."""
    if isinstance(text, bool):
        raise InputError("expected a size, got a boolean")
    if isinstance(text, int):
        if not 0 <= text <= MAX_SIZE_BYTES:
            raise InputError(f"size {clip_for_message(text)} bytes is out of range (0..{MAX_SIZE_BYTES})")
        return text
    m = _BYTES_RE.match(str(text)) if len(str(text)) <= MAX_NUMBER_CHARS else None
    if not m:
        raise InputError(f"cannot read size {clip_for_message(text)}: use e.g. 256GB, 192GiB or 1.5TB")
    num, unit = m.groups()
    mult = _BYTE_MULT.get((unit or "").lower())
    if mult is None:
        raise InputError(f"unknown size unit in {clip_for_message(text)}")
    f = float(num) * mult
    if not f <= MAX_SIZE_BYTES:
        raise InputError(f"size {clip_for_message(text)} is larger than {MAX_SIZE_BYTES:,} bytes (1 EiB)")
    value = int(round(f))
    if value < 0:
        raise InputError(f"size must not be negative: {clip_for_message(text)}")
    return value


def fmt_gb(n: float) -> str:
    return f"{n / GB:,.2f} GB"


def fmt_gib(n: float) -> str:
    return f"{n / GiB:,.2f} GiB"


def fmt_tokens(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)}M"
    if n % 1024 == 0:
        return f"{n // 1024}K"
    return str(n)
