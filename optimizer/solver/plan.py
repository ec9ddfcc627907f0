"""A deployment plan: what `cheapest` returns and `export` consumes (schema id rigopt.plan/1)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

PLAN_SCHEMA = "rigopt.plan/1"


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hardware(_P):
    node: str                  # node type key
    accelerator: str
    n_nodes: int
    gpus_per_node: int
    host_dram_bytes: int       # per node, including any purchased
    extra_dram_bytes: int      # purchased on top of the node's base RAM (per node)
    owned: bool = False


class ParallelLayout(_P):
    tp: int
    pp: int
    dp: int
    ep: bool
    ep_size: int


class Offload(_P):
    mode: str                       # none | cpu (CPU computes offloaded experts) | stream (PCIe UVA)
    expert_layers_offloaded: int
    offloaded_layers: list[int]     # main-layer indices whose routed experts live in host DRAM
    host_bytes: float               # host DRAM taken by offloaded experts
    nvme_layers: list[int] = []     # main-layer indices whose routed experts are read from NVMe (mmap) by the CPU
    nvme_bytes: float = 0.0


class Costs(_P):
    capex_usd: float | None
    usd_per_hour: float | None
    power_watts: float
    objective: str
    objective_value: float


class Memory(_P):
    capacity_bytes: float
    budget_bytes: float
    weights_bytes: float
    kv_bytes: float
    runtime_bytes: float
    headroom_bytes: float
    host_used_bytes: float
    host_capacity_bytes: float


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


class Plan(_P):
    schema_id: str = PLAN_SCHEMA
    model: str
    engine: str
    quant: str
    kv_dtype: str
    context: int
    concurrency: int
    hardware: Hardware
    parallel: ParallelLayout
    offload: Offload
    costs: Costs
    memory: Memory
    speed: Speed
    binding_constraint: str
    notes: list[str] = []
    candidate_id: str = ""
    settings: EngineSettingsPlan | None = None
    serving: ServingPlan | None = None
    spec_decode: SpecPlan | None = None
