"""One exception hierarchy for the model package; each also subclasses the nearest builtin."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "HGNError", "InputError", "UnknownModelError"]


class HGNError(Exception):
    """Base class of every error raised by ``hgn_model``."""


class InputError(HGNError, ValueError):
    """An image handed to the model is unusable (bands, dtype, size, non-finite values).

    For a NaN/Inf pixel, ``band``, ``y`` and ``x`` give its position in the image handed to
    ``Segmenter.predict`` (``index`` the image in a batch), so a caller that cut the image out
    of a scene can add the window origin and report scene coordinates.
    """

    def __init__(self, message: str, *, band: int | None = None, y: int | None = None,
                 x: int | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.band, self.y, self.x, self.index = band, y, x, index


class CheckpointError(HGNError, ValueError):
    """A checkpoint is missing, tampered, of an unknown format or does not fit the model."""


class ConfigError(HGNError, ValueError):
    """A model or training configuration field has a bad value."""


class UnknownModelError(HGNError, KeyError):
    """``create_model`` was asked for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""
