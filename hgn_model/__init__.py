"""HGN: Hierarchical Grafting Network for ultra-high-resolution segmentation.

Public API::

    from hgn_model import create_model, list_models, Segmenter, load_checkpoint, save_checkpoint
"""

from hgn_model.checkpoint import (
    CheckpointConfig,
    ClassInfo,
    load_checkpoint,
    save_checkpoint,
    shipped_checkpoint,
)
from hgn_model.errors import CheckpointError, ConfigError, HGNError, InputError
from hgn_model.registry import create_model, list_models
from hgn_model.segmenter import Prediction, Segmenter

from hgn_model._version import __version__

__all__ = [
    "CheckpointConfig",
    "CheckpointError",
    "ClassInfo",
    "ConfigError",
    "HGNError",
    "InputError",
    "Prediction",
    "Segmenter",
    "__version__",
    "create_model",
    "list_models",
    "load_checkpoint",
    "save_checkpoint",
    "shipped_checkpoint",
]
