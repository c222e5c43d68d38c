"""Training losses: CE with ignore index, deep-only aux CE, shallow-deep contrastive InfoNCE."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hgn_model.layers import resize_to

__all__ = ["LossWeights", "SegLoss", "shallow_deep_contrastive"]

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LossWeights:
    """Weights of each term; a zero weight skips the term."""

    ce: float = 1.0
    aux: float = 0.4
    contrast: float = 0.1
    tau: float = 0.1
    contrast_samples: int = 2048


def shallow_deep_contrastive(
    shallow: torch.Tensor,
    deep: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    tau: float = 0.1,
    samples: int = 2048,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Pixel-to-prototype InfoNCE pulling shallow embeddings towards deep class prototypes.

    Prototypes (mean deep embedding per ground-truth class present in the batch) are detached and
    act as fixed anchors, so the loss teaches the shallow branch semantics without dragging the
    deep branch towards local texture. Each sampled pixel's positive is its own class prototype;
    the other present classes' prototypes are the negatives. The deep pixels are scored against
    the same (detached) prototypes too, which is what trains the deep projection head to make
    class-separable anchors; averaged with the shallow term.
    """
    s = F.normalize(shallow, dim=1)
    d_live = F.normalize(deep, dim=1)
    d = d_live.detach()
    t = F.interpolate(target[:, None].float(), size=s.shape[-2:], mode="nearest")[:, 0].long()
    s = s.permute(0, 2, 3, 1).reshape(-1, s.shape[1])
    d = d.permute(0, 2, 3, 1).reshape(-1, d.shape[1])
    d_live = d_live.permute(0, 2, 3, 1).reshape(-1, d_live.shape[1])
    t = t.reshape(-1)
    valid = t != ignore_index
    s, d, d_live, t = s[valid], d[valid], d_live[valid], t[valid]
    if t.numel() == 0:
        return shallow.sum() * 0.0
    onehot = F.one_hot(t, num_classes).to(d.dtype)  # (M, K)
    counts = onehot.sum(0)
    present = counts > 0
    if int(present.sum()) < 2:  # one class only: no negatives, nothing to contrast
        return shallow.sum() * 0.0
    protos = F.normalize((onehot.T @ d)[present] / counts[present, None], dim=1)
    index_of = torch.cumsum(present.long(), 0) - 1  # class id -> row in protos
    if t.numel() > samples:
        pick = torch.randperm(t.numel(), device=t.device)[:samples]
        s, d_live, t = s[pick], d_live[pick], t[pick]
    target_rows = index_of[t]
    shallow_term = F.cross_entropy(s @ protos.T / tau, target_rows)
    deep_term = F.cross_entropy(d_live @ protos.T / tau, target_rows)
    return 0.5 * (shallow_term + deep_term)


class SegLoss(nn.Module):
    """Sum of the weighted terms; returns (total, {term: value}) for logging."""

    def __init__(
        self,
        num_classes: int,
        weights: LossWeights | None = None,
        class_weights: torch.Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.w = weights or LossWeights()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights, persistent=False)

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            resize_to(logits, target.shape[-2:]), target,
            weight=self.class_weights, ignore_index=self.ignore_index,
        )

    def forward(
        self, outputs: dict[str, torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        parts: dict[str, torch.Tensor] = {"ce": self.w.ce * self._ce(outputs["out"], target)}
        if self.w.aux and "aux" in outputs:
            parts["aux"] = self.w.aux * self._ce(outputs["aux"], target)
        if self.w.contrast and "shallow_embed" in outputs:
            parts["contrast"] = self.w.contrast * shallow_deep_contrastive(
                outputs["shallow_embed"], outputs["deep_embed"], target, self.num_classes,
                self.w.tau, self.w.contrast_samples, self.ignore_index,
            )
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}
