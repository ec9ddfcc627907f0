"""Pydantic schema of a model card (models/<key>/card.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optimizer.arch.spec import TENSOR_CLASSES


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
        from optimizer.estimate.formats import get_format
        for fmt in v.values():
            get_format(fmt)
        return v
