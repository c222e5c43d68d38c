"""HGN: Hierarchical Grafting Network for ultra-high-resolution segmentation.

Public API::

    from hgn_model import create_model, list_models, Segmenter, load_checkpoint, save_checkpoint

Names are imported lazily so that light users (``hgn_model.data.synthetic``, ``--help``) do not
pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from hgn_model._version import __version__

_EXPORTS = {
    "CheckpointConfig": "hgn_model.checkpoint",
    "ClassInfo": "hgn_model.checkpoint",
    "InputSpec": "hgn_model.input_spec",
    "Normalization": "hgn_model.input_spec",
    "load_checkpoint": "hgn_model.checkpoint",
    "save_checkpoint": "hgn_model.checkpoint",
    "shipped_checkpoint": "hgn_model.checkpoint",
    "CheckpointError": "hgn_model.errors",
    "ConfigError": "hgn_model.errors",
    "HGNError": "hgn_model.errors",
    "InputError": "hgn_model.errors",
    "create_model": "hgn_model.registry",
    "list_models": "hgn_model.registry",
    "Prediction": "hgn_model.segmenter",
    "Segmenter": "hgn_model.segmenter",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hgn_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
