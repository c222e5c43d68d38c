"""ISDNet-like baseline (Guo et al., CVPR 2022), rebuilt from the paper's description.

Shallow STDC branch on the full image (with Laplacian residuals), a ResNet-18 deep branch on the
1/4 image dilated to output stride 8 (1/32 of the image), an ASPP context module, and
relation-aware fusion (RAF) at 1/16 and 1/8; classifier at 1/8. The training-only extras of the
original (super-resolution decoder, feature-affinity loss) are left out; the aux deep head stays.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hgn_model.backbones import ResNet18, ShallowSTDC
from hgn_model.layers import ConvBNAct, pooled_branch, resize_to
from hgn_model.models._base import Detail, SegHead, SegModel, downsample_image, scaled


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 and an image-level branch."""

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...] = (6, 12, 18),
                 pool_norm: bool = False) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNAct(in_ch, out_ch, 1)] + [ConvBNAct(in_ch, out_ch, 3, dilation=r) for r in rates]
        )
        self.pool = pooled_branch(in_ch, out_ch, pool_norm)  # no BN on the 1x1 image pool
        self.project = ConvBNAct(out_ch * (len(rates) + 2), out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(resize_to(self.pool(F.adaptive_avg_pool2d(x, 1)), x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class RAF(nn.Module):
    """Relation-aware fusion: channel gates for both inputs, refined by an r x r group affinity.

    Global descriptors of each side are split into ``groups`` vectors; their cross affinity
    mixes information between the two gates before a small MLP produces them.
    """

    def __init__(self, shallow_ch: int, deep_ch: int, out_ch: int, groups: int = 16) -> None:
        super().__init__()
        while out_ch % groups:
            groups //= 2
        self.groups = groups
        self.s_proj = ConvBNAct(shallow_ch, out_ch, 1)
        self.d_proj = ConvBNAct(deep_ch, out_ch, 1)
        self.s_mlp = _gate_mlp(out_ch)
        self.d_mlp = _gate_mlp(out_ch)

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        s, d = self.s_proj(shallow), self.d_proj(deep)
        gs, gd = s.mean(dim=(2, 3)), d.mean(dim=(2, 3))
        n, c = gs.shape
        vs, vd = gs.reshape(n, self.groups, -1), gd.reshape(n, self.groups, -1)
        affinity = torch.softmax(vs @ vd.transpose(1, 2) / vs.shape[-1] ** 0.5, dim=-1)
        s_ctx = (affinity @ vd).reshape(n, c)
        d_ctx = (affinity.transpose(1, 2) @ vs).reshape(n, c)
        gate_s = torch.sigmoid(self.s_mlp(torch.cat([gs, s_ctx], 1)))[..., None, None]
        gate_d = torch.sigmoid(self.d_mlp(torch.cat([gd, d_ctx], 1)))[..., None, None]
        return s * gate_s + resize_to(d * gate_d, s.shape[-2:])


def _gate_mlp(ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * ch, ch), nn.ReLU(), nn.Linear(ch, ch))


class ISDNetLike(SegModel):
    """The dilated deep branch keeps 1/32-resolution deep features: the cost HGN avoids."""

    def __init__(
        self, num_classes: int, in_channels: int = 3, width: float = 0.5, downsample: int = 4,
        decoder_ch: int = 128, aux: bool = True, pool_norm: bool = False,
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.size_divisor = 32 * downsample
        self.shallow = ShallowSTDC(in_channels, width)
        self.deep = ResNet18(in_channels, width, dilate=True)
        dec = scaled(decoder_ch, width)
        self.aspp = ASPP(self.deep.channels[3], dec, pool_norm=pool_norm)
        self.fuse16 = RAF(self.shallow.channels[2], dec, dec)
        self.fuse8 = RAF(self.shallow.channels[1], dec, dec)
        self.head = SegHead(dec, num_classes)
        self.aux_head = SegHead(dec, num_classes) if aux else None

    def forward_train(self, x: torch.Tensor, detail: Detail | None = None
                      ) -> dict[str, torch.Tensor]:
        _, s8, s16 = self.shallow(x if detail is None else detail.crop(x))
        deep = self.aspp(self.deep(downsample_image(x, self.downsample))[3])  # 1/32 of x
        fused = self.fuse8(s8, self.fuse16(s16, deep if detail is None else detail.crop(deep, 32)))
        out = {"out": self.head(fused)}
        if self.aux_head is not None and self.training:
            out["aux"] = self.aux_head(deep)
        return out
