"""The plan of an archive: the unit grids of every scene, their sizes, and the resume token.

Pure (no Ray, Dask, zarr or fsspec), like :mod:`pipeline.plan.grid`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.plan.grid import SceneGrid, WorkUnit, plan_scene

__all__ = ["Plan", "PlanSummary", "SceneLike", "plan_archive", "plan_token"]

# Bytes per output pixel: uint8 labels, plus uint8 confidence when enabled. The pyramid adds
# 1/4 + 1/16 + ... < 1/3 of level 0 on top.
_PYRAMID_FACTOR = 4 / 3
_ITEMSIZE = {"uint8": 1, "uint16": 2, "float32": 4, "int16": 2, "float64": 8}


class SceneLike(Protocol):
    """What planning needs of a scene (``pipeline.catalog.SceneInfo`` satisfies it)."""

    scene_id: str
    shape: tuple[int, int, int]  # (C, H, W)
    dtype: str


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """Sizes of a plan, for ``--dry-run`` and progress bars."""

    scenes: int
    units: int
    chunks: int
    output_pixels: int
    input_pixels: int
    bytes_read: int
    bytes_written: int

    def estimated_seconds(self, input_mpx_per_s: float) -> float:
        """Inference time at a measured model rate (Mpx of model input per second)."""
        if input_mpx_per_s <= 0:
            raise ValueError(f"rate {input_mpx_per_s!r} Mpx/s must be > 0")
        return self.input_pixels / 1e6 / input_mpx_per_s

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True)
class Plan:
    """Unit grids of every planned scene, in catalog order."""

    grids: tuple[SceneGrid, ...]
    channels: tuple[int, ...]  # bands read per scene (after band selection)
    itemsizes: tuple[int, ...]  # bytes per input sample per scene
    confidence: bool = True

    def __len__(self) -> int:
        return sum(len(g) for g in self.grids)

    def units(self) -> Iterator[WorkUnit]:
        """All units, scene by scene, row-major; a generator (nothing is materialised)."""
        for grid in self.grids:
            yield from grid

    def summary(self) -> PlanSummary:
        out_px = sum(g.height * g.width for g in self.grids)
        chunks = sum(math.prod(g.chunk_grid) for g in self.grids)
        read = sum(
            g.read_pixels() * c * s
            for g, c, s in zip(self.grids, self.channels, self.itemsizes, strict=True)
        )
        per_px = 2 if self.confidence else 1
        return PlanSummary(
            scenes=len(self.grids),
            units=len(self),
            chunks=chunks,
            output_pixels=out_px,
            input_pixels=sum(g.input_pixels() for g in self.grids),
            bytes_read=read,
            bytes_written=round(out_px * per_px * _PYRAMID_FACTOR),
        )


def plan_archive(
    scenes: Iterable[SceneLike],
    *,
    chunk: int,
    halo: int,
    unit_chunks: int = 1,
    bands: Iterable[int] | None = None,
    confidence: bool = True,
) -> Plan:
    """Plan every scene; ``bands`` (a selection) sets how many channels are read."""
    band_count = None if bands is None else len(tuple(bands))
    grids, channels, sizes = [], [], []
    for s in scenes:
        c, h, w = s.shape
        grids.append(plan_scene(s.scene_id, h, w, chunk=chunk, halo=halo, unit_chunks=unit_chunks))
        channels.append(c if band_count is None else band_count)
        sizes.append(_ITEMSIZE.get(str(s.dtype), 4))
    return Plan(tuple(grids), tuple(channels), tuple(sizes), confidence)


def plan_token(settings: dict[str, Any]) -> str:
    """Short, stable fingerprint of the settings that decide a unit's output.

    Used as a resume token: a ledger entry is only trusted under the same token, so a resume
    never mixes outputs of different configs, checkpoints or inputs.
    """
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
