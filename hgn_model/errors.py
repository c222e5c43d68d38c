"""One exception hierarchy for the model package; each also subclasses the nearest builtin."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "HGNError", "InputError", "UnknownModelError"]


class HGNError(Exception):
    """Base class of every error raised by ``hgn_model``."""


class InputError(HGNError, ValueError):
    """An image handed to the model is unusable (bands, dtype, size, non-finite values)."""


class CheckpointError(HGNError, ValueError):
    """A checkpoint is missing, tampered, of an unknown format or does not fit the model."""


class ConfigError(HGNError, ValueError):
    """A model or training configuration field has a bad value."""


class UnknownModelError(HGNError, KeyError):
    """``create_model`` was asked for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""
