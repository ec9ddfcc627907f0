"""Pydantic schema of a model card (models/<key>/card.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optimizer.arch.spec import TENSOR_CLASSES


class SpecDecodeDefault(BaseModel):
    """A published speculative-decoding setup for this model: the draft, how many tokens it proposes per step,
    and the mean accepted length measured for it (tokens emitted per target verification step, bonus included)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["mtp", "eagle3"]
    num_speculative_tokens: int = Field(ge=1, le=16)
    accept_len: float = Field(gt=1.0, le=17.0)
    draft_model: str | None = None         # HF id of a separate draft head (EAGLE-3); None for built-in MTP layers
    draft_params: float | None = Field(default=None, gt=0)  # parameters of that head (None: from the config)
    source: str


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    name: str
    hf_id: str
    aliases: list[str] = Field(default_factory=list)
    family: str
    config_source: str
    total_params: float | None = None
    active_params: float | None = None
    params_source: str | None = None
    checkpoint_bytes: int | None = None
    checkpoint_source: str | None = None
    storage: dict[str, str]
    storage_source: str
    license: str | None = None
    released: str | None = None
    smaller_alternative: bool = False
    spec_decoding: list[SpecDecodeDefault] = Field(default_factory=list)
    notes: str = ""

    @field_validator("storage")
    @classmethod
    def _storage_classes(cls, v: dict[str, str]) -> dict[str, str]:
        allowed = set(TENSOR_CLASSES) | {"default", "mtp"}
        bad = [k for k in v if k not in allowed]
        if bad:
            raise ValueError(f"unknown tensor class(es) {bad}; allowed: {sorted(allowed)}")
        if "default" not in v:
            raise ValueError("storage needs a 'default' format")
        from optimizer.arch.formats import get_format
        for fmt in v.values():
            get_format(fmt)
        return v
