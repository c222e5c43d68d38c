"""Deep-only baseline: ResNet-18-style net on the downsampled image, FPN decoder to 1/16."""

from __future__ import annotations

import torch
from torch import nn

from hgn_model.backbones import ResNet18
from hgn_model.layers import ConvBNAct, PyramidPooling, resize_to
from hgn_model.models._base import Detail, SegHead, SegModel, downsample_image, scaled


class DeepOnly(SegModel):
    """What a downsample-then-segment pipeline sees: global context, no thin structures."""

    def __init__(
        self, num_classes: int, in_channels: int = 3, width: float = 0.5, downsample: int = 4,
        decoder_ch: int = 128, pool_norm: bool = False,
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.size_divisor = 32 * downsample
        self.deep = ResNet18(in_channels, width)
        dec = scaled(decoder_ch, width)
        chs = self.deep.channels
        self.context = PyramidPooling(chs[3], dec, pool_norm=pool_norm)
        self.laterals = nn.ModuleList(ConvBNAct(c, dec, 1) for c in chs[:3])
        self.smooth = nn.ModuleList(ConvBNAct(dec, dec, 3) for _ in chs[:3])
        self.head = SegHead(dec, num_classes)

    def forward_train(self, x: torch.Tensor, detail: Detail | None = None
                      ) -> dict[str, torch.Tensor]:
        feats = self.deep(downsample_image(x, self.downsample))
        p = self.context(feats[3])
        for i in (2, 1, 0):  # top-down to the deep branch's stride 4 (1/16 of the image)
            lat = self.laterals[i](feats[i])
            p = self.smooth[i](lat + resize_to(p, lat.shape[-2:]))
        logits = self.head(p)
        if detail is None:
            return {"out": logits}
        # Decoupled training: the main loss on the detail crops like every model, and the
        # whole context through the aux term (this head is deep-only by construction).
        return {"out": detail.crop(logits, 16), "aux": logits}
