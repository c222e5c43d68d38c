"""The contract every segmentation model here follows, so tools and tests are written once."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hgn_model.layers import ConvBNAct, resize_to


class SegModel(nn.Module):
    """Base class: ``forward`` gives full-resolution logits; ``forward_train`` gives the dict.

    Subclasses implement ``forward_train(x) -> {"out": logits at some stride, ...}`` where the
    optional keys are ``"aux"`` (deep-only logits) and ``"shallow_embed"``/``"deep_embed"``
    (contrastive embeddings at one common stride). Inputs must be padded to ``size_divisor``.
    """

    size_divisor: int = 128

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.forward_train(x)["out"], x.shape[-2:])


class SegHead(nn.Sequential):
    """3x3 conv + 1x1 classifier."""

    def __init__(self, in_ch: int, num_classes: int, mid_ch: int | None = None) -> None:
        mid = mid_ch or in_ch
        super().__init__(
            ConvBNAct(in_ch, mid, 3), nn.Dropout2d(0.05), nn.Conv2d(mid, num_classes, 1)
        )


class EmbedHead(nn.Sequential):
    """Projection to an embedding space for the contrastive loss (training only)."""

    def __init__(self, in_ch: int, dim: int) -> None:
        super().__init__(ConvBNAct(in_ch, in_ch, 1), nn.Conv2d(in_ch, dim, 1))


def downsample_image(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Area downsampling of the full image for the deep branch (exact: inputs are padded)."""
    return x if factor == 1 else F.avg_pool2d(x, factor)


def scaled(channels: int, width: float) -> int:
    return max(8, round(channels * width))
