"""What the GGUF and safetensors readers return (optimizer/arch/from_gguf.py, from_safetensors.py): a model's
tensor table and spec. Kept apart from the readers so the catalogue can name these types without importing the
`gguf` package (and numpy) in every process; from_gguf re-exports them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from optimizer.arch.spec import ModelSpec


@dataclass(frozen=True)
class TensorInfo:
    name: str            # e.g. "blk.12.ffn_up_exps.weight"
    dtype: str           # GGML type name ("Q4_K", "F16", ...) or safetensors dtype ("BF16", "F8_E4M3", ...)
    n_elements: int
    n_bytes: int         # exact bytes in the file for this tensor
    tensor_class: str    # one of optimizer.arch.spec.TENSOR_CLASSES
    layer: int | None    # block index; None for global tensors


@dataclass(frozen=True)
class WeightsFile:
    """Shared result of the GGUF and safetensors readers."""

    path: str
    spec: ModelSpec
    tensors: tuple[TensorInfo, ...]
    file_bytes: int      # total size on disk (sum of all shard files)
    format: str          # "gguf" | "safetensors"

    def bytes_by_class(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for t in self.tensors:
            out[t.tensor_class] += t.n_bytes
        return dict(out)

    def bytes_by_layer_class(self) -> dict[tuple[int | None, str], int]:
        out: dict[tuple[int | None, str], int] = defaultdict(int)
        for t in self.tensors:
            out[(t.layer, t.tensor_class)] += t.n_bytes
        return dict(out)

    def dtypes_by_class(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for t in self.tensors:
            out[t.tensor_class][t.dtype] += t.n_bytes
        return {c: dict(d) for c, d in out.items()}
