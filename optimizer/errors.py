"""Typed errors. The CLI turns each into one clear line and exit code 2."""

from __future__ import annotations


class RigoptError(Exception):
    """Base class for every error rigopt reports to a user."""


class CatalogError(RigoptError):
    """Unknown or malformed catalogue entry; carries close names when there are some."""

    def __init__(self, message: str, did_you_mean: list[str] | None = None):
        self.did_you_mean = list(did_you_mean or [])
        if self.did_you_mean:
            message = f"{message} (did you mean: {', '.join(self.did_you_mean)}?)"
        super().__init__(message)


class ModelFormatError(RigoptError):
    """A config.json, safetensors index or GGUF file that rigopt cannot interpret."""


class InputError(RigoptError):
    """A bad command-line value (negative context, malformed size, ...)."""


class InfeasibleError(RigoptError):
    """Nothing satisfies the constraints; hints say what to relax."""

    def __init__(self, message: str, hints: list[str] | None = None):
        self.hints = list(hints or [])
        super().__init__(message)
