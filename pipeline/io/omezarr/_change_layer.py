"""The change layer of a scene's OME-Zarr store: ``labels/change`` beside ``labels/segmentation``.

A multiscale OME-Zarr 0.5 label image (uint16, the codes of :mod:`pipeline.change`) on the
scene's grid, same chunks, same number of levels (2x2 mode downsampling, like the labels),
the georeference attributes of the labels, and ``image-label`` colours and properties for
every code present: unchanged pixels dimmed (translucent black), changed pixels in the
colour of their current class, each with ``name`` ("forest -> urban"), ``from``, ``to``
and ``changed``. ``attrs["hgn_change"]`` records what was compared and the from -> to matrix
(:meth:`pipeline.change.ChangeMatrix.to_dict`). ``labels/zarr.json`` lists the layer, so napari
and ome-zarr-py find it next to the segmentation.

Writes go through :class:`ChangeLayerWriter` (the ``diff`` command and nightly runs); reads
through :func:`open_change_level` and :func:`read_change_attrs` (queries, the viewer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.change import BASE, ChangeMatrix
from pipeline.io.omezarr._arrays import open_group, read_array
from pipeline.io.omezarr._layout import LABELS_LAYER, georef_attrs, level_shapes, multiscale
from pipeline.io.omezarr._pyramid import downsample_level, mode_downsample
from pipeline.scene import Georef

__all__ = [
    "CHANGE_LAYER",
    "UNCHANGED_RGBA",
    "ChangeLayerWriter",
    "change_colors",
    "open_change_level",
    "read_change_attrs",
]

CHANGE_LAYER = "change"
UNCHANGED_RGBA = (0, 0, 0, 96)  # translucent dark: compared, unchanged (dims it)


def change_colors(matrix: ChangeMatrix, colors_to: Sequence[Sequence[int]]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``image-label`` (colors, properties) for every code present in ``matrix``."""
    colors, props = [], []
    for p in matrix.pairs():
        if not (p["from"] and p["to"]):
            continue  # no data on either side: code 0, transparent by the OME-Zarr default
        code = p["from"] * BASE + p["to"]
        if not p["changed"]:
            rgba = list(UNCHANGED_RGBA)
        elif p["to"] < len(colors_to):
            rgba = [*list(colors_to[p["to"]])[:3], 255]
        else:  # an id beyond the class table: still visible
            rgba = [255, 0, 255, 255]
        colors.append({"label-value": code, "rgba": [int(c) for c in rgba]})
        props.append({"label-value": code, "name": f"{p['from_name']} -> {p['to_name']}",
                      "from": p["from"], "to": p["to"], "changed": p["changed"]})
    colors.append({"label-value": 0, "rgba": [0, 0, 0, 0]})
    props.append({"label-value": 0, "name": "no data", "changed": False})
    return colors, props


def open_change_level(store_url: str, level: int, options: Mapping[str, Any] | None = None
                      ) -> Any:
    """The level-``level`` array of the change layer, read-only (FileNotFoundError if none)."""
    return read_array(store_url, f"labels/{CHANGE_LAYER}/{level}", options)


def read_change_attrs(store_url: str, options: Mapping[str, Any] | None = None
                      ) -> dict[str, Any] | None:
    """``hgn_change`` of the layer when the store has a complete one, else None."""
    try:
        group = open_group(store_url, options or {}, "r", f"labels/{CHANGE_LAYER}")
    except (FileNotFoundError, KeyError):
        return None
    except Exception as exc:  # zarr raises its own "not found" types across versions
        if "not found" in str(exc).lower() or "nothing found" in str(exc).lower():
            return None
        raise
    info = dict(group.attrs).get("hgn_change")
    return info if isinstance(info, dict) and info.get("status") == "complete" else None


class ChangeLayerWriter:
    """Creates ``labels/change`` (replacing an old one), writes level 0, builds the pyramid."""

    def __init__(self, store_url: str, height: int, width: int, chunk: tuple[int, int],
                 levels: int, georef: Georef | None, options: Mapping[str, Any] | None) -> None:
        self.url = store_url
        self.shapes = level_shapes(height, width, levels)
        self.chunk = chunk
        self.georef = georef
        self.options = dict(options or {})
        self._arrays: list[Any] = []

    def create(self, info: Mapping[str, Any]) -> None:
        """Empty arrays, every level; ``hgn_change`` = ``info`` with status "incomplete"."""
        labels = open_group(self.url, self.options, "r+", "labels")
        geo0 = georef_attrs(self.georef, self.shapes[0]) if self.georef is not None else {}
        group = labels.create_group(CHANGE_LAYER, overwrite=True, attributes={
            "ome": {"version": "0.5",
                    "multiscales": [multiscale(CHANGE_LAYER, len(self.shapes), "mode")],
                    "image-label": {"colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}]}},
            "hgn_change": {**info, "status": "incomplete"}, **geo0,
        })
        self._arrays = []
        for k, shape in enumerate(self.shapes):
            attrs = (georef_attrs(self.georef.scaled(2**k), shape)
                     if self.georef is not None else {})
            chunks = (min(self.chunk[0], shape[0]), min(self.chunk[1], shape[1]))
            self._arrays.append(group.create_array(
                str(k), shape=shape, chunks=chunks, dtype="uint16", fill_value=0,
                dimension_names=("y", "x"), attributes=attrs, overwrite=True))

    def write(self, y0: int, x0: int, codes: np.ndarray) -> None:
        """Level-0 codes of one chunk-aligned block."""
        h, w = codes.shape
        self._arrays[0][y0:y0 + h, x0:x0 + w] = codes

    def finish(self, info: Mapping[str, Any], matrix: ChangeMatrix,
               colors_to: Sequence[Sequence[int]]) -> None:
        """Pyramid, ``image-label`` colours of the codes present, listing in ``labels``."""
        for k in range(1, len(self.shapes)):
            downsample_level(self._arrays[k - 1], self._arrays[k], mode_downsample)
        colors, props = change_colors(matrix, colors_to)
        group = open_group(self.url, self.options, "r+", f"labels/{CHANGE_LAYER}")
        ome = dict(group.attrs["ome"])
        ome["image-label"] = {"colors": colors, "properties": props}
        group.attrs.update({"ome": ome, "hgn_change": {**info, "status": "complete",
                                                       "matrix": matrix.to_dict()}})
        labels = open_group(self.url, self.options, "r+", "labels")
        lome = dict(labels.attrs["ome"])
        names = [n for n in lome.get("labels", [LABELS_LAYER]) if n != CHANGE_LAYER]
        lome["labels"] = [*names, CHANGE_LAYER]
        labels.attrs.update({"ome": lome})
