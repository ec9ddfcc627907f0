"""A mixed-hardware plan: stages in device order, each a contiguous layer range on one device, with the MoE layers
whose routed experts stay on that GPU, go to host DRAM (CPU) or to NVMe. Concrete layer lists are derived from the
solver's counts: inside a block the first `gpu` MoE layers keep their experts on the GPU, the next `cpu` go to DRAM,
the last `nvme` to NVMe (all MoE layers of a model have equally sized experts, so which ones is immaterial)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from optimizer.hetero.table import Assignment, Instance


@dataclass(frozen=True)
class Stage:
    uid: str  # "box0/cuda1" or "box0/buy-rtx-5090-0"
    box: int
    accelerator: str
    owned: bool
    start: int  # first main layer
    end: int  # one past the last
    gpu_expert_layers: tuple[int, ...]
    cpu_expert_layers: tuple[int, ...]
    nvme_expert_layers: tuple[int, ...]

    @property
    def layers(self) -> range:
        return range(self.start, self.end)


@dataclass(frozen=True)
class MixedPlan:
    model: str
    quant: str
    engine: str
    kv_dtype: str
    context: int
    concurrency: int
    inventory: str
    stages: tuple[Stage, ...]
    dram_bought_gb: tuple[int, ...]  # per box
    bought: tuple[str, ...]  # accelerator keys bought
    cost_usd: float
    step_time_s: float  # float re-evaluation (validate.py)
    tok_s: float
    status: str
    solve_s: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    # the decode speed's interval from rigopt's cross-validated errors (optimizer/estimate/uncertainty.py), and
    # whether the tok/s target was held at its low end (cheapest_mixed's confidence)
    confidence: float = 0.0
    tok_s_low: float | None = None
    tok_s_high: float | None = None
    trust_regime: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema_id"] = "rigopt.mixed-plan/1"
        return d


def stages_of(inst: Instance, a: Assignment) -> tuple[Stage, ...]:
    out = []
    for d, s, e, g, c, n in a.stages:
        r = inst.devs[d]
        moe = [l for l in range(s, e) if inst.moe[l]]
        out.append(
            Stage(
                uid=r.uid,
                box=r.box,
                accelerator=r.acc,
                owned=r.owned,
                start=s,
                end=e,
                gpu_expert_layers=tuple(moe[:g]),
                cpu_expert_layers=tuple(moe[g : g + c]),
                nvme_expert_layers=tuple(moe[g + c : g + c + n]),
            )
        )
    return tuple(out)
