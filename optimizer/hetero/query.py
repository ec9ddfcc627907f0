"""A mixed-hardware question as data (what a scenario file asks, what `rigopt mixed` takes on its command line), and
its answer as JSON (`rigopt.mixed-result/1`): the same `cheapest_mixed` call either way."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from optimizer.estimate.uncertainty import DEFAULT_CONFIDENCE
from optimizer.hetero.api import MixedResult, cheapest_mixed
from optimizer.limits import MAX_BUDGET, MAX_CONCURRENCY, MAX_CONTEXT_TOKENS, MAX_PATH_CHARS, MAX_TIME_LIMIT_S

MIXED_RESULT_SCHEMA = "rigopt.mixed-result/1"
# what `rigopt mixed` passes to cheapest_mixed when its options are not given (optimizer/report/mixed.py)
CLI_TIME_LIMIT_S = 30.0
CLI_WORKERS = 1


class MixedQuery(BaseModel):
    """The arguments of `cheapest_mixed` (optimizer/hetero/api.py); `inventory` is an `--owned` string."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1, max_length=MAX_PATH_CHARS)
    inventory: str = Field(min_length=1, max_length=MAX_PATH_CHARS)
    context: int = Field(gt=0, le=MAX_CONTEXT_TOKENS)
    concurrency: int = Field(default=1, ge=1, le=MAX_CONCURRENCY)
    tok_s: float = Field(default=0.0, ge=0, le=1e6)
    engine: Literal["llamacpp", "vllm"] = "llamacpp"
    buy: bool = False
    buy_types: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] | None = None
    max_budget: float | None = Field(default=None, gt=0, le=MAX_BUDGET, allow_inf_nan=False)
    min_bits: float = Field(default=0.0, ge=0, le=32)
    quants: tuple[Annotated[str, Field(min_length=1, max_length=64)], ...] | None = None
    time_limit_s: float = Field(default=CLI_TIME_LIMIT_S, gt=0, le=MAX_TIME_LIMIT_S)
    workers: int = Field(default=CLI_WORKERS, ge=1, le=64)
    confidence: float = Field(default=DEFAULT_CONFIDENCE, ge=0, lt=1)
    host: str | None = Field(default=None, max_length=MAX_PATH_CHARS)  # the main box's host (catalog/host_spec.py)

    def solve(self) -> MixedResult:
        buy: bool | tuple[str, ...] = self.buy_types if self.buy_types else self.buy
        return cheapest_mixed(
            self.model,
            self.inventory,
            context=self.context,
            tok_s=self.tok_s,
            concurrency=self.concurrency,
            quants=list(self.quants) if self.quants else None,
            engine=self.engine,
            buy=buy,
            max_budget=self.max_budget,
            min_bits=self.min_bits,
            time_limit_s=self.time_limit_s,
            workers=self.workers,
            confidence=self.confidence,
            host=self.host,
        )


def result_json(q: MixedQuery, res: MixedResult) -> dict[str, Any]:
    """The answer to `q` as JSON: the plan (rigopt.mixed-plan/1) or why there is none, and the float check's terms."""
    out: dict[str, Any] = {
        "schema_id": MIXED_RESULT_SCHEMA,
        "query": q.model_dump(mode="json"),
        "status": res.plan.status if res.plan else "INFEASIBLE",
        "plan": res.plan.to_json() if res.plan else None,
        "reason": res.reason,
        "tried": [list(t) for t in res.tried],
    }
    if res.check is not None:
        out["check"] = {
            "ok": res.check.ok,
            "step_time_s": res.check.step_time_s,
            "terms_s": dict(res.check.terms_s),
            "violations": list(res.check.violations),
        }
    return out
