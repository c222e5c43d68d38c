"""Map tiles (256 px PNG) of a scene's layers, read window by window from its pyramid levels.

Tile grid: Leaflet's ``L.CRS.Simple`` with one map unit per level-0 pixel. At zoom ``z <= 0``
a tile is 256 x 256 pixels of pyramid level ``k = -z``: tile ``(x, y)`` covers level-k rows
``256 y .. 256 (y + 1)`` and columns ``256 x .. 256 (x + 1)``. Finer zooms are level-0 tiles
scaled by the browser; coarser zooms than the last level are the last level's tiles scaled.
Each tile reads only its window of that level (:meth:`SceneView.read`): memory per request is
one tile, whatever the scene size. Pixels outside the scene are transparent.

Layers: ``segmentation`` (class colours), ``confidence`` (a colour ramp, 0 = no data
transparent), ``change`` (the change layer's own ``image-label`` colours) and ``source`` (the
input image through the format layer's readers, stretched per band; only down to
:data:`SOURCE_MAX_LEVEL`, since inputs have no pyramid to read from).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from pipeline.errors import NotFoundError
from pipeline.serve.scenes import Scene, source_reader, source_stretch

__all__ = ["LAYERS", "SOURCE_MAX_LEVEL", "TILE", "render_tile"]

TILE = 256
SOURCE_MAX_LEVEL = 3  # a source tile at level k reads (256 * 2^k)^2 input px: 2048^2 at 3
LAYERS = ("segmentation", "confidence", "change", "source")
# Confidence ramp anchors (dark blue = unsure -> yellow = sure), interpolated to 256 entries.
_RAMP = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]])


def _ramp_lut() -> np.ndarray:
    x = np.linspace(0, 1, len(_RAMP))
    t = np.linspace(0, 1, 256)
    lut = np.zeros((256, 4), np.uint8)
    for c in range(3):
        lut[:, c] = np.round(np.interp(t, x, _RAMP[:, c]))
    lut[1:, 3] = 255  # confidence 0 = no data: transparent
    return lut


_CONFIDENCE_LUT = _ramp_lut()


def _labels_lut(scene: Scene) -> np.ndarray:
    def make() -> np.ndarray:
        lut = np.zeros((256, 4), np.uint8)
        for i, (_, rgba) in enumerate(scene.view.classes[:256]):
            lut[i] = rgba
        return lut

    return scene.cached("labels_lut", make)


def _change_lut(scene: Scene) -> np.ndarray:
    def make() -> np.ndarray:
        from pipeline.io.omezarr import CHANGE_LAYER, open_group

        group = open_group(scene.view.url, scene.so, "r", f"labels/{CHANGE_LAYER}")
        lut = np.zeros((1 << 16, 4), np.uint8)
        for c in group.attrs["ome"]["image-label"]["colors"]:
            lut[int(c["label-value"])] = c["rgba"]
        return lut

    return scene.cached("change_lut", make)


def tile_box(scene: Scene, z: int, tx: int, ty: int) -> tuple[int, int, tuple[int, ...]]:
    """(level, factor, level-0 box clipped to the scene) of a tile; NotFoundError outside."""
    view = scene.view
    level = -int(z)
    if not 0 <= level < view.levels:
        raise NotFoundError(f"zoom {z}: scene {view.scene_id!r} has zooms {1 - view.levels}..0")
    f = 2**level
    span = TILE * f
    y0, x0 = ty * span, tx * span
    if tx < 0 or ty < 0 or y0 >= view.height or x0 >= view.width:
        raise NotFoundError(f"tile {z}/{tx}/{ty} is outside scene {view.scene_id!r}")
    return level, f, (y0, min(y0 + span, view.height), x0, min(x0 + span, view.width))


def _source_rgba(scene: Scene, level: int, f: int, box: tuple[int, ...]) -> np.ndarray:
    from pipeline.nodata import valid_mask

    if level > SOURCE_MAX_LEVEL:
        raise NotFoundError(f"the source image is shown down to zoom -{SOURCE_MAX_LEVEL}")
    opened = source_reader(scene)
    if opened is None:
        raise NotFoundError(f"scene {scene.view.scene_id!r}: its input image is not readable")
    reader, bands = opened
    y0, y1, x0, x1 = box
    win = reader.read(y0, y1, x0, x1, bands=bands)[:, ::f, ::f]
    lo, hi = source_stretch(scene)
    scaled = (win.astype(np.float32) - lo[:, None, None]) / (hi - lo)[:, None, None]
    rgb = np.clip(scaled * 255 + 0.5, 0, 255).astype(np.uint8)
    mask = valid_mask(win, reader.info.nodata)
    alpha = np.full(rgb.shape[1:], 255, np.uint8) if mask is None else mask * np.uint8(255)
    return np.concatenate([np.moveaxis(rgb, 0, -1), alpha[..., None]], axis=-1)


def _layer_rgba(scene: Scene, layer: str, level: int, f: int, box: tuple[int, ...]) -> Any:
    view = scene.view
    if layer == "source":
        return _source_rgba(scene, level, f, box)
    if layer == "change":
        from pipeline.io.omezarr import open_change_level

        y0, y1, x0, x1 = box
        try:
            arr = open_change_level(view.url, level, scene.so)
        except FileNotFoundError:
            raise NotFoundError(f"scene {view.scene_id!r} has no change layer") from None
        codes = np.asarray(arr[y0 // f:-(-y1 // f), x0 // f:-(-x1 // f)])
        return _change_lut(scene)[codes]
    if layer not in view.layers:
        raise NotFoundError(f"layer {layer!r}: scene {view.scene_id!r} has {view.layers}")
    # A scene being written or damaged shows what is there: missing chunks are transparent.
    data = view.read(box, level=level, layer=layer, allow_incomplete=True)
    return (_labels_lut(scene) if layer == "segmentation" else _CONFIDENCE_LUT)[data]


def render_tile(scene: Scene, layer: str, z: int, tx: int, ty: int) -> bytes:
    """PNG bytes of one 256 x 256 tile (transparent outside the scene)."""
    from PIL import Image

    if layer not in LAYERS:
        raise NotFoundError(f"layer {layer!r}: the viewer has {', '.join(LAYERS)}")
    level, f, box = tile_box(scene, z, tx, ty)
    rgba = _layer_rgba(scene, layer, level, f, box)
    tile = np.zeros((TILE, TILE, 4), np.uint8)
    tile[:rgba.shape[0], :rgba.shape[1]] = rgba[:TILE, :TILE]
    buf = io.BytesIO()
    Image.fromarray(tile, "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
