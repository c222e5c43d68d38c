"""Preview PNGs: the RGB image and the label colours side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ._classes import CLASSES, Scene


def _to_rgb8(scene: Scene) -> np.ndarray:
    """First three bands as (H, W, 3) uint8, scaled by the scene's value range."""
    img = scene.image[:3]
    if img.dtype == np.uint8:
        rgb = img
    else:
        vmax = float(scene.params.get("value_max") or np.iinfo(img.dtype).max)
        rgb = np.clip(img.astype(np.float32) * (255.0 / vmax) + 0.5, 0, 255).astype(np.uint8)
    return np.moveaxis(rgb, 0, -1)


def preview_png(scene: Scene, path: str | Path, max_width: int | None = None) -> Path:
    """Save the RGB image and the label colours side by side as a PNG; returns the path.

    ``max_width`` shrinks the picture (box filter for the image, nearest for labels) to at most
    that many px wide.
    """
    lut = np.array([c.color[:3] for c in CLASSES], dtype=np.uint8)
    rgb = Image.fromarray(np.ascontiguousarray(_to_rgb8(scene)))
    lab = Image.fromarray(lut[scene.labels])
    h, w = scene.labels.shape
    gap = 8
    if max_width is not None and 2 * w + gap > max_width:
        f = max(max_width - gap, 2) / (2 * w)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
        lab = lab.resize(size, Image.Resampling.NEAREST)
        w, h = size
    out = Image.new("RGB", (2 * w + gap, h), (255, 255, 255))
    out.paste(rgb, (0, 0))
    out.paste(lab, (w + gap, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path
