"""The contract every segmentation model here follows, so tools and tests are written once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hgn_model.layers import ConvBNAct, resize_to

DETAIL_ALIGN = 32  # detail offsets and sizes are multiples of the deep decoder's stride


@dataclass(frozen=True)
class Detail:
    """Detail sub-crops of each context image, for the decoupled training recipe.

    ``offsets[i]`` lists the (y0, x0) of the ``per_sample`` crops of context image i, in
    full-resolution pixels, each a multiple of DETAIL_ALIGN, and ``size`` is their side. The
    deep branch runs on the whole (downsampled) context; the shallow branch, the decoder and the
    main loss on the crops, ordered sample-major.
    """

    offsets: tuple[tuple[tuple[int, int], ...], ...]
    size: int

    def __post_init__(self) -> None:
        counts = {len(o) for o in self.offsets}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"every context image needs the same number (>= 1) of detail "
                             f"crops, got {sorted(counts)}")
        flat = [v for o in self.offsets for yx in o for v in yx] + [self.size]
        if any(v % DETAIL_ALIGN for v in flat):
            raise ValueError(f"detail offsets and size must be multiples of {DETAIL_ALIGN}")

    @classmethod
    def of(cls, offsets: Sequence[Sequence[Sequence[int]]], size: int) -> Detail:
        return cls(tuple(tuple((int(y), int(x)) for y, x in o) for o in offsets), int(size))

    @property
    def per_sample(self) -> int:
        return len(self.offsets[0])

    def crop(self, t: torch.Tensor, stride: int = 1) -> torch.Tensor:
        """The crops of ``t`` (N, C, H/stride, W/stride): (N * per_sample, C, size/stride, ...)."""
        n = self.size // stride
        return torch.stack([t[i, :, y // stride:y // stride + n, x // stride:x // stride + n]
                            for i, o in enumerate(self.offsets) for y, x in o])

    def crop_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Label crops (N * per_sample, size, size) of (N, H, W) context labels."""
        return self.crop(y[:, None])[:, 0]

    def group(self, t: torch.Tensor) -> torch.Tensor:
        """Per-crop maps (N * k, C, h, w) -> one map per context image (N, C, k * h, w)."""
        k = self.per_sample
        m, c, h, w = t.shape
        return t.reshape(m // k, k, c, h, w).permute(0, 2, 1, 3, 4).reshape(m // k, c, k * h, w)


class SegModel(nn.Module):
    """Base class: ``forward`` gives full-resolution logits; ``forward_train`` gives the dict.

    Subclasses implement ``forward_train(x, detail=None) -> {"out": logits at some stride,
    ...}``. ``detail`` (training only) selects sub-crops of ``x`` for the main output (see
    :class:`Detail`); without it ``"out"`` covers ``x``. Optional keys in training: ``"aux"``
    (deep-only logits over the whole ``x``), ``"shallow_embed"`` (over the detail crops) and
    ``"deep_embed"`` (deep-only, over the whole ``x``, on the grid of ``"aux"``). Inputs must
    be padded to ``size_divisor``.
    """

    size_divisor: int = 128

    def band_convs(self) -> dict[str, list[tuple[str, int]]]:
        """Weights that read the input bands, with their input segments (see ``adapt_state``)."""
        out: dict[str, list[tuple[str, int]]] = {}
        for name in ("shallow", "deep"):
            branch = getattr(self, name, None)
            if branch is not None:
                out.update(branch.band_convs(f"{name}."))
        return out

    def forward_train(self, x: torch.Tensor, detail: Detail | None = None
                      ) -> dict[str, torch.Tensor]:
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
