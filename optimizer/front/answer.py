"""One answer: the back end's result for a question, its JSON (with a `schema_id` on every path, feasible or not)
and one JSON Schema for all of them (`rigopt schema answer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from optimizer.fleet.solve import FLEET_SCHEMA, FleetResult
from optimizer.hetero.api import MixedResult
from optimizer.hetero.plan import MixedPlan
from optimizer.hetero.query import MIXED_RESULT_SCHEMA, MixedQuery, result_json
from optimizer.solver.search import RESULT_SCHEMA, CheapestResult

if TYPE_CHECKING:
    from optimizer.front.question import Question

MIXED_PLAN_SCHEMA = "rigopt.mixed-plan/1"
ANSWER_SCHEMA = "rigopt.answer/1"
Backend = Literal["solver", "fleet", "hetero"]


@dataclass(frozen=True)
class Answer:
    question: Question
    backend: Backend
    result: CheapestResult | FleetResult | MixedResult

    @property
    def feasible(self) -> bool:
        r = self.result
        if isinstance(r, FleetResult):
            return r.fleet is not None
        return r.plan is not None

    def cheapest_result(self) -> CheapestResult:
        assert isinstance(self.result, CheapestResult), self.backend
        return self.result

    def fleet_result(self) -> FleetResult:
        assert isinstance(self.result, FleetResult), self.backend
        return self.result

    def mixed_plan(self) -> MixedPlan:
        assert isinstance(self.result, MixedResult) and self.result.plan is not None, self.backend
        return self.result.plan

    def to_json(self) -> dict[str, Any]:
        """What `--json` prints: rigopt.cheapest/1, rigopt.fleet/1, rigopt.mixed-plan/1 (a plan `rigopt export`
        reads) or rigopt.mixed-result/1 (no plan: why not)."""
        r = self.result
        if isinstance(r, MixedResult):
            if r.plan is not None:
                return r.plan.to_json()
            q = self.question.query
            assert isinstance(q, MixedQuery)
            return result_json(q, r)
        return r.model_dump(mode="json")


@dataclass(frozen=True)
class _MixedPlanDoc(MixedPlan):
    """rigopt.mixed-plan/1 as written: the plan's fields and its schema id."""

    schema_id: Literal["rigopt.mixed-plan/1"] = "rigopt.mixed-plan/1"


class _MixedCheckDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: bool
    step_time_s: float
    terms_s: dict[str, float]
    violations: list[str]


class _MixedResultDoc(BaseModel):
    """rigopt.mixed-result/1: a mixed-inventory question, its status, its plan or why there is none."""

    model_config = ConfigDict(extra="forbid")
    schema_id: Literal["rigopt.mixed-result/1"]
    query: MixedQuery
    status: str
    plan: _MixedPlanDoc | None
    reason: str
    tried: list[list[str]]
    check: _MixedCheckDoc | None = None


_CONST = {"CheapestResult": RESULT_SCHEMA, "FleetResult": FLEET_SCHEMA, "_MixedPlanDoc": MIXED_PLAN_SCHEMA,
          "_MixedResultDoc": MIXED_RESULT_SCHEMA}


def answer_json_schema() -> dict[str, Any]:
    """JSON Schema of every `--json` answer of cheapest, fleet and mixed (one of four documents, told apart by
    their `schema_id`)."""
    ta: TypeAdapter[Any] = TypeAdapter(CheapestResult | FleetResult | _MixedPlanDoc | _MixedResultDoc)
    schema = ta.json_schema()
    for name, const in _CONST.items():
        props = schema["$defs"][name]["properties"]
        props["schema_id"] = {"const": const, "title": "Schema Id", "type": "string"}
        req = schema["$defs"][name].setdefault("required", [])
        if "schema_id" not in req:
            req.append("schema_id")
    schema["oneOf"] = schema.pop("anyOf")
    schema["$id"] = ANSWER_SCHEMA
    schema["title"] = "rigopt answer (cheapest, fleet, mixed --json)"
    return schema
