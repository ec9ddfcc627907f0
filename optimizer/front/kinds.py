"""The question shapes of the fleet and mixed-inventory back ends (`optimizer.front.question` names them lazily:
importing them imports those back ends) and the union of every shape."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from optimizer.fleet.solve import FleetQuery
from optimizer.front.question import SpeedQuestion
from optimizer.hetero.query import MixedQuery


class FleetQuestion(BaseModel):
    """The cheapest fleet serving a request rate within TTFT/TPOT SLAs."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    kind: Literal["fleet"] = "fleet"
    query: FleetQuery


class OwnedQuestion(BaseModel):
    """The best plan over GPUs of several types (or several boxes) the user owns, optionally buying more."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["owned"] = "owned"
    query: MixedQuery


Question = Annotated[SpeedQuestion | FleetQuestion | OwnedQuestion, Field(discriminator="kind")]
