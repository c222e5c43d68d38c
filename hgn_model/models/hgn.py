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
from hgn_model.models._base import (
    Detail,
    EmbedHead,
    SegHead,
    SegModel,
    downsample_image,
    scaled,
)


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
        graft: "side" (default): grafted copies of the deep stages feed the decoder while the
            deep trunk stays shallow-free, so the aux head and the contrastive prototypes are
            truly deep-only; "trunk" (format 1): grafts are added into the trunk itself.
        finest: "light" (default): a 1/4 level of decoder_ch/4 channels fused by a depthwise
            3x3, the 1/8 level fused depthwise-separably, a 1x1 classifier; "lsag_head"
            (format 1): 1/4 level of decoder_ch/2, dense 3x3 fusion at 1/8, a 3x3 head.
        pool_norm: BatchNorm in the pyramid pooling's pooled branches (format 1 only).
        resample: LSAG's order of offsets and upsampling ("coarse"; "fine" is format 1).
        laplacian: feed the shallow branch the Laplacian residual bands as ISDNet does
            (format 1). Off by default: the full-resolution residual and its concatenation
            were the largest tensors of the whole forward pass (peak 621 -> 479 MiB at 2448^2
            without them, ~20% of the CPU time) while the learned stride-2 stem conv sees the
            same high frequencies in the image itself. The price, measured: they speed up
            early learning (300 steps: val mIoU 44.2 vs 36.7, thin IoU 10.5 vs 0.0); the
            full-budget comparison is ``hgn_laplacian`` in the README's model table.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 0.5,
        downsample: int = 4,
        gsag_stages: tuple[int, ...] | list[int] = (1, 2, 3),
        gsag_tokens: int = 32,
        lsag: bool = True,
        finest_stride: int = 4,
        decoder_ch: int = 128,
        contrast_dim: int = 64,
        graft: str = "side",
        finest: str = "light",
        pool_norm: bool = False,
        resample: str = "coarse",
        laplacian: bool = False,
    ) -> None:
        super().__init__()
        if finest_stride not in (4, 8):
            raise ValueError(f"finest_stride={finest_stride!r}: expected 4 or 8")
        if graft not in ("side", "trunk") or finest not in ("light", "lsag_head"):
            raise ValueError(f"graft={graft!r} / finest={finest!r}: expected side|trunk and "
                             "light|lsag_head")
        self.downsample = downsample
        self.size_divisor = 32 * downsample
        self.graft = graft
        self.shallow = ShallowSTDC(in_channels, width, laplacian=laplacian)
        self.deep = ResNet18(in_channels, width)
        s4_ch, s8_ch, s16_ch = self.shallow.channels
        dchs = self.deep.channels
        dec = scaled(decoder_ch, width)
        attn_dim = max(32, scaled(128, width))
        self.gsag = nn.ModuleDict(
            {str(i): GSAG(s16_ch, dchs[i], gsag_tokens, attn_dim) for i in sorted(set(gsag_stages))}
        )
        self.context = PyramidPooling(dchs[3], dec, pool_norm=pool_norm)
        self.lat3 = ConvBNAct(dchs[2], dec, 1)
        self.lat2 = ConvBNAct(dchs[1], dec, 1)
        self.smooth3 = ConvBNAct(dec, dec, 3)
        self.smooth2 = ConvBNAct(dec, dec, 3)
        light = finest == "light"
        self.lsag16 = LSAG(dec, s16_ch, dec, align=lsag, resample=resample)
        self.lsag8 = LSAG(dec, s8_ch, dec, align=lsag, fuse="dwsep" if light else "conv",
                          resample=resample)
        self.finest_stride = finest_stride
        fine = dec // 4 if light else dec // 2
        self.lsag4 = None
        if finest_stride == 4:
            self.lsag4 = LSAG(dec, s4_ch, fine, align=lsag, fuse="dw" if light else "dwsep",
                              resample=resample)
        if finest_stride == 4 and light:
            # The finest level is memory-bound on CPU: at 1/4 of 2448^2 its dense 3x3 head was
            # 3.8 of the level's ~4.5 GMAC; LSAG's depthwise fusion already gives a 3x3
            # receptive field, so a 1x1 classifier on 16 (width 0.5) channels is enough.
            self.head: nn.Module = nn.Conv2d(fine, num_classes, 1)
        else:
            self.head = SegHead(fine if finest_stride == 4 else dec, num_classes)
        self.aux_head = SegHead(dec, num_classes)
        self.contrast_dim = contrast_dim
        if contrast_dim:
            self.shallow_embed = EmbedHead(s8_ch, contrast_dim)
            self.deep_embed = EmbedHead(dec, contrast_dim)

    def _fpn(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Deep decoder: pyramid pooling on the coarsest stage, top-down to stage 1 (1/32)."""
        p = self.context(feats[3])
        p = self.smooth3(self.lat3(feats[2]) + resize_to(p, feats[2].shape[-2:]))
        return self.smooth2(self.lat2(feats[1]) + resize_to(p, feats[1].shape[-2:]))

    def _deep(self, x: torch.Tensor, tokens_from: torch.Tensor
              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(deep-only stage outputs, grafted stage outputs) of the deep branch."""
        d = self.deep.stem(downsample_image(x, self.downsample))
        pure, grafted = [], []
        for i, stage in enumerate(self.deep.stages):
            d = stage(d)
            pure.append(d)
            g = self.gsag[str(i)](d, tokens_from) if str(i) in self.gsag else d
            grafted.append(g)
            if self.graft == "trunk":  # format 1: the graft flows on through the trunk
                d = g
        return pure, grafted

    def forward_train(self, x: torch.Tensor, detail: Detail | None = None
                      ) -> dict[str, torch.Tensor]:
        s4, s8, s16 = self.shallow(x if detail is None else detail.crop(x))
        # GSAG tokens of a context image pool all of its crops' shallow pixels.
        pure, grafted = self._deep(x, s16 if detail is None else detail.group(s16))
        deep = self._fpn(grafted)  # 1/32 of x
        y = self.lsag8(self.lsag16(deep if detail is None else detail.crop(deep, 32), s16), s8)
        if self.lsag4 is not None:
            y = self.lsag4(y, s4)
        out = {"out": self.head(y)}
        if self.training:
            # Deep-only path (shared decoder weights) for the aux head and the prototypes:
            # shallow features reach neither, so they teach the deep branch context alone.
            shallow_free = self.graft == "side" and len(self.gsag) > 0
            deep_only = self._fpn(pure) if shallow_free else deep
            out["aux"] = self.aux_head(deep_only)
            if self.contrast_dim:
                out["shallow_embed"] = self.shallow_embed(s8)
                out["deep_embed"] = self.deep_embed(deep_only)
        return out
