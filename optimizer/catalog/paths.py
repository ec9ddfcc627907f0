"""Find the data folders (`models/`, `hardware/`, `measurements/`) from a checkout or an installed wheel."""

from __future__ import annotations

import os
from pathlib import Path

from optimizer.cache import memoize

_PKG = Path(__file__).resolve().parent.parent  # .../optimizer


@memoize("catalog.data_dir", maxsize=8)
def data_dir(name: str) -> Path:
    """Return the folder holding data set `name` ("models", "hardware" or "measurements").

    Order: $RIGOPT_DATA_DIR/<name>, the wheel's optimizer/_data/<name>, the checkout's top-level <name>.
    """
    env = os.environ.get("RIGOPT_DATA_DIR")
    candidates = []
    if env:
        candidates.append(Path(env) / name)
    candidates += [_PKG / "_data" / name, _PKG.parent / name]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"rigopt data folder '{name}' not found (looked in {', '.join(map(str, candidates))})")
