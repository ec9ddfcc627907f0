"""The front door: one question (`Ask` -> `Question`), one dispatcher (`solve`), one answer (`Answer`)."""

from typing import Any

from optimizer.front.answer import Answer, answer_json_schema
from optimizer.front.dispatch import question, solve
from optimizer.front.question import DEFAULTS, Ask, SpeedQuestion

__all__ = ["DEFAULTS", "Answer", "Ask", "FleetQuestion", "OwnedQuestion", "Question", "SpeedQuestion",
           "answer_json_schema", "question", "solve"]


def __getattr__(name: str) -> Any:
    """FleetQuestion, OwnedQuestion and Question import the fleet and mixed-hardware back ends: on first use."""
    if name in ("FleetQuestion", "OwnedQuestion", "Question"):
        from optimizer.front import kinds
        return getattr(kinds, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
