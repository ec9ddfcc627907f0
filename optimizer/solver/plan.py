"""A deployment plan: what `cheapest` returns and `export` consumes (schema id rigopt.plan/1)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from optimizer.limits import (
    MAX_CONCURRENCY,
    MAX_CONTEXT_TOKENS,
    MAX_GPUS,
    MAX_GPUS_PER_NODE,
    MAX_LAYERS,
    MAX_NAME_CHARS,
    MAX_NODES,
    MAX_PATH_CHARS,
    MAX_SIZE_BYTES,
)

PLAN_SCHEMA = "rigopt.plan/1"

# Bounds a plan file must respect (optimizer.limits); every plan rigopt writes is far inside them.
Gpus = Annotated[int, Field(ge=1, le=MAX_GPUS)]
Layer = Annotated[int, Field(ge=0, le=MAX_LAYERS)]
Size = Annotated[int, Field(ge=0, le=MAX_SIZE_BYTES)]
Bytes = Annotated[float, Field(le=MAX_SIZE_BYTES, allow_inf_nan=False)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hardware(_P):
    node: Name                 # node type key
    accelerator: Name
    n_nodes: int = Field(ge=1, le=MAX_NODES)
    gpus_per_node: int = Field(ge=1, le=MAX_GPUS_PER_NODE)
    host_dram_bytes: Size      # per node, including any purchased
    extra_dram_bytes: Size     # purchased on top of the node's base RAM (per node)
    owned: bool = False


class ParallelLayout(_P):
    tp: Gpus
    pp: Gpus
    dp: Gpus
    ep: bool
    ep_size: Gpus


class Offload(_P):
    mode: Name                      # none | cpu (CPU computes offloaded experts) | stream (PCIe UVA)
    expert_layers_offloaded: Layer
    offloaded_layers: list[Layer] = Field(max_length=MAX_LAYERS)  # main-layer indices with experts in host DRAM
    host_bytes: Bytes               # host DRAM taken by offloaded experts
    nvme_layers: list[Layer] = Field([], max_length=MAX_LAYERS)  # layers whose experts the CPU reads from NVMe
    nvme_bytes: Bytes = 0.0


class PriceRef(_P):
    """The catalogue offer a plan is priced from (optimizer/catalog/offers.py): who sells or rents it, where, when."""
    offer: Name                 # rent:<provider>/<instance> | buy:<node>[G/slots]
    provider: Name              # the cloud, or "purchase"
    region: Name | None = None
    as_of: Name
    source: str = Field(max_length=MAX_PATH_CHARS)


class Costs(_P):
    capex_usd: float | None
    usd_per_hour: float | None
    power_watts: float
    objective: str
    objective_value: float
    price: PriceRef | None = None  # None: owned hardware, or an objective (power) with no price


class Memory(_P):
    capacity_bytes: Bytes
    budget_bytes: Bytes
    weights_bytes: Bytes
    kv_bytes: Bytes
    runtime_bytes: Bytes
    headroom_bytes: Bytes
    host_used_bytes: Bytes
    host_capacity_bytes: Bytes


class Speed(_P):
    tok_s_per_seq: float
    tok_s_bound_per_seq: float
    tok_s_aggregate: float
    ttft_s: float
    ttft_bound_s: float
    binding: str
    terms_s: dict[str, float]


class EngineSettingsPlan(_P):
    """Engine settings the plan's figures assume; `export` writes these values."""
    max_model_len: int
    max_num_seqs: int                 # vLLM --max-num-seqs, SGLang --max-running-requests, llama.cpp -np
    max_num_batched_tokens: int       # vLLM --max-num-batched-tokens, SGLang --chunked-prefill-size, llama.cpp -ub
    gpu_memory_utilization: float | None = None
    mem_fraction_static: float | None = None
    block_size: int


class ServingPlan(_P):
    """The plan serving its workload (optimizer/estimate/serving.py)."""
    isl: int
    osl: int
    concurrency: int | None
    rate_rps: float | None
    tpot_s: float
    ttft_s: float
    ttft_p90_s: float
    request_rate_rps: float
    output_tok_s: float
    total_tok_s: float
    output_tok_s_per_gpu: float
    admitted_seqs: int
    prefill_share: float
    binding: str


class SpecPlan(_P):
    """Speculative decoding the plan assumes: the draft proposes `num_tokens` per step, `accept_len` tokens are
    emitted per verification on average (bonus included)."""
    method: str                       # mtp | eagle3
    num_tokens: int
    accept_len: float
    draft_model: str | None = None    # EAGLE-3 head (HF id); None for the model's own MTP layers
    draft_params: float = 0.0         # parameters of that head (BF16), 0 for MTP
    source: str = ""


class TrustPlan(_P):
    """How far to trust the plan's speed figures: the `confidence` interval from rigopt's leave-one-source-out
    cross-validated errors in the plan's regime (optimizer/estimate/uncertainty.yaml). `planned_at_low_end`: the
    targets were required to hold at the low end (cheapest --confidence)."""
    confidence: float
    planned_at_low_end: bool
    tok_s_per_seq_low: float | None = None
    tok_s_per_seq_high: float | None = None
    ttft_s_low: float | None = None
    ttft_s_high: float | None = None
    decode_regime: str | None = None
    decode_rows: int = 0
    ttft_regime: str | None = None
    ttft_rows: int = 0


class Plan(_P):
    schema_id: Name = PLAN_SCHEMA
    model: str = Field(max_length=MAX_PATH_CHARS)
    engine: Name
    quant: Name
    kv_dtype: Name
    context: int = Field(ge=1, le=MAX_CONTEXT_TOKENS)
    concurrency: int = Field(ge=1, le=MAX_CONCURRENCY)
    hardware: Hardware
    parallel: ParallelLayout
    offload: Offload
    costs: Costs
    memory: Memory
    speed: Speed
    binding_constraint: str
    notes: list[Annotated[str, Field(max_length=MAX_PATH_CHARS)]] = Field([], max_length=1000)
    candidate_id: str = Field("", max_length=MAX_PATH_CHARS)
    settings: EngineSettingsPlan | None = None
    serving: ServingPlan | None = None
    spec_decode: SpecPlan | None = None
    trust: TrustPlan | None = None
