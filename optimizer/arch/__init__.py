"""Model architecture, normalised from a config.json, a safetensors index or a GGUF header.

`ModelSpec` is the one shape the physics layer reads: per-layer parameter counts by tensor class,
per-layer KV-cache streams, and a few global dimensions. It holds counts, never bytes: bytes depend on
the quantization and the engine, which the estimate layer applies.
"""

from optimizer.arch.spec import TENSOR_CLASSES, KVStream, LayerSpec, ModelSpec

__all__ = ["KVStream", "LayerSpec", "ModelSpec", "TENSOR_CLASSES"]
