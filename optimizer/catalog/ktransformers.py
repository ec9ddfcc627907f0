"""KTransformers' support matrix (`hardware/ktransformers.yaml`): --kt-method values with the host ISA and expert
weight formats each serves, and the models (by architecture) with their documented methods and validated GPU
architectures. The rule that applies it lives in optimizer/solver/support.py."""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from optimizer.arch.formats import get_format
from optimizer.cache import memoize
from optimizer.catalog.paths import data_dir
from optimizer.errors import CatalogError, InputError
from optimizer.limits import load_yaml

Isa = Literal["avx2", "avx512", "amx"]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KtMethod(_Row):
    method: str
    isa: tuple[Isa, ...] = Field(min_length=1)   # any one of these
    expert_formats: tuple[str, ...] = Field(min_length=1)
    converted: bool = False                      # CPU experts written by kt-kernel's converter
    source: str = Field(min_length=1)


class KtModel(_Row):
    name: str
    architectures: tuple[str, ...] = Field(min_length=1)
    model_types: tuple[str, ...] = ()
    methods: tuple[str, ...] = Field(min_length=1)
    gpu_archs: tuple[str, ...] = Field(min_length=1)  # validated in KTransformers' docs
    sglang_build: str = ""                           # a build other than upstream SGLang that the model needs
    source: str = Field(min_length=1)


class KtMatrix(_Row):
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    repository: str
    methods: tuple[KtMethod, ...]
    models: tuple[KtModel, ...]

    @model_validator(mode="after")
    def _check(self) -> KtMatrix:
        names = [m.method for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError("duplicate method")
        for m in self.methods:
            for f in m.expert_formats:
                try:
                    get_format(f)
                except InputError as exc:
                    raise ValueError(f"method {m.method}: {exc}") from None
        for row in self.models:
            unknown = set(row.methods) - set(names)
            if unknown:
                raise ValueError(f"model {row.name!r}: unknown methods {sorted(unknown)}")
        return self

    def method(self, name: str) -> KtMethod:
        return next(m for m in self.methods if m.method == name)

    def model_row(self, architecture: str, model_type: str = "") -> KtModel | None:
        """The row documenting a model, by its Hugging Face architecture or config model_type (None: undocumented)."""
        for row in self.models:
            if architecture in row.architectures or (model_type and model_type in row.model_types):
                return row
        return None

    def cite(self, path: str) -> str:
        return f"{self.repository} {path} at commit {self.commit}"


@memoize("catalog.ktransformers", maxsize=1)
def load_kt_matrix() -> KtMatrix:
    path = data_dir("hardware") / "ktransformers.yaml"
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
        return KtMatrix.model_validate(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path.name}: {exc}") from exc
    except ValidationError as exc:
        raise CatalogError(f"{path.name}: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
