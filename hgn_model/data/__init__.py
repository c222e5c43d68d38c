"""Data for HGN: the procedural UHR aerial benchmark (``hgn_model.data.synthetic``).

The names below resolve lazily, so importing ``hgn_model.data`` (or ``hgn_model``) does not
load the generator and its numpy/scipy/PIL imports until a name is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CLASSES",
    "CONTEXT_CLASSES",
    "NUM_CLASSES",
    "THIN_CLASSES",
    "ClassSpec",
    "Scene",
    "generate_scene",
    "make_archive",
    "preview_png",
    "read_scene_zarr",
    "write_scene_zarr",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("hgn_model.data.synthetic"), name)
    raise AttributeError(f"module 'hgn_model.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
