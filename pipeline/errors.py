"""One exception hierarchy for the pipeline.

Every class also subclasses the nearest builtin, so callers that only know Python's own
exceptions (``ValueError``, ``OSError``) still catch them. Messages name the scene / field,
its value, and the fix. Nothing here ever formats storage options or credentials.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "NonFiniteError",
    "OutputError",
    "PipelineError",
    "SceneReadError",
    "StorageError",
    "WindowError",
]


class PipelineError(Exception):
    """Base class of every error raised by ``pipeline``."""


class ConfigError(PipelineError, ValueError):
    """A configuration value (or URL, option) is invalid; the message names it and the fix."""


class StorageError(PipelineError, OSError):
    """Object storage / filesystem access failed (listing, opening, credentials)."""

    def __str__(self) -> str:
        # OSError's __str__ would render "[Errno x] ..." for 2-3 args; keep our message verbatim.
        return str(self.args[0]) if self.args else ""


class OutputError(PipelineError, OSError):
    """Writing or opening an output store failed, or its target is refused."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WindowError(PipelineError, ValueError):
    """A requested window or band selection lies outside the scene."""


class SceneReadError(PipelineError, OSError):
    """A scene (or a window of it) could not be read.

    Attributes ``scene_id``, ``url`` and ``reason`` are kept separately so reports can show
    them in columns; ``str()`` gives one sentence with all three.
    """

    def __init__(self, scene_id: str, url: str, reason: str) -> None:
        super().__init__(scene_id, url, reason)
        self.scene_id = scene_id
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"scene {self.scene_id!r} ({self.url}): {self.reason}"

    def __reduce__(self) -> tuple[type[SceneReadError], tuple[str, str, str]]:
        # Exceptions travel between Ray workers by pickle; OSError's default reduce would
        # re-interpret our three args as (errno, strerror, filename).
        return (type(self), (self.scene_id, self.url, self.reason))


class NonFiniteError(PipelineError, ValueError):
    """A data pixel holds NaN or Inf; ``band``, ``y``, ``x`` are in scene coordinates."""

    def __init__(self, scene_id: str, band: int, y: int, x: int) -> None:
        super().__init__(scene_id, band, y, x)
        self.scene_id, self.band, self.y, self.x = scene_id, band, y, x

    def __str__(self) -> str:
        return (f"scene {self.scene_id!r}: NaN/Inf value at band {self.band}, y={self.y}, "
                f"x={self.x} (scene pixel coordinates); fix the pixel or mark it as nodata "
                "(NaN always is; declare other fill values with `nodata:` in the run config)")

    def __reduce__(self) -> tuple[type[NonFiniteError], tuple[str, int, int, int]]:
        return (type(self), (self.scene_id, self.band, self.y, self.x))
