"""Units and human-friendly parsing. GB = 10^9 bytes, GiB = 2^30 bytes; never mixed silently."""

from __future__ import annotations

import re

from optimizer.errors import InputError

KB, MB, GB, TB = 10**3, 10**6, 10**9, 10**12
KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40

MAX_CONCURRENCY = 1_000_000
MAX_DEVICES = 65_536
MAX_CONTEXT_TOKENS = 2**27  # 134M tokens: far beyond any model; rejects absurd input early

_TOKEN_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_tokens(text: str | int) -> int:
    """Parse a token count: 393216, '384K' (=393216), '384k' (=393216), '1M' (=1048576).

    K and M are binary (1024, 1048576), matching how context windows are named
    (a "128K" model has 131072 positions).
    """
    if isinstance(text, int):
        value = text
    else:
        m = _TOKEN_RE.match(str(text))
        if not m:
            raise InputError(f"cannot read token count {text!r}: use an integer, or a number with K or M (384K = "
                             "393216)")
        num, suffix = m.groups()
        mult = {"": 1, "k": 1024, "m": 1024 * 1024}[suffix.lower()]
        f = float(num) * mult
        if f != int(f):
            raise InputError(f"token count {text!r} is not a whole number of tokens")
        value = int(f)
    if value <= 0:
        raise InputError(f"token count must be positive, got {text!r}")
    if value > MAX_CONTEXT_TOKENS:
        raise InputError(f"token count {text!r} is larger than {MAX_CONTEXT_TOKENS} tokens")
    return value


_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]i?[bB]?|[bB])?\s*$")
_BYTE_MULT = {"": 1, "b": 1, "k": KB, "kb": KB, "m": MB, "mb": MB, "g": GB, "gb": GB, "t": TB, "tb": TB,
              "ki": KiB, "kib": KiB, "mi": MiB, "mib": MiB, "gi": GiB, "gib": GiB, "ti": TiB, "tib": TiB}


def parse_bytes(text: str | int) -> int:
    """Parse '256GB' (decimal), '256GiB' (binary), '1.5TB', or a plain byte count."""
    if isinstance(text, int):
        return text
    m = _BYTES_RE.match(str(text))
    if not m:
        raise InputError(f"cannot read size {text!r}: use e.g. 256GB, 192GiB or 1.5TB")
    num, unit = m.groups()
    mult = _BYTE_MULT.get((unit or "").lower())
    if mult is None:
        raise InputError(f"unknown size unit in {text!r}")
    value = int(round(float(num) * mult))
    if value < 0:
        raise InputError(f"size must not be negative: {text!r}")
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
