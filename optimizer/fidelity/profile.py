"""The user profile of `rigopt calibrate`: per-system correction factors with their provenance (YAML).

Where: `--profile FILE`, else `$XDG_CONFIG_HOME/rigopt/profile.yaml`, else `~/.config/rigopt/profile.yaml`.
Every fitted run is kept (metric, ratio, file, line, sha256 of the file), so calibrating more logs adds rows and
the factors are recomputed as geometric means over all of them; the same log line calibrated twice counts once.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optimizer import __version__
from optimizer.errors import InputError
from optimizer.estimate.calibration import MAX_FACTOR, MIN_FACTOR, Calibration, CalibrationEntry
from optimizer.limits import (
    MAX_LIST_ITEMS,
    MAX_NAME_CHARS,
    MAX_NESTING,
    MAX_PATH_CHARS,
    MAX_PROFILE_BYTES,
    clip_for_message,
    read_text_bounded,
    yaml_depth,
)

SCHEMA = "rigopt.profile/1"
FIT_METRICS = ("decode", "prefill", "weights", "kv_pool")
Name = str


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Run(_M):
    metric: Literal["decode", "prefill", "weights", "kv_pool"]
    ratio: float = Field(ge=MIN_FACTOR, le=MAX_FACTOR)   # measured / predicted (speed, or bytes for memory)
    measured: float
    predicted: float
    unit: str = Field(max_length=16)
    source: str = Field(max_length=MAX_PATH_CHARS)   # log file name:line
    sha256: str = Field(max_length=64)


class Entry(_M):
    accelerator: str = Field(max_length=MAX_NAME_CHARS)
    gpus: int = Field(ge=1)
    engine: str = Field(max_length=16)
    model: str | None = Field(default=None, max_length=MAX_NAME_CHARS)   # None: every model on this system
    quant: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    factors: dict[str, float] = Field(default_factory=dict)   # geometric means of `runs`, per metric
    runs: list[Run] = Field(default_factory=list, max_length=MAX_LIST_ITEMS * 10)


class Provenance(_M):
    file: str = Field(max_length=MAX_PATH_CHARS)
    sha256: str = Field(max_length=64)
    date: str = Field(max_length=32)
    rigopt_version: str = Field(max_length=32)
    rows: int = Field(ge=0)


class Profile(_M):
    schema_id: Literal["rigopt.profile/1"] = "rigopt.profile/1"
    entries: list[Entry] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    provenance: list[Provenance] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rigopt" / "profile.yaml"


def sha256_of(path: str) -> str:
    from optimizer.limits import MAX_LOG_BYTES, read_bounded
    return hashlib.sha256(read_bounded(path, MAX_LOG_BYTES, "log")).hexdigest()


def read_profile(path: Path) -> Profile:
    """The profile at `path` (an empty one when the file does not exist)."""
    if not path.exists():
        return Profile()
    label = clip_for_message(str(path))
    text = read_text_bounded(path, MAX_PROFILE_BYTES, "profile")
    try:
        if yaml_depth(text) > MAX_NESTING:
            raise InputError(f"profile {label}: nested deeper than {MAX_NESTING} levels")
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"profile {label}: malformed YAML ({str(e).splitlines()[0]})") from None
    if raw is None:
        return Profile()
    try:
        return Profile.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise InputError(f"profile {label}: {loc}: {err['msg']}") from None


def write_profile(path: Path, prof: Profile) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(prof.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
        tmp.replace(path)
    except OSError as e:
        raise InputError(f"profile {clip_for_message(str(path))}: cannot write ({e.strerror})") from None


def _geomean(xs: list[float]) -> float:
    import math
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def merge(prof: Profile, runs: list[tuple[tuple[str, int, str, str | None, str | None], Run]],
          provenance: list[Provenance]) -> Profile:
    """`prof` with the new runs added to their entries (a run already there, same file hash, line and metric,
    is not added again) and every entry's factors recomputed."""
    entries = {(e.accelerator, e.gpus, e.engine, e.model, e.quant): e.model_copy(deep=True) for e in prof.entries}
    for key, run in runs:
        e = entries.get(key)
        if e is None:
            e = entries[key] = Entry(accelerator=key[0], gpus=key[1], engine=key[2], model=key[3], quant=key[4])
        if not any((r.sha256, r.source, r.metric) == (run.sha256, run.source, run.metric) for r in e.runs):
            e.runs.append(run)
    out = []
    for key in sorted(entries, key=lambda k: (k[0], k[1], k[2], k[3] or "", k[4] or "")):
        e = entries[key]
        e.runs.sort(key=lambda r: (r.metric, r.source, r.sha256))
        e.factors = {m: round(_geomean([r.ratio for r in e.runs if r.metric == m]), 6)
                     for m in FIT_METRICS if any(r.metric == m for r in e.runs)}
        out.append(e)
    prov = {(p.sha256, p.file): p for p in prof.provenance}
    for p in provenance:
        prov[(p.sha256, p.file)] = p
    return Profile(entries=out, provenance=sorted(prov.values(), key=lambda p: (p.date, p.file, p.sha256)))


def provenance_for(path: str, sha: str, rows: int) -> Provenance:
    return Provenance(file=Path(path).name, sha256=sha, date=_dt.datetime.now(_dt.UTC).date().isoformat(),
                      rigopt_version=__version__, rows=rows)


def calibration_of(prof: Profile, label: str) -> Calibration | None:
    """The speed factors of a profile as evaluate() takes them (memory factors are recorded, not applied)."""
    entries = []
    for e in prof.entries:
        n = {m: sum(1 for r in e.runs if r.metric == m) for m in ("decode", "prefill")}
        if not (n["decode"] or n["prefill"]):
            continue
        entries.append(CalibrationEntry(accelerator=e.accelerator, gpus=e.gpus, engine=e.engine, model=e.model,
                                        quant=e.quant, decode=e.factors.get("decode") if n["decode"] else None,
                                        decode_runs=n["decode"],
                                        prefill=e.factors.get("prefill") if n["prefill"] else None,
                                        prefill_runs=n["prefill"]))
    return Calibration(entries=tuple(entries), profile=label) if entries else None


def load_calibration(profile: str | None, no_profile: bool) -> Calibration | None:
    """What `estimate`/`cheapest` apply: None with --no-profile; --profile FILE must exist; the default profile
    is used when present."""
    if no_profile:
        if profile:
            raise InputError("--profile and --no-profile exclude each other")
        return None
    if profile:
        p = Path(profile).expanduser()
        if not p.exists():
            raise InputError(f"--profile {clip_for_message(profile)}: no such file (write one with rigopt calibrate)")
    else:
        p = default_path()
        if not p.exists():
            return None
    return calibration_of(read_profile(p), str(p))
