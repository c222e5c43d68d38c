"""Label classes of the benchmark (ids, names, display colours) and the ``Scene`` record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AGRICULTURE",
    "BUILDING",
    "CLASSES",
    "CONTEXT_CLASSES",
    "FOREST",
    "NUM_CLASSES",
    "PLANTATION",
    "RANGELAND",
    "RIVER",
    "ROAD",
    "THIN_CLASSES",
    "UNKNOWN",
    "URBAN",
    "WATER",
    "ClassSpec",
    "Scene",
]


@dataclass(frozen=True, slots=True)
class ClassSpec:
    """One label class: ``name`` and display ``color`` as RGBA 0-255."""

    name: str
    color: tuple[int, int, int, int]


# index == label id; colours follow DeepGlobe where the class exists there
CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("unknown", (0, 0, 0, 255)),
    ClassSpec("urban", (0, 255, 255, 255)),
    ClassSpec("agriculture", (255, 255, 0, 255)),
    ClassSpec("rangeland", (255, 0, 255, 255)),
    ClassSpec("forest", (0, 255, 0, 255)),
    ClassSpec("plantation", (0, 120, 0, 255)),
    ClassSpec("water", (0, 0, 255, 255)),
    ClassSpec("road", (255, 140, 0, 255)),
    ClassSpec("river", (0, 170, 255, 255)),
    ClassSpec("building", (255, 0, 0, 255)),
)
NUM_CLASSES = len(CLASSES)
UNKNOWN, URBAN, AGRICULTURE, RANGELAND, FOREST, PLANTATION, WATER, ROAD, RIVER, BUILDING = range(
    NUM_CLASSES
)
THIN_CLASSES: tuple[int, ...] = (ROAD, RIVER, BUILDING)
CONTEXT_CLASSES: tuple[int, ...] = (FOREST, PLANTATION)


@dataclass(eq=False)
class Scene:
    """One generated scene: ``image`` (C, H, W), ``labels`` (H, W) uint8 class ids, its ``seed``.

    ``params`` records how it was generated (JSON-serialisable; written to zarr attributes).
    """

    image: np.ndarray
    labels: np.ndarray
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
