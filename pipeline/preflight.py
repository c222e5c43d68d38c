"""Checks a scene must pass before any of its windows is sent: dtype, bands vs the model."""

from __future__ import annotations

from typing import Any

from pipeline.catalog import SUPPORTED_DTYPES, SceneInfo

__all__ = ["scene_problem"]


def scene_problem(scene: SceneInfo, cfg: Any, model: Any) -> str | None:
    """Why ``scene`` cannot be segmented with ``cfg`` and ``model`` (None: it can).

    ``cfg``: a :class:`~pipeline.config.RunConfig`; ``model``: a
    :class:`~pipeline.execute.ModelInfo`.
    """
    c = scene.shape[0]
    if scene.dtype not in SUPPORTED_DTYPES:
        return f"dtype {scene.dtype} is not supported; convert to one of {SUPPORTED_DTYPES}"
    if cfg.bands is not None and max(cfg.bands) >= c:
        return (
            f"bands {list(cfg.bands)} select band {max(cfg.bands)} but the scene has {c} bands "
            f"(0..{c - 1}); fix `bands` in the config"
        )
    n = c if cfg.bands is None else len(cfg.bands)
    if n != model.in_channels:
        hint = (
            f"set bands: {list(range(model.in_channels))}"
            if c > model.in_channels
            else ("use a checkpoint trained on this many bands")
        )
        return (
            f"{n} bands go to a model that expects {model.in_channels} "
            f"({model.arch}, checkpoint {model.sha256[:12]}): {hint}"
        )
    return None
