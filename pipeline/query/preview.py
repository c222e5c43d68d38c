"""PNG previews of a scene's labels, optionally over its source image read through the readers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import QueryError
from pipeline.scene import SceneInfo

if TYPE_CHECKING:
    from pipeline.query.view import SceneView

__all__ = ["display_bands", "source_info", "write_preview"]


def write_preview(
    view: SceneView,
    path: str | Path,
    box: Sequence[int] | None = None,
    bbox: Sequence[float] | None = None,
    max_size: int = 1024,
    source: bool = False,
    alpha: float = 0.5,
    clip: bool = False,
) -> Path:
    """PNG coloured by the class colours; ``source=True`` blends it over the input image.

    The labels come from the coarsest pyramid level that still gives ``max_size`` px;
    the source is read at full resolution tile by tile (mind huge boxes).
    """
    from PIL import Image

    if max_size < 1:
        raise QueryError(f"max_size={max_size!r} must be >= 1 pixel")
    if not 0.0 <= alpha <= 1.0:
        raise QueryError(f"alpha={alpha!r} must be in 0..1 (label opacity over the source)")
    b = view.pixel_box(box, bbox, clip)
    step = max(1, -(-max(b[1] - b[0], b[3] - b[2]) // max_size))
    level = min(view.levels - 1, int(math.log2(step)))
    r = max(1, step // 2**level)
    labels = view.read(b, level=level)[::r, ::r]
    lut = np.zeros((256, 4), np.uint8)
    for i, (_, rgba) in enumerate(view.classes):
        lut[i] = rgba
    rgba = lut[labels].astype(np.float32)
    if source:
        base = _source_rgb(view, b, step, labels.shape)
        a = rgba[..., 3:4] / 255.0 * alpha
        rgb = base * (1 - a) + rgba[..., :3] * a
        img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
    else:
        img = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, format="PNG")
    return out


def display_bands(hgn: Mapping[str, Any], info: SceneInfo) -> list[int]:
    """The input bands to show as RGB: the run's band selection (``config.bands``, all bands
    when unset), its first three, or its first band three times for a single-band scene."""
    bands = list((hgn.get("config") or {}).get("bands") or range(info.bands))
    if max(bands) >= info.bands:  # the run read this scene as stored (preflight.scene_bands)
        bands = list(range(info.bands))
    return bands[:3] if len(bands) >= 3 else [bands[0]] * 3


def source_info(view: SceneView) -> SceneInfo:
    """The input scene, from the provenance (older stores: by cataloguing its URL)."""
    recorded = view.hgn.get("input_scene")
    if isinstance(recorded, Mapping):
        return SceneInfo.from_dict(recorded)
    from pipeline.catalog import catalog

    url = view.hgn.get("input_url")
    layout = (view.hgn.get("config") or {}).get("layout", "CHW")
    if not url:
        raise QueryError(f"scene {view.scene_id!r}: provenance has no input_url")
    cat = catalog(url, view._so, layout=layout)
    if len(cat.scenes) != 1:
        reasons = "; ".join(str(f) for f in cat.failures) or f"{len(cat.scenes)} scenes"
        raise QueryError(f"scene {view.scene_id!r}: source {url} cannot be read ({reasons})")
    return cat.scenes[0]


def _source_rgb(view: SceneView, b: tuple[int, int, int, int], step: int,
                shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    from pipeline.io.readers import open_scene

    info = source_info(view)
    bands = display_bands(view.hgn, info)
    reader = open_scene(info, view._so)
    y0, y1, x0, x1 = b
    tile = max(step, 1024 // step * step)  # a multiple of step: strides stay aligned
    rows = []
    for ty in range(y0, y1, tile):
        cols = [np.asarray(reader.read(ty, min(ty + tile, y1), tx, min(tx + tile, x1),
                                       bands=bands))[:, ::step, ::step]
                for tx in range(x0, x1, tile)]
        rows.append(np.concatenate(cols, axis=2))
    img = np.concatenate(rows, axis=1).astype(np.float32)
    lo, hi = np.percentile(img, 2), np.percentile(img, 98)  # display stretch
    img = np.clip((img - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    pil = Image.fromarray(np.moveaxis(img, 0, -1), "RGB")
    if pil.size != (shape[1], shape[0]):
        pil = pil.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.asarray(pil, dtype=np.float32)
