"""One scene's store as the query API sees it: metadata, windows at any level, class areas.

Boxes and levels follow :mod:`pipeline.query`. Every read goes through
:mod:`pipeline.query.coverage` first: a window with missing, damaged or not yet computed
chunks is refused unless ``allow_incomplete``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DamagedOutputError, QueryError, WindowError
from pipeline.io.omezarr import (
    CONFIDENCE_LAYER,
    LABELS_LAYER,
    STORE_SUFFIX,
    SceneWriter,
    open_group,
    read_array,
)
from pipeline.query.coverage import DecodingArray, decode_failure, tile_key, trusted_tiles
from pipeline.query.stats import ClassStats, class_stats, with_coverage
from pipeline.scene import Georef

__all__ = ["READ_WORKERS", "SceneView"]

READ_WORKERS = 4  # concurrent chunk-tile reads for stats/previews (S3 latency hiding)
_Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Window:
    """A query window: its level-0 box, the level's array and box, the chunk tiles to read
    and the keys of those not to read (``coverage``), and the array's path in the store."""

    box: _Box
    array: Any
    level_box: _Box
    tiles: list[_Box]
    skip: set[str]
    path: str

    def key(self, tile: _Box) -> str:
        return tile_key(self.path, self.array.chunks, tile)


class SceneView:
    """Read access to one scene's OME-Zarr store."""

    def __init__(self, writer: SceneWriter, storage_options: Mapping[str, Any]) -> None:
        self._w = writer
        self._so = dict(storage_options)
        self.scene_id = writer.scene_id
        self.url = writer.url
        self.output_url = writer.url[: -len(writer.scene_id + STORE_SUFFIX) - 1]
        self._integrity: Any = None
        self.height, self.width, self.levels = writer.height, writer.width, writer.levels
        self.chunk = writer.chunk
        attrs = writer.attrs
        self.hgn: dict[str, Any] = dict(attrs.get("hgn") or {})
        geo = self.hgn.get("georeference")
        self.georef = Georef(geo.get("crs"), tuple(geo["transform"])) if geo else None
        self.classes = self._read_classes()
        self.layers = [LABELS_LAYER] + ([CONFIDENCE_LAYER] if writer.confidence else [])

    def integrity(self) -> Any:
        """The cheap integrity check of this scene (:mod:`pipeline.state.checks`), cached."""
        if self._integrity is None:
            from pipeline.state.checks import inspect_scene

            self._integrity = inspect_scene(self.output_url, self.scene_id, self._so)
        return self._integrity

    def _read_classes(self) -> list[tuple[str, tuple[int, int, int, int]]]:
        group = open_group(self.url, self._so, "r", f"labels/{LABELS_LAYER}")
        il = group.attrs["ome"]["image-label"]
        names = {p["label-value"]: p.get("name", str(p["label-value"])) for p in il["properties"]}
        colors = {c["label-value"]: tuple(c["rgba"]) for c in il["colors"]}
        n = max([*names, *colors]) + 1
        return [(names.get(i, str(i)), colors.get(i, (0, 0, 0, 0))) for i in range(n)]

    def metadata(self) -> dict[str, Any]:
        """JSON-ready: shape, levels, chunk, layers, classes, georeference, provenance."""
        return {
            "scene_id": self.scene_id, "store": self.url, "height": self.height,
            "width": self.width, "levels": self.levels,
            "level_shapes": [list(self.level_shape(k)) for k in range(self.levels)],
            "chunk": list(self.chunk), "layers": self.layers,
            "classes": [{"label": i, "name": n, "rgba": list(c)}
                        for i, (n, c) in enumerate(self.classes)],
            "georeference": self.georef.to_dict() if self.georef else None,
            "hgn": self.hgn,
        }

    def level_shape(self, level: int) -> tuple[int, int]:
        self._check_level(level)
        return self._w.level_shape(level)

    def array_path(self, layer: str, level: int) -> str:
        """Path of a layer's level array in the store (also its chunks' key prefix)."""
        self._check_level(level)
        if layer not in self.layers:
            raise QueryError(f"layer={layer!r}: scene {self.scene_id!r} has {self.layers}")
        return self._w.array_path(layer, level)

    def _check_level(self, level: int) -> None:
        if not (isinstance(level, int) and 0 <= level < self.levels):
            raise QueryError(
                f"level={level!r} is out of range for scene {self.scene_id!r}: it has levels "
                f"0..{self.levels - 1} (0 = full resolution)"
            )

    # -- boxes
    def pixel_box(
        self,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        clip: bool = False,
    ) -> tuple[int, int, int, int]:
        """Level-0 box from a pixel box or a geographic bbox (whole scene if neither)."""
        if box is not None and bbox is not None:
            raise QueryError("give a pixel box or a geographic bbox, not both")
        if bbox is not None:
            box = self._geo_to_pixels(bbox)
            what = f"bbox {tuple(bbox)} (pixels {box})"
        else:
            what = f"box {tuple(box) if box is not None else None}"
        if box is None:
            return (0, self.height, 0, self.width)
        if len(box) != 4:
            raise WindowError(f"box {tuple(box)!r}: expected 4 numbers y0, y1, x0, x1")
        y0, y1, x0, x1 = (int(v) for v in box)
        if clip:
            y0, y1 = max(y0, 0), min(y1, self.height)
            x0, x1 = max(x0, 0), min(x1, self.width)
        if not (0 <= y0 < y1 <= self.height and 0 <= x0 < x1 <= self.width):
            raise WindowError(
                f"{what} is outside scene {self.scene_id!r} of {self.height} x {self.width} px "
                "(need 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width"
                f"{'' if clip else '; clip=True / --clip keeps the part inside'})"
            )
        return (y0, y1, x0, x1)

    def _geo_to_pixels(self, bbox: Sequence[float]) -> tuple[int, int, int, int]:
        if self.georef is None:
            raise QueryError(
                f"scene {self.scene_id!r} has no georeference (its input had none): use a "
                "pixel box (y0, y1, x0, x1) instead of a geographic bbox"
            )
        if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise WindowError(f"bbox {tuple(bbox)!r}: expected xmin, ymin, xmax, ymax with "
                              "xmin < xmax and ymin < ymax (in the scene's CRS)")
        x0, dx, rx, y0, ry, dy = self.georef.transform
        inv = np.linalg.inv(np.array([[dx, rx], [ry, dy]], dtype=float))
        xs, ys = [], []
        for gx, gy in ((bbox[0], bbox[1]), (bbox[0], bbox[3]), (bbox[2], bbox[1]),
                       (bbox[2], bbox[3])):
            col, row = inv @ np.array([gx - x0, gy - y0])
            xs.append(col)
            ys.append(row)
        return (math.floor(min(ys) + 1e-9), math.ceil(max(ys) - 1e-9),
                math.floor(min(xs) + 1e-9), math.ceil(max(xs) - 1e-9))

    # -- reads
    @staticmethod
    def _level_box(box: tuple[int, int, int, int], level: int) -> tuple[int, int, int, int]:
        f = 2**level
        y0, y1, x0, x1 = box
        return (y0 // f, -(-y1 // f), x0 // f, -(-x1 // f))

    def _window(self, layer: str, level: int, box: Sequence[int] | None,
                bbox: Sequence[float] | None, clip: bool, allow_incomplete: bool) -> _Window:
        """The window a query reads, its chunks checked (refused unless ``allow_incomplete``)."""
        b = self.pixel_box(box, bbox, clip)
        path = self.array_path(layer, level)
        arr = read_array(self.url, path, self._so)
        lbox = self._level_box(b, level)
        tiles, skip = trusted_tiles(self, path, level, lbox, arr.chunks, allow_incomplete)
        return _Window(b, arr, lbox, tiles, skip, path)

    def read(
        self,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        level: int = 0,
        layer: str = LABELS_LAYER,
        clip: bool = False,
        allow_incomplete: bool = False,
    ) -> np.ndarray:
        """A window as a (rows, cols) uint8 numpy array.

        Refuses a window with missing or damaged chunks (:mod:`pipeline.query.coverage`)
        unless ``allow_incomplete``; then those chunks read as 0.
        """
        win = self._window(layer, level, box, bbox, clip, allow_incomplete)
        ly0, ly1, lx0, lx1 = win.level_box
        out = np.zeros((ly1 - ly0, lx1 - lx0), dtype=np.uint8)
        for ty0, ty1, tx0, tx1 in win.tiles:
            key = win.key((ty0, ty1, tx0, tx1))
            if key in win.skip:
                continue
            try:
                out[ty0 - ly0:ty1 - ly0, tx0 - lx0:tx1 - lx0] = win.array[ty0:ty1, tx0:tx1]
            except Exception as exc:  # bytes that do not decode: name the chunk
                if not allow_incomplete:
                    raise decode_failure(self, key, exc) from None
        return out

    def read_xarray(
        self,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        level: int = 0,
        layer: str = LABELS_LAYER,
        clip: bool = False,
        allow_incomplete: bool = False,
    ) -> Any:
        """A window as an ``xarray.DataArray`` (y, x).

        Coordinates are pixel centres: in CRS units for a north-up georeference, else in
        level-0 pixel units. attrs carry the CRS, the level's GDAL transform and CF
        ``flag_values``/``flag_meanings`` for the classes.
        """
        import xarray as xr

        b = self.pixel_box(box, bbox, clip)
        data = self.read(b, level=level, layer=layer, allow_incomplete=allow_incomplete)
        ly0, ly1, lx0, lx1 = self._level_box(b, level)
        f = 2**level
        rows = (np.arange(ly0, ly1) + 0.5) * f - 0.5  # level-0 pixel-centre coordinates
        cols = (np.arange(lx0, lx1) + 0.5) * f - 0.5
        attrs: dict[str, Any] = {"scene_id": self.scene_id, "level": level, "layer": layer,
                                 "box": list(b)}
        if layer == LABELS_LAYER:
            attrs["flag_values"] = list(range(len(self.classes)))
            attrs["flag_meanings"] = " ".join(n.replace(" ", "_") for n, _ in self.classes)
        if self.georef is not None:
            g = self.georef.scaled(f)
            attrs["crs"] = g.crs or ""
            attrs["transform"] = list(g.transform)
            x0, dx, rx, y0, ry, dy = self.georef.transform
            if rx == 0 and ry == 0:
                return xr.DataArray(data, dims=("y", "x"), name=layer, attrs=attrs, coords={
                    "y": y0 + (rows + 0.5) * dy, "x": x0 + (cols + 0.5) * dx})
        return xr.DataArray(data, dims=("y", "x"), name=layer, attrs=attrs,
                            coords={"y": rows, "x": cols})

    def class_stats(
        self,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        level: int = 0,
        clip: bool = False,
        allow_incomplete: bool = False,
    ) -> ClassStats:
        """Pixels and true areas (m2) per class; chunk by chunk, so any scene size fits.

        Areas are geodesic (:mod:`pipeline.query.stats`, :mod:`pipeline.query.areas`): exact
        per row on grids whose pixel area varies only with latitude, interpolated between
        exact samples on others. At a level k > 0 each coarse pixel counts for the level-0
        pixels (and the area) it covers inside the box. A window with missing, damaged or
        not yet computed chunks is refused (:mod:`pipeline.query.coverage`); with
        ``allow_incomplete`` they are left out and ``coverage`` (also on every row) says
        which share was counted.
        """
        win = self._window(LABELS_LAYER, level, box, bbox, clip, allow_incomplete)
        skip = set(win.skip)
        while True:
            good = [t for t in win.tiles if win.key(t) not in skip]
            try:
                st = class_stats(self.scene_id, DecodingArray(win.array, self, win.path),
                                 win.box, level, good, self.classes, self.georef, READ_WORKERS)
                break
            except DamagedOutputError as exc:  # a chunk that does not decode
                if not allow_incomplete:
                    raise
                skip |= set(exc.chunks)
        return with_coverage(st, win.box, skip) if allow_incomplete else st

    def preview(
        self,
        path: str | Path,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        max_size: int = 1024,
        source: bool = False,
        alpha: float = 0.5,
        clip: bool = False,
    ) -> Path:
        """PNG coloured by the class colours; ``source=True`` blends it over the input image
        (:func:`pipeline.query.preview.write_preview`)."""
        from pipeline.query.preview import write_preview

        return write_preview(self, path, box=box, bbox=bbox, max_size=max_size, source=source,
                             alpha=alpha, clip=clip)
