"""Hierarchical Grafting Network (HGN), our design in the spirit of Liu et al., IEEE TMM 2025.

    image ──► shallow STDC (full res) ──► s4, s8, s16 ─────────────┐ (LSAG, decoder)
      │                                     │ (GSAG, deep stages)  │
      └─► /r ──► plain ResNet-18 ──► graft ─┴─► PPM ─► FPN to 1/32 ┴─► 1/16 ─► 1/8 ─► 1/4 ─► head

The deep branch never holds high-resolution features (strides 16..128 of the image); detail
comes from the shallow branch, grafted in twice: globally into the deep stages (GSAG) and
locally, edge-aligned, into the decoder (LSAG). A deep-only aux head and a shallow-deep
contrastive embedding pair are produced in training.
"""

from __future__ import annotations

import torch
from torch import nn

from hgn_model.backbones import ResNet18, ShallowSTDC
from hgn_model.grafting import GSAG, LSAG
from hgn_model.layers import ConvBNAct, PyramidPooling, resize_to
from hgn_model.models._base import EmbedHead, SegHead, SegModel, downsample_image, scaled


class HGN(SegModel):
    """HGN.

    Args:
        num_classes: output classes.
        in_channels: image bands.
        width: channel multiplier of both branches.
        downsample: r, the deep branch's input downsampling.
        gsag_stages: deep stages (0..3, i.e. strides 4r..32r) that receive a GSAG graft.
        gsag_tokens: structure tokens K per GSAG.
        lsag: edge-aligned decoder grafting (False = plain upsample + sum, an ablation).
        finest_stride: 4 or 8, the stride of the last decoder level and the head.
        decoder_ch: decoder width at width 1.0.
        contrast_dim: embedding size of the shallow-deep contrastive pair; 0 disables the heads.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 0.5,
        downsample: int = 4,
        gsag_stages: tuple[int, ...] | list[int] = (0, 1, 2),
        gsag_tokens: int = 32,
        lsag: bool = True,
        finest_stride: int = 4,
        decoder_ch: int = 128,
        contrast_dim: int = 64,
    ) -> None:
        super().__init__()
        if finest_stride not in (4, 8):
            raise ValueError(f"finest_stride={finest_stride!r}: expected 4 or 8")
        self.downsample = downsample
        self.size_divisor = 32 * downsample
        self.shallow = ShallowSTDC(in_channels, width)
        self.deep = ResNet18(in_channels, width)
        s4_ch, s8_ch, s16_ch = self.shallow.channels
        dchs = self.deep.channels
        dec = scaled(decoder_ch, width)
        attn_dim = max(32, scaled(128, width))
        self.gsag = nn.ModuleDict(
            {str(i): GSAG(s16_ch, dchs[i], gsag_tokens, attn_dim) for i in sorted(set(gsag_stages))}
        )
        self.context = PyramidPooling(dchs[3], dec)
        self.lat3 = ConvBNAct(dchs[2], dec, 1)
        self.lat2 = ConvBNAct(dchs[1], dec, 1)
        self.smooth3 = ConvBNAct(dec, dec, 3)
        self.smooth2 = ConvBNAct(dec, dec, 3)
        self.lsag16 = LSAG(dec, s16_ch, dec, align=lsag)
        self.lsag8 = LSAG(dec, s8_ch, dec, align=lsag)
        self.finest_stride = finest_stride
        fine = dec // 2
        self.lsag4 = LSAG(dec, s4_ch, fine, align=lsag, light=True) if finest_stride == 4 else None
        self.head = SegHead(fine if finest_stride == 4 else dec, num_classes)
        self.aux_head = SegHead(dec, num_classes)
        self.contrast_dim = contrast_dim
        if contrast_dim:
            self.shallow_embed = EmbedHead(s8_ch, contrast_dim)
            self.deep_embed = EmbedHead(dec, contrast_dim)

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s4, s8, s16 = self.shallow(x)
        d = self.deep.stem(downsample_image(x, self.downsample))
        feats = []
        for i, stage in enumerate(self.deep.stages):
            d = stage(d)
            if str(i) in self.gsag:
                d = self.gsag[str(i)](d, s16)
            feats.append(d)
        p = self.context(feats[3])
        p = self.smooth3(self.lat3(feats[2]) + resize_to(p, feats[2].shape[-2:]))
        deep = self.smooth2(self.lat2(feats[1]) + resize_to(p, feats[1].shape[-2:]))  # 1/32
        y = self.lsag8(self.lsag16(deep, s16), s8)
        if self.lsag4 is not None:
            y = self.lsag4(y, s4)
        out = {"out": self.head(y)}
        if self.training:
            out["aux"] = self.aux_head(deep)
            if self.contrast_dim:
                out["shallow_embed"] = self.shallow_embed(s8)
                out["deep_embed"] = self.deep_embed(resize_to(deep, s8.shape[-2:]))
        return out
