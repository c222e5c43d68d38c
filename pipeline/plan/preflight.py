"""Checks a scene passes before any of its windows is scheduled.

- :func:`scene_problem`: from metadata alone: dtype, band selection, band count vs the model.
- :func:`value_range_problem`: from a small sample of pixels: do the scene's values fall in
  the range the checkpoint was trained on (``InputSpec.range_problem``, contract C1)? A float
  scene holding 0..255 given to a model trained on 0..1, or raw 12-bit DN given to an 8-bit
  model, is an error naming the scene, the range seen and the fix, never a silent "ok".

Each returns None when the scene is fine, else one sentence (the scene fails with it; the
others go on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipeline.nodata import valid_mask
from pipeline.scene import SUPPORTED_DTYPES, SceneInfo

__all__ = [
    "SAMPLE_GRID",
    "SAMPLE_SIDE",
    "layout_problem",
    "sample_range",
    "scene_bands",
    "scene_problem",
    "value_range_problem",
]

SAMPLE_GRID = 3  # windows per axis spread over the scene: borders and centre alike
SAMPLE_SIDE = 256  # px per sample window; 9 x 256^2 px is a few ms of reading per scene
SAMPLE_PERCENTILES = (0.1, 99.9)  # robust to hot pixels, as the checkpoint's value_range is


def scene_bands(scene: SceneInfo, cfg: Any, model: Any) -> tuple[int, ...] | None:
    """The band selection for ``scene``: the config's ``bands``, or None (all, as stored).

    A selection that needs more bands than the scene has is not applied to a scene that
    already has exactly the model's band count (the RGB PNG beside 7-band stacks read with
    ``bands: [3, 2, 1]``); the run records the bands each scene was read with.
    """
    bands = cfg.bands
    if bands is None:
        return None
    if max(bands) >= scene.bands and scene.bands == model.in_channels:
        return None
    return tuple(bands)


# A plain array read as CHW whose "bands" axis is this long and whose width is this short is
# almost surely (H, W, C): hyperspectral cubes a dozen pixels wide do not happen in practice.
HWC_LIKE_BANDS = 100
HWC_LIKE_WIDTH = 16


def layout_problem(scene: SceneInfo, cfg: Any) -> str | None:
    """Advice ``layout: hwc`` for a plain array that looks (H, W, C) but is read as CHW.

    Only when ``layout`` was not given (the default CHW was assumed): a user who says CHW
    explicitly is believed.
    """
    explicit = "layout" in getattr(cfg, "model_fields_set", set())
    c, h, w = scene.shape
    if explicit or scene.kind != "zarr" or scene.axes != "cyx":
        return None
    if c >= HWC_LIKE_BANDS and 1 <= w <= HWC_LIKE_WIDTH:
        return (f"the array ({c}, {h}, {w}) looks stored as (H, W, C) = ({c}, {h}, {w}) but is "
                f"read as CHW ({c} bands of {h} x {w} px): set layout: hwc in the run config "
                "(--set layout=hwc); if it really is CHW, say layout: chw")
    return None


def scene_problem(scene: SceneInfo, cfg: Any, model: Any) -> str | None:
    """Why ``scene`` cannot be segmented with ``cfg`` and ``model`` (None: it can)."""
    c = scene.shape[0]
    if scene.dtype not in SUPPORTED_DTYPES:
        return (f"dtype {scene.dtype!r} is not supported; convert the scene to one of "
                f"{', '.join(SUPPORTED_DTYPES)}")
    layout = layout_problem(scene, cfg)
    if layout is not None:
        return layout
    bands = scene_bands(scene, cfg, model)
    if bands is not None and max(bands) >= c:
        return (
            f"bands {list(bands)} select band {max(bands)} but the scene has {c} bands "
            f"(0..{c - 1}); fix `bands` in the config"
        )
    n = c if bands is None else len(bands)
    if n != model.in_channels:
        hint = (
            f"set bands: {list(range(model.in_channels))}"
            if c > model.in_channels
            else "use a checkpoint trained on this many bands"
        )
        return (
            f"{n} bands go to a model that expects {model.in_channels} "
            f"({model.arch}, checkpoint {model.sha256[:12]}): {hint}"
        )
    return None


def _windows(h: int, w: int) -> list[tuple[int, int, int, int]]:
    side_y, side_x = min(SAMPLE_SIDE, h), min(SAMPLE_SIDE, w)
    out = []
    for i in range(SAMPLE_GRID):
        for j in range(SAMPLE_GRID):
            cy, cx = (2 * i + 1) * h // (2 * SAMPLE_GRID), (2 * j + 1) * w // (2 * SAMPLE_GRID)
            y0 = min(max(cy - side_y // 2, 0), h - side_y)
            x0 = min(max(cx - side_x // 2, 0), w - side_x)
            out.append((y0, y0 + side_y, x0, x0 + side_x))
    return sorted(set(out))


def sample_range(reader: Any, bands: Sequence[int] | None, nodata: float | None
                 ) -> list[tuple[float, float]] | None:
    """Per-band (p0.1, p99.9) of data pixels in a few windows; None if none could be read.

    Windows that fail to read are left out: read errors are reported by the run itself, at
    the unit that meets them, with scene and window.
    """
    _, h, w = reader.shape
    parts: list[np.ndarray] = []
    for y0, y1, x0, x1 in _windows(h, w):
        try:
            window = reader.read(y0, y1, x0, x1, bands=bands)
        except Exception:
            continue
        mask = valid_mask(window, nodata)
        pixels = window.reshape(window.shape[0], -1)
        if mask is not None:
            pixels = pixels[:, mask.ravel()]
        pixels = pixels.astype(np.float64)
        pixels = pixels[:, np.isfinite(pixels).all(axis=0)]
        if pixels.size:
            parts.append(pixels)
    if not parts:
        return None
    values = np.concatenate(parts, axis=1)
    lo, hi = np.percentile(values, SAMPLE_PERCENTILES, axis=1)
    return [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)]


def value_range_problem(scene: SceneInfo, cfg: Any, model: Any,
                        storage_options: Mapping[str, Any] | None = None,
                        reader: Any = None) -> str | None:
    """The checkpoint's verdict on a sample of ``scene``'s values (None: compatible).

    Skipped (None) for models without an input spec that can judge ranges (stand-ins,
    checkpoints older than contract C1) and for scenes whose sample holds no data pixels.
    """
    spec = getattr(model, "input", None)
    if spec is None or not hasattr(spec, "range_problem"):
        return None
    if reader is None:
        from pipeline.io.readers import open_scene

        reader = open_scene(scene, storage_options)
    observed = sample_range(reader, scene_bands(scene, cfg, model), scene.nodata)
    if observed is None:
        return None
    problem = spec.range_problem(scene.dtype, observed, value_max=cfg.value_max_for(scene.dtype))
    if problem is None:
        return None
    return f"values out of the model's range: {problem}"
