"""Training entry points: ``hgn-pipeline train --config train.yaml`` calls :func:`train`.

Everything that changes the result is in :class:`TrainConfig` (``hgn_model.training.config``);
the same config and seed reproduce the same checkpoint on the same machine (torch CPU kernels
are deterministic for a fixed thread count). The loop is ``hgn_model.training.loop``; several
workers go through Ray Train (``hgn_model.training.distributed``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hgn_model.checkpoint import CheckpointConfig
from hgn_model.training.config import (
    PairsData,
    SyntheticData,
    TrainConfig,
    ZarrData,
    load_train_config,
    validate_train_config,
)

__all__ = ["PairsData", "SyntheticData", "TrainConfig", "ZarrData", "load_train_config",
           "train", "validate_train_config"]


def train(cfg: TrainConfig, log: Callable[[str], None] = print, resume: bool = False,
          progress: Callable[[dict], None] | None = None) -> tuple[Path, CheckpointConfig]:
    """Train in this process; returns (final weights path, final checkpoint config)."""
    from hgn_model.training.loop import run_training

    return run_training(cfg, log=log, resume=resume, progress=progress)
