"""One answer: the back end's result for a question, its JSON (with a `schema_id` on every path, feasible or not)
and one JSON Schema for all of them (`rigopt schema answer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    from optimizer.fleet.solve import FleetResult
    from optimizer.front.kinds import Question
    from optimizer.hetero.api import MixedResult
    from optimizer.hetero.plan import MixedPlan
    from optimizer.solver.search import CheapestResult

# the back ends' result types are imported where a result of that kind is at hand (start-up time, issue 23): the
# answer tells them apart by its `backend`
Backend = Literal["solver", "fleet", "hetero"]


@dataclass(frozen=True)
class Answer:
    question: Question
    backend: Backend
    result: CheapestResult | FleetResult | MixedResult

    @property
    def feasible(self) -> bool:
        r = self.result
        if self.backend == "fleet":
            return getattr(r, "fleet", None) is not None
        return getattr(r, "plan", None) is not None

    def cheapest_result(self) -> CheapestResult:
        from optimizer.solver.search import CheapestResult
        assert isinstance(self.result, CheapestResult), self.backend
        return self.result

    def fleet_result(self) -> FleetResult:
        from optimizer.fleet.solve import FleetResult
        assert isinstance(self.result, FleetResult), self.backend
        return self.result

    def mixed_plan(self) -> MixedPlan:
        from optimizer.hetero.api import MixedResult
        assert isinstance(self.result, MixedResult) and self.result.plan is not None, self.backend
        return self.result.plan

    def to_json(self) -> dict[str, Any]:
        """What `--json` prints: rigopt.cheapest/1, rigopt.fleet/1, rigopt.mixed-plan/1 (a plan `rigopt export`
        reads) or rigopt.mixed-result/1 (no plan: why not)."""
        r = self.result
        if self.backend == "hetero":
            from optimizer.hetero.api import MixedResult
            from optimizer.hetero.query import MixedQuery, result_json
            assert isinstance(r, MixedResult)
            if r.plan is not None:
                return r.plan.to_json()
            q = self.question.query
            assert isinstance(q, MixedQuery)
            return result_json(q, r)
        return cast("CheapestResult | FleetResult", r).model_dump(mode="json")


def answer_json_schema() -> dict[str, Any]:
    """JSON Schema of every `--json` answer of cheapest, fleet and mixed (optimizer/front/schema.py)."""
    from optimizer.front.schema import answer_json_schema as build
    return build()


