"""The windows of one scene: a grid of work units (core + halo), padded only as the model needs.

Pure (no Ray, Dask, zarr or fsspec): see :mod:`pipeline.plan` for the rules.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Box", "Pad", "SceneGrid", "WorkUnit", "grid_size", "plan_scene"]


@dataclass(frozen=True, slots=True)
class Box:
    """Half-open pixel rectangle ``[y0, y1) x [x0, x1)`` in scene coordinates."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return self.height * self.width

    def shift(self, dy: int, dx: int) -> Box:
        return Box(self.y0 + dy, self.y1 + dy, self.x0 + dx, self.x1 + dx)


@dataclass(frozen=True, slots=True)
class Pad:
    """Reflection padding (pixels) added around an in-bounds window for the model."""

    top: int = 0
    bottom: int = 0
    left: int = 0
    right: int = 0

    @property
    def any(self) -> bool:
        return bool(self.top or self.bottom or self.left or self.right)


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """One task: read ``window``, pad it by ``pad``, infer, write exactly ``core``.

    ``row``/``col`` index the unit grid of its scene; ``core`` is chunk-aligned and clipped
    to the scene (the last row/column of units may be partial).
    """

    scene_id: str
    row: int
    col: int
    core: Box
    window: Box
    pad: Pad
    chunk: int

    @property
    def unit_id(self) -> str:
        """Deterministic id: same scene id + grid position -> same id, run after run."""
        return f"{self.scene_id}#r{self.row}c{self.col}"

    @property
    def input_shape(self) -> tuple[int, int]:
        """(H, W) of the padded model input."""
        p = self.pad
        return (self.window.height + p.top + p.bottom, self.window.width + p.left + p.right)

    @property
    def core_in_input(self) -> Box:
        """Where the core sits inside the padded model input."""
        dy = self.pad.top + self.core.y0 - self.window.y0
        dx = self.pad.left + self.core.x0 - self.window.x0
        return Box(dy, dy + self.core.height, dx, dx + self.core.width)

    @property
    def chunk_indices(self) -> tuple[tuple[int, int], ...]:
        """Output chunks (cy, cx) this unit writes, row-major."""
        c = self.chunk
        rows = range(self.core.y0 // c, math.ceil(self.core.y1 / c))
        cols = range(self.core.x0 // c, math.ceil(self.core.x1 / c))
        return tuple((cy, cx) for cy in rows for cx in cols)


def grid_size(extent: int, step: int) -> int:
    """Number of grid cells of size ``step`` covering ``extent``, last partial one included.

    ``ceil(extent / step)``; 0 for an empty extent.
    """
    if step <= 0:
        raise ValueError(f"step={step!r} must be a positive number of pixels")
    return -(-max(extent, 0) // step)


@dataclass(frozen=True, slots=True)
class SceneGrid:
    """The unit grid of one scene. Iterating yields its :class:`WorkUnit` s row-major."""

    scene_id: str
    height: int
    width: int
    chunk: int
    halo: int
    unit_chunks: int = 1
    size_divisor: int = 1  # the model's input multiple; 1: the model pads windows itself

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(
                f"scene {self.scene_id!r} has shape ({self.height}, {self.width}); "
                "both sides must be >= 1 pixel"
            )
        if self.chunk < 1 or self.halo < 0 or self.unit_chunks < 1 or self.size_divisor < 1:
            raise ValueError(
                f"chunk={self.chunk!r}, halo={self.halo!r}, unit_chunks={self.unit_chunks!r}, "
                f"size_divisor={self.size_divisor!r}: need chunk >= 1, halo >= 0, "
                "unit_chunks >= 1, size_divisor >= 1"
            )

    @property
    def unit_size(self) -> int:
        return self.chunk * self.unit_chunks

    @property
    def rows(self) -> int:
        return grid_size(self.height, self.unit_size)

    @property
    def cols(self) -> int:
        return grid_size(self.width, self.unit_size)

    @property
    def chunk_grid(self) -> tuple[int, int]:
        """Shape of the output chunk grid (last partial chunks included)."""
        return grid_size(self.height, self.chunk), grid_size(self.width, self.chunk)

    def __len__(self) -> int:
        return self.rows * self.cols

    def unit(self, row: int, col: int) -> WorkUnit:
        """The unit at grid position (row, col)."""
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(
                f"unit ({row}, {col}) is outside the {self.rows} x {self.cols} grid of "
                f"scene {self.scene_id!r}"
            )
        u, h = self.unit_size, self.halo
        core = Box(
            row * u, min((row + 1) * u, self.height), col * u, min((col + 1) * u, self.width)
        )
        window = Box(
            max(core.y0 - h, 0),
            min(core.y1 + h, self.height),
            max(core.x0 - h, 0),
            min(core.x1 + h, self.width),
        )
        # Beyond the scene there is no context to give: pad only to the model's multiple.
        d = self.size_divisor
        pad = Pad(bottom=-window.height % d, right=-window.width % d)
        return WorkUnit(self.scene_id, row, col, core, window, pad, self.chunk)

    def __iter__(self) -> Iterator[WorkUnit]:
        for row in range(self.rows):
            for col in range(self.cols):
                yield self.unit(row, col)

    def input_pixels(self) -> int:
        """Pixels the model sees over all windows (padded), computed without iterating."""
        return self._axis_input(self.height) * self._axis_input(self.width)

    def read_pixels(self) -> int:
        """Pixels read from storage over all windows (in-bounds parts only)."""
        return self._axis_read(self.height) * self._axis_read(self.width)

    # Window extents factor per axis (the grid is separable), so totals are sums of products.
    def _axis_windows(self, extent: int) -> list[int]:
        n, u, h = grid_size(extent, self.unit_size), self.unit_size, self.halo
        return [min((i + 1) * u + h, extent) - max(i * u - h, 0) for i in range(n)]

    def _axis_input(self, extent: int) -> int:
        d = self.size_divisor
        return sum(-(-w // d) * d for w in self._axis_windows(extent))

    def _axis_read(self, extent: int) -> int:
        return sum(self._axis_windows(extent))


def plan_scene(
    scene_id: str, height: int, width: int, *, chunk: int, halo: int, unit_chunks: int = 1,
    size_divisor: int = 1,
) -> SceneGrid:
    """Plan one scene of ``height x width`` pixels."""
    return SceneGrid(scene_id, height, width, chunk, halo, unit_chunks, size_divisor)
