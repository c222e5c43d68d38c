"""Scoring a model on labelled regions through the real inference path (``Segmenter``).

Regions larger than ``TILE`` are predicted in tiles with a ``HALO`` of context on each side
(cropped away, like the pipeline's windows); nodata pixels are predicted with ``valid_mask``
and, like ignore labels, left out of every count.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hgn_model.checkpoint import CheckpointConfig
from hgn_model.data.classes import IGNORE_INDEX
from hgn_model.data.source import Source
from hgn_model.evaluate import ConfusionMatrix, IoUReport
from hgn_model.segmenter import Segmenter

__all__ = ["HALO", "TILE", "evaluate_plan", "evaluate_regions", "predict_region"]

TILE = 3072  # px: regions up to this size are predicted whole (the benchmark's 2448^2 scenes)
HALO = 256  # px of context around each tile when a region is larger


def predict_region(seg: Segmenter, source: Source, scene_id: str,
                   box: tuple[int, int, int, int], tile: int = TILE, halo: int = HALO
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels, truth labels) of ``box`` (y0, y1, x0, x1) of a scene."""
    ref = next(s for s in source.scenes if s.id == scene_id)
    y0, y1, x0, x1 = box
    pred = np.zeros((y1 - y0, x1 - x0), np.uint8)
    truth = np.full((y1 - y0, x1 - x0), IGNORE_INDEX, np.uint8)
    for ty in range(y0, y1, tile):
        for tx in range(x0, x1, tile):
            ty1, tx1 = min(ty + tile, y1), min(tx + tile, x1)
            whole = (ty, ty1, tx, tx1) == (0, ref.height, 0, ref.width)
            ry0, rx0 = (ty, tx) if whole else (max(ty - halo, 0), max(tx - halo, 0))
            ry1, rx1 = (ty1, tx1) if whole else (min(ty1 + halo, ref.height),
                                                 min(tx1 + halo, ref.width))
            win = source.read(scene_id, ry0, ry1, rx0, rx1)
            lab = seg.predict(win.image, valid_mask=win.valid).labels
            core = np.s_[ty - ry0:ty1 - ry0, tx - rx0:tx1 - rx0]
            out = np.s_[ty - y0:ty1 - y0, tx - x0:tx1 - x0]
            pred[out] = lab[core]
            t = win.labels[core].copy()
            if win.valid is not None:
                t[~win.valid[core]] = IGNORE_INDEX
            truth[out] = t
    return pred, truth


def evaluate_regions(seg: Segmenter, source: Source,
                     regions: Sequence[tuple[str, tuple[int, int, int, int]]]) -> IoUReport:
    cm = ConfusionMatrix(seg.num_classes)
    for scene_id, box in regions:
        pred, truth = predict_region(seg, source, scene_id, box)
        cm.update(truth, pred, ignore_index=IGNORE_INDEX)
    classes = seg.config.classes
    return cm.report([c.name for c in classes], [c.ignore for c in classes])


def evaluate_plan(model: torch.nn.Module, config: CheckpointConfig, source: Source,
                  regions: Sequence[tuple[str, tuple[int, int, int, int]]]) -> dict[str, Any]:
    """Metrics dict of an in-training model (scored on a copy: Segmenter fuses BN)."""
    seg = Segmenter(copy.deepcopy(model).cpu(), config, device="cpu")
    report = evaluate_regions(seg, source, regions)
    return metrics_of(report, source)


def metrics_of(report: IoUReport, source: Source | None = None) -> dict[str, Any]:
    out = report.to_dict()
    from hgn_model.data.source import SyntheticSource

    if isinstance(source, SyntheticSource):  # the benchmark's thin and context classes
        from hgn_model.data.synthetic import CONTEXT_CLASSES, THIN_CLASSES

        out["thin_miou"] = round(report.mean_of(THIN_CLASSES) * 100, 2)
        out["context_miou"] = round(report.mean_of(CONTEXT_CLASSES) * 100, 2)
    return out
