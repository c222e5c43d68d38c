"""Segmentation metrics (confusion matrix, per-class IoU, mIoU) and scene evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ConfusionMatrix", "IoUReport", "evaluate_scenes"]


@dataclass
class ConfusionMatrix:
    """Accumulates a K x K confusion matrix (rows = truth, columns = prediction)."""

    num_classes: int
    matrix: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, truth: np.ndarray, pred: np.ndarray, ignore_index: int = 255) -> None:
        if truth.shape != pred.shape:
            raise ValueError(f"truth shape {truth.shape} != prediction shape {pred.shape}")
        t = truth.reshape(-1).astype(np.int64)
        p = pred.reshape(-1).astype(np.int64)
        keep = (t != ignore_index) & (t < self.num_classes)
        k = self.num_classes
        self.matrix += np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k)

    def report(self, class_names: Sequence[str] | None = None,
               ignored: Sequence[bool] | None = None) -> IoUReport:
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        denom = m.sum(0) + m.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(denom > 0, tp / denom, np.nan)
        names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        skip = np.zeros(self.num_classes, bool) if ignored is None else np.asarray(ignored, bool)
        iou = np.where(skip, np.nan, iou)  # ignored classes take no part in any mean
        return IoUReport(names, iou, float(tp.sum() / max(m.sum(), 1)), self.matrix.copy())


@dataclass(frozen=True)
class IoUReport:
    """Per-class IoU plus both mIoU conventions.

    ``miou`` averages every non-ignored class present in truth or prediction; ``miou_fg``
    excludes class 0 too (background/unknown), the convention of the UHR literature (GLNet,
    FCtL, ISDNet). Pixels labelled ignore (and nodata) are in no count.
    """

    class_names: list[str]
    iou: np.ndarray
    pixel_accuracy: float
    confusion: np.ndarray | None = None  # rows truth, columns prediction

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou)) if np.isfinite(self.iou).any() else float("nan")

    @property
    def miou_fg(self) -> float:
        fg = self.iou[1:]
        return float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan")

    def mean_of(self, ids: Iterable[int]) -> float:
        vals = self.iou[list(ids)]
        return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")

    def to_dict(self) -> dict:
        return {
            "per_class_iou": {
                n: (None if np.isnan(v) else round(float(v) * 100, 2))
                for n, v in zip(self.class_names, self.iou, strict=True)
            },
            "miou": round(self.miou * 100, 2),
            "miou_excl_0": round(self.miou_fg * 100, 2),
            "pixel_accuracy": round(self.pixel_accuracy * 100, 2),
            **({} if self.confusion is None else
               {"confusion_matrix": self.confusion.tolist(), "confusion_axes": "truth x pred"}),
        }

    def to_table(self, title: str = "IoU (%)"):  # -> rich.table.Table
        from rich.table import Table

        table = Table(title=title)
        table.add_column("class")
        table.add_column("IoU", justify="right")
        for i, (name, v) in enumerate(zip(self.class_names, self.iou, strict=True)):
            table.add_row(f"{i} {name}", "-" if np.isnan(v) else f"{v * 100:.2f}")
        table.add_row("[bold]mIoU (all)", f"[bold]{self.miou * 100:.2f}")
        table.add_row("[bold]mIoU (excl. 0)", f"[bold]{self.miou_fg * 100:.2f}")
        return table


def evaluate_scenes(segmenter, scenes: Iterable, class_names: Sequence[str] | None = None
                    ) -> IoUReport:
    """Segment whole scenes (objects with ``.image`` and ``.labels``) and score them."""
    cm = ConfusionMatrix(segmenter.num_classes)
    for scene in scenes:
        cm.update(scene.labels, segmenter.predict(scene.image).labels)
    return cm.report(class_names or [c.name for c in segmenter.config.classes])
