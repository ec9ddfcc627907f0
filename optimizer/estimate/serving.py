"""Serving a workload with continuous batching: TPOT, TTFT with queueing, output and total tokens/s.

The engines (vLLM, SGLang, llama.cpp's server) run one loop: every step decodes one token for each running
sequence and fills the rest of its token budget with a chunk of a waiting prompt (chunked prefill). rigopt
models that loop per DP replica with three numbers from the physics layer:

- `step_time(n)`: decode time per output token of a sequence when `n` sequences decode together (weights read
  once per step, KV per sequence, compute once the batch is large; speculative decoding already folded in);
- `prefill_single_s`: time to first token of one prompt alone (its chunks pass the pipeline stages in turn);
- `prefill_work_s`: engine time one prompt occupies when prompts stream through (PP stages overlap).

With request rate X per replica, prefill takes a share rho = X * prefill_work_s of the engine's time. Decode
steps that carry a prefill chunk are slowed by it, so over a request's life TPOT = step_time(n) / (1 - rho)
(each request sees X * duration other prefills while it decodes). A new prompt waits for the prefills ahead of
it: an M/D/1 queue, mean wait rho / (2 (1 - rho)) * prefill_work_s, with an exponential tail for percentiles.

Closed loop (`concurrency`, as `vllm bench serve --max-concurrency` and `sglang.bench_serving` run): C requests
are always in flight, X = C / (TTFT + osl * TPOT) (Little's law). Open loop (`rate_rps`): X is given and the
number decoding follows from Little's law. Both are solved by fixed-point iteration; a rate the deployment
cannot sustain (rho >= 1, or more sequences than the KV pool admits) is reported as not stable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

FIXED_POINT_ITERATIONS = 40     # the maps below are contractions in practice; 40 halvings of the damping suffice
FIXED_POINT_DAMPING = 0.5


@dataclass(frozen=True)
class Workload:
    """Requests of `isl` prompt tokens producing `osl` output tokens, with `concurrency` in flight (closed loop)
    or arriving at `rate_rps` (open loop, Poisson). `prefix_hit` is the share of prompt tokens found in the
    prefix cache (they are not prefilled again)."""
    isl: int
    osl: int
    concurrency: int | None = None
    rate_rps: float | None = None
    prefix_hit: float = 0.0

    def __post_init__(self) -> None:
        if self.isl < 1 or self.osl < 1:
            raise ValueError("isl and osl must be >= 1")
        if (self.concurrency is None) == (self.rate_rps is None):
            raise ValueError("a workload has a concurrency or a request rate (exactly one)")
        if not 0.0 <= self.prefix_hit < 1.0:
            raise ValueError("prefix_hit must be in [0, 1)")

    @property
    def max_len(self) -> int:
        """Longest sequence a request reaches (what max_model_len / -c must admit)."""
        return self.isl + self.osl

    @property
    def decode_context(self) -> int:
        """Mean KV length while a request decodes."""
        return self.isl + self.osl // 2

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens actually computed per request (prefix-cache hits skipped)."""
        return max(1, math.ceil(self.isl * (1.0 - self.prefix_hit)))


@dataclass(frozen=True)
class ServingEstimate:
    """Per-workload serving figures for a whole deployment (all DP replicas)."""
    tpot_s: float                 # mean time per output token after the first
    ttft_s: float                 # mean time to first token (prefill + queueing)
    ttft_p90_s: float
    request_rate_rps: float       # requests completed per second
    output_tok_s: float           # output tokens per second
    total_tok_s: float            # (prompt + output) tokens per second
    output_tok_s_per_gpu: float
    total_tok_s_per_gpu: float
    decoding_seqs: float          # mean sequences decoding at once (whole deployment)
    admitted_seqs: int            # most sequences the engine admits at once (KV pool and engine caps)
    prefill_share: float          # share of engine time spent on prefill chunks
    queue_wait_s: float           # mean wait for earlier prompts' prefill
    stable: bool                  # False: the rate exceeds what the deployment sustains
    binding: str                  # what limits throughput: decode | prefill | kv_capacity | concurrency
    notes: tuple[str, ...] = field(default_factory=tuple)


def _wait(rho: float, service_s: float, p: float | None = None) -> float:
    """M/D/1 mean wait for a server at utilisation rho (or its p-quantile with an exponential tail)."""
    if rho <= 0:
        return 0.0
    if rho >= 1:
        return math.inf
    mean = rho / (2.0 * (1.0 - rho)) * service_s
    if p is None:
        return mean
    if 1.0 - p >= rho:
        return 0.0  # at least a share 1 - p of arrivals find no prefill ahead of them
    return mean / rho * math.log(rho / (1.0 - p))


def serve(w: Workload, *, world: int, dp: int, admitted_per_replica: int,
          step_time: Callable[[float], float], prefill_single_s: float, prefill_work_s: float,
          ttft_overhead_s: float = 0.0) -> ServingEstimate:
    """Solve the batching loop for a workload (see the module docstring). `step_time(n)` is per replica;
    `ttft_overhead_s` is the engine's fixed time from a request's arrival to its first token beyond queueing and
    prefill (HTTP, tokenization, scheduling, the first decode step and detokenization: fitted per engine)."""
    notes: list[str] = []
    cap = max(0, admitted_per_replica)
    if cap == 0:
        return ServingEstimate(math.inf, math.inf, math.inf, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, math.inf, False,
                               "kv_capacity", ("the KV pool admits no sequence of this length",))
    osl = w.osl

    def cycle(x: float, n_dec: float) -> tuple[float, float, float]:
        rho = x * prefill_work_s
        if rho >= 1.0:
            return math.inf, math.inf, rho
        tpot = step_time(max(1.0, n_dec)) / (1.0 - rho)
        ttft = ttft_overhead_s + prefill_single_s + _wait(rho, prefill_work_s)
        return tpot, ttft, rho

    binding = "decode"
    if w.concurrency is not None:
        c = w.concurrency / dp  # in flight per replica
        n_run = min(c, float(cap))
        if c > cap:
            binding = "kv_capacity"
            notes.append(f"{w.concurrency} requests in flight but the engine admits {cap * dp}: "
                         "the rest wait in the queue")
        n_dec = n_run
        x = n_run / (prefill_single_s + osl * step_time(max(1.0, n_run)))
        for _ in range(FIXED_POINT_ITERATIONS):
            tpot, ttft, rho = cycle(x, n_dec)
            if math.isfinite(tpot) and math.isfinite(ttft):
                x_new = n_run / (ttft + osl * tpot)
                n_dec = min(n_run, x_new * osl * tpot)
            else:
                x_new = 0.0
            x = FIXED_POINT_DAMPING * x + (1 - FIXED_POINT_DAMPING) * x_new
        tpot, ttft, rho = cycle(x, n_dec)
        wait = _wait(rho, prefill_work_s)
        if c > cap:  # queued requests wait for a running one to finish (closed loop: Little's law on the queue)
            extra = (c - cap) / x if x > 0 else math.inf
            ttft += extra
            wait += extra
        stable = True
    else:
        assert w.rate_rps is not None
        x = w.rate_rps / dp
        rho = x * prefill_work_s
        stable = rho < 1.0
        n_dec = 1.0
        tpot = ttft = math.inf
        wait = math.inf
        if stable:
            for _ in range(FIXED_POINT_ITERATIONS):
                tpot, ttft, rho = cycle(x, n_dec)
                n_dec = FIXED_POINT_DAMPING * n_dec + (1 - FIXED_POINT_DAMPING) * max(1.0, x * osl * tpot)
            tpot, ttft, rho = cycle(x, n_dec)
            wait = _wait(rho, prefill_work_s)
            in_flight = x * (ttft + osl * tpot)
            if in_flight > cap:
                stable = False
                binding = "kv_capacity"
                notes.append(f"{in_flight * dp:,.0f} sequences would be in flight; the engine admits {cap * dp}")
        else:
            binding = "prefill"
            notes.append(f"prefill alone needs {rho:.0%} of the engine's time at {w.rate_rps} req/s")
    if stable and rho > 0.5 and binding == "decode":
        binding = "prefill"
    queued = (ttft - ttft_overhead_s - prefill_single_s - _wait(rho, prefill_work_s)) if math.isfinite(ttft) else 0.0
    ttft_p90 = ttft_overhead_s + prefill_single_s + _wait(rho, prefill_work_s, 0.9) + queued
    rate = x * dp if stable else 0.0
    out = rate * osl
    total = rate * (w.isl + osl)
    return ServingEstimate(
        tpot_s=tpot, ttft_s=ttft, ttft_p90_s=ttft_p90 if stable else math.inf, request_rate_rps=rate,
        output_tok_s=out, total_tok_s=total, output_tok_s_per_gpu=out / world, total_tok_s_per_gpu=total / world,
        decoding_seqs=n_dec * dp, admitted_seqs=cap * dp, prefill_share=min(1.0, rho), queue_wait_s=wait,
        stable=stable, binding=binding, notes=tuple(notes))
