"""One JSON Schema for every `--json` answer of cheapest, fleet and mixed (`rigopt schema answer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from optimizer.fleet.solve import FLEET_SCHEMA, FleetResult
from optimizer.hetero.plan import MixedPlan
from optimizer.hetero.query import MIXED_RESULT_SCHEMA, MixedQuery
from optimizer.solver.search import RESULT_SCHEMA, CheapestResult

MIXED_PLAN_SCHEMA = "rigopt.mixed-plan/1"
ANSWER_SCHEMA = "rigopt.answer/1"


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
