"""Ollama library tags (models/ollama-tags.yaml): which tag downloads which catalogue model at which quant."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optimizer.cache import memoize
from optimizer.catalog.paths import data_dir
from optimizer.limits import load_yaml

TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*:[a-z0-9][a-z0-9._-]*$")


class OllamaTag(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tag: str = Field(max_length=100)
    model: str = Field(max_length=100)
    quant: str = Field(max_length=40)
    size_gb: float | None = None       # download size the library page prints (GB = 10^9 bytes), null = not read
    source: str = Field(min_length=8)
    as_of: str

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not TAG_RE.match(v):
            raise ValueError(f"not an Ollama model tag: {v!r}")
        return v


@memoize("catalog.ollama_tags", maxsize=2)
def load_ollama_tags() -> tuple[OllamaTag, ...]:
    path = data_dir("models") / "ollama-tags.yaml"
    if not path.exists():
        return ()
    rows = load_yaml(path.read_text()) or []
    return tuple(OllamaTag.model_validate(r) for r in rows)


def tag_for(model: str, quant: str) -> OllamaTag | None:
    """The library tag that downloads `model` at `quant`, if the table has one."""
    return next((t for t in load_ollama_tags() if t.model == model and t.quant == quant), None)
