"""Change between two label rasters of one scene: the change-layer encoding and the matrix.

Pure numpy (no zarr, no storage): :mod:`pipeline.ops.diff` reads the two label rasters chunk by
chunk, calls :func:`encode` and :meth:`MatrixAccumulator.add` per chunk and writes the codes
as the ``labels/change`` layer (:mod:`pipeline.io.omezarr`).

Encoding, one ``uint16`` label image on the scene's grid (so every OME-Zarr label viewer shows
it with the colours in its ``image-label`` metadata)::

    0                      no data: label 0 (no data) in the previous or the current labels
    from * 256 + to        previous class ``from`` >= 1, current class ``to`` >= 1

so ``code // 256`` is the previous class, ``code % 256`` the current one, and a pixel changed
when the two differ (``code % 257 != 0``). Unchanged pixels keep a code (``c * 257``): the
layer alone answers "what was here before" for every valid pixel.

The matrix counts every pixel, label 0 included (row/column 0 = no data), so it adds up to the
whole scene and shows land that became cloud (``x -> 0``) or cleared (``0 -> x``). Its areas
are geodesic m2 when the scene is georeferenced (the per-pixel areas of
:mod:`pipeline.query.areas`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BASE",
    "NODATA",
    "ChangeMatrix",
    "MatrixAccumulator",
    "decode",
    "encode",
]

NODATA = 0
BASE = 256  # uint8 labels: from * 256 + to fits uint16 exactly
_BINS = BASE * BASE


def encode(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Change codes (uint16) of two uint8 label blocks of the same shape (see module doc)."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise ValueError(f"label blocks differ in shape: {before.shape} vs {after.shape}")
    codes = before.astype(np.uint16) * BASE + after.astype(np.uint16)
    codes[(before == 0) | (after == 0)] = NODATA
    return codes


def decode(codes: np.ndarray) -> dict[str, np.ndarray]:
    """``{"from", "to", "changed", "valid"}`` arrays of a block of change codes."""
    codes = np.asarray(codes, dtype=np.uint16)
    valid = codes != NODATA
    src, dst = codes // BASE, codes % BASE
    return {"from": src.astype(np.uint8), "to": dst.astype(np.uint8),
            "changed": valid & (src != dst), "valid": valid}


@dataclass
class MatrixAccumulator:
    """Sums from -> to pixel counts (and areas, with per-pixel weights) over blocks."""

    with_areas: bool
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(_BINS, np.float64))
    areas: np.ndarray = field(default_factory=lambda: np.zeros(_BINS, np.float64))

    def add(self, before: np.ndarray, after: np.ndarray,
            pixel_area: np.ndarray | None = None) -> None:
        """Count one block; ``pixel_area`` (m2, same shape) when :attr:`with_areas`."""
        idx = (np.asarray(before, np.intp) * BASE + np.asarray(after, np.intp)).ravel()
        self.pixels += np.bincount(idx, minlength=_BINS)
        if self.with_areas:
            if pixel_area is None:
                raise ValueError("this accumulator sums areas: pass pixel_area for every block")
            self.areas += np.bincount(idx, weights=np.asarray(pixel_area, float).ravel(),
                                      minlength=_BINS)

    def merge(self, other: MatrixAccumulator) -> None:
        """Add another accumulator's sums (e.g. one per worker thread)."""
        self.pixels += other.pixels
        self.areas += other.areas

    def result(self, scene_id: str, against: str, classes_from: Sequence[str],
               classes_to: Sequence[str], note: str | None = None) -> ChangeMatrix:
        """The matrix trimmed to the classes of both tables (and any id seen beyond them)."""
        px = self.pixels.reshape(BASE, BASE)
        seen_rows = np.nonzero(px.sum(1))[0]
        seen_cols = np.nonzero(px.sum(0))[0]
        n_from = max(len(classes_from), int(seen_rows.max()) + 1 if seen_rows.size else 0, 1)
        n_to = max(len(classes_to), int(seen_cols.max()) + 1 if seen_cols.size else 0, 1)
        names_from = [classes_from[i] if i < len(classes_from) else str(i) for i in range(n_from)]
        names_to = [classes_to[i] if i < len(classes_to) else str(i) for i in range(n_to)]
        area = self.areas.reshape(BASE, BASE)[:n_from, :n_to] if self.with_areas else None
        return ChangeMatrix(scene_id, against, tuple(names_from), tuple(names_to),
                            px[:n_from, :n_to].copy(), None if area is None else area.copy(),
                            note)


@dataclass(frozen=True)
class ChangeMatrix:
    """From -> to pixel counts and areas (m2, geodesic) of one scene against earlier labels.

    ``pixels[i, j]``: level-0 pixels of previous class ``i`` that are now class ``j``;
    ``area`` the same in m2 (None when the scene has no georeference: pixels only).
    """

    scene_id: str
    against: str  # what the labels were compared with: a run id or another output root
    classes_from: tuple[str, ...]
    classes_to: tuple[str, ...]
    pixels: np.ndarray
    area: np.ndarray | None
    note: str | None = None

    @property
    def area_unit(self) -> str | None:
        return None if self.area is None else "m2"

    def _valid(self) -> np.ndarray:
        mask = np.ones(self.pixels.shape, bool)
        mask[0, :] = mask[:, 0] = False
        return mask

    def _changed(self) -> np.ndarray:
        mask = self._valid()
        n = min(mask.shape)
        mask[np.arange(n), np.arange(n)] = False
        return mask

    def summary(self) -> dict[str, Any]:
        """Totals: pixels (and m2) compared, changed, and their fraction of the valid pixels."""
        valid, changed = self._valid(), self._changed()
        out: dict[str, Any] = {
            "pixels_total": float(self.pixels.sum()),
            "pixels_valid": float(self.pixels[valid].sum()),
            "pixels_changed": float(self.pixels[changed].sum()),
        }
        out["changed_fraction"] = (out["pixels_changed"] / out["pixels_valid"]
                                   if out["pixels_valid"] else 0.0)
        if self.area is not None:
            out["area_valid"] = float(self.area[valid].sum())
            out["area_changed"] = float(self.area[changed].sum())
        return out

    def pairs(self) -> list[dict[str, Any]]:
        """Every from -> to pair with pixels, largest first (``changed`` False on the diagonal)."""
        rows = []
        for i, j in zip(*np.nonzero(self.pixels), strict=True):
            rows.append({
                "from": int(i), "from_name": self.classes_from[i], "to": int(j),
                "to_name": self.classes_to[j], "changed": bool(i != j and i and j),
                "pixels": float(self.pixels[i, j]),
                "area": None if self.area is None else float(self.area[i, j]),
            })
        return sorted(rows, key=lambda r: (-r["pixels"], r["from"], r["to"]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: classes, the full matrices (row = previous class), pairs, summary."""
        return {
            "scene_id": self.scene_id, "against": self.against, "area_unit": self.area_unit,
            "encoding": "labels/change uint16: 0 = no data on either side, else "
                        "previous * 256 + current",
            "classes_from": list(self.classes_from), "classes_to": list(self.classes_to),
            "pixels": self.pixels.tolist(),
            "area": None if self.area is None else self.area.tolist(),
            "summary": self.summary(), "pairs": self.pairs(), "note": self.note,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChangeMatrix:
        area = d.get("area")
        return cls(d["scene_id"], d["against"], tuple(d["classes_from"]),
                   tuple(d["classes_to"]), np.asarray(d["pixels"], np.float64),
                   None if area is None else np.asarray(area, np.float64), d.get("note"))
