"""The front door: one question (`Ask` -> `Question`), one dispatcher (`solve`), one answer (`Answer`)."""

from optimizer.front.answer import Answer, answer_json_schema
from optimizer.front.dispatch import question, solve
from optimizer.front.question import DEFAULTS, Ask, FleetQuestion, OwnedQuestion, Question, SpeedQuestion

__all__ = ["DEFAULTS", "Answer", "Ask", "FleetQuestion", "OwnedQuestion", "Question", "SpeedQuestion",
           "answer_json_schema", "question", "solve"]
