"""Weight bytes per tensor class, per layer, for a quantization scheme."""

from __future__ import annotations

from dataclasses import dataclass

from optimizer.arch.formats import get_format
from optimizer.arch.spec import ModelSpec
from optimizer.arch.weights_file import WeightsFile
from optimizer.estimate.schemes import Scheme


def class_bytes(params: int, scheme: Scheme, cls: str, mtp: bool = False) -> float:
    return sum(frac * params * get_format(fmt).bits_per_weight / 8.0 for frac, fmt in scheme.mix(cls, mtp))


@dataclass(frozen=True)
class WeightBreakdown:
    by_class: dict[str, float]          # bytes per tensor class, whole model (MTP included if asked)
    per_layer_experts: tuple[float, ...]  # routed-expert bytes per main layer (0 for dense layers)
    expert_bytes: float                 # bytes of ONE routed expert (largest MoE layer)
    mtp_bytes: float                    # bytes of MTP layers (already included in by_class when include_mtp)
    active_bytes_per_token: float       # bytes read per decoded token at batch 1 (top-k experts, no embed table)
    dense_bytes: float                  # everything except routed experts (main model + MTP if included)

    @property
    def total(self) -> float:
        return sum(self.by_class.values())

    @property
    def routed_expert_bytes(self) -> float:
        return self.by_class.get("routed_experts", 0.0)


def weight_breakdown(spec: ModelSpec, scheme: Scheme, include_mtp: bool = True,
                     include_vision: bool = True) -> WeightBreakdown:
    by: dict[str, float] = {}
    for c, n in spec.global_params.items():
        if c == "vision" and not include_vision:
            continue
        by[c] = by.get(c, 0.0) + class_bytes(n, scheme, c)
    per_layer = []
    mtp = 0.0
    active = sum(class_bytes(n, scheme, c) for c, n in spec.global_params.items() if c not in ("embed", "vision"))
    # the embedding lookup reads one row per token
    active += class_bytes(spec.global_params.get("embed", 0) // max(spec.vocab_size, 1), scheme, "embed")
    expert_one = 0.0
    for layer in spec.layers:
        lb = {c: class_bytes(n, scheme, c, layer.is_mtp) for c, n in layer.params.items()}
        if layer.is_mtp:
            mtp += sum(lb.values())
            if not include_mtp:
                continue
        else:
            per_layer.append(lb.get("routed_experts", 0.0))
            for c, b in lb.items():
                if c == "lookup":
                    continue
                if c == "routed_experts":
                    active += b * layer.experts_per_token / layer.n_routed_experts
                else:
                    active += b
        if layer.n_routed_experts:
            expert_one = max(expert_one, lb.get("routed_experts", 0.0) / layer.n_routed_experts)
        for c, b in lb.items():
            by[c] = by.get(c, 0.0) + b
    total = sum(by.values())
    return WeightBreakdown(by_class=by, per_layer_experts=tuple(per_layer), expert_bytes=expert_one,
                           mtp_bytes=mtp, active_bytes_per_token=active,
                           dense_bytes=total - by.get("routed_experts", 0.0))


def exact_breakdown(spec: ModelSpec, scheme: Scheme, weights_file: WeightsFile) -> WeightBreakdown:
    """Weight breakdown from a real file's tensor table (GGUF / safetensors header): exact bytes per class and
    per layer; the per-token active bytes are the estimate's, scaled to the file's total."""
    from dataclasses import replace
    est = weight_breakdown(spec, scheme)
    by = {k: float(v) for k, v in weights_file.bytes_by_class().items()}
    layer_cls = weights_file.bytes_by_layer_class()
    per_layer = tuple(float(layer_cls.get((i, "routed_experts"), 0.0)) for i in range(len(spec.main_layers)))
    total = sum(by.values())
    scale = total / est.total if est.total else 1.0
    expert_one = max((per_layer[i] / l.n_routed_experts for i, l in enumerate(spec.main_layers) if l.is_moe),
                     default=0.0)
    return replace(est, by_class=by, per_layer_experts=per_layer, expert_bytes=expert_one,
                   active_bytes_per_token=est.active_bytes_per_token * scale,
                   dense_bytes=total - by.get("routed_experts", 0.0))


def weights_of(spec: ModelSpec, scheme: Scheme, weights_file: WeightsFile | None = None, quant: str = "native",
               include_mtp: bool = True) -> WeightBreakdown:
    """The weights a deployment holds: a real file's exact tensor bytes for its own (`native`) format, the
    parameter-count estimate otherwise."""
    if quant == "native" and weights_file is not None and weights_file.tensors:
        return exact_breakdown(spec, scheme, weights_file)
    return weight_breakdown(spec, scheme, include_mtp=include_mtp)
