"""STDC-style shallow branch for the full-resolution image, with Laplacian residual inputs.

The shallow branch is what keeps thin structures (2-6 px roads, small buildings) alive: it sees
every pixel, and the Laplacian residuals hand it the high-frequency band explicitly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hgn_model.layers import ConvBNAct

__all__ = ["CatBottleneck", "ShallowSTDC", "laplacian_residuals"]



def _band(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Laplacian level: (residual at x's size, half-size image).

    The low-pass is 2x2 area averaging rather than ISDNet's 5x5 binomial blur: the band-pass
    role is the same and, measured on CPU at 2560^2, it is ~7x cheaper than the depthwise 5x5.
    """
    low = F.avg_pool2d(x, 2)
    up = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x - up, low


def laplacian_residuals(x: torch.Tensor, levels: int = 2) -> list[torch.Tensor]:
    """The first ``levels`` Laplacian residual bands, band i at 1/2**i of x's size.

    Bands stay at their native size: the shallow stem consumes each at its own stride, which
    avoids upsampling and concatenating coarse bands at full resolution.
    """
    out, cur = [], x
    for _ in range(levels):
        res, cur = _band(cur)
        out.append(res)
    return out


class CatBottleneck(nn.Module):
    """STDC block: a 1x1 then a chain of 3x3 convs whose outputs are concatenated.

    Channel split out/2, out/4, out/8, out/8; with stride 2 the first output is downsampled by a
    depthwise stride-2 conv and the skip by average pooling.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        c = [out_ch // 2, out_ch // 4, out_ch // 8]
        c.append(out_ch - sum(c))
        self.stride = stride
        self.conv0 = ConvBNAct(in_ch, c[0], 1)
        self.down = ConvBNAct(c[0], c[0], 3, 2, groups=c[0], act=False) if stride == 2 else None
        self.convs = nn.ModuleList(
            [ConvBNAct(c[0], c[1], 3), ConvBNAct(c[1], c[2], 3), ConvBNAct(c[2], c[3], 3)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv0(x)
        cur = self.down(first) if self.down is not None else first
        outs = [F.avg_pool2d(first, 3, 2, 1) if self.stride == 2 else first]
        for conv in self.convs:
            cur = conv(cur)
            outs.append(cur)
        return torch.cat(outs, dim=1)


class ShallowSTDC(nn.Module):
    """Shallow full-resolution branch. Returns features at strides 4, 8 and 16.

    Input: the image and its first Laplacian band at full resolution, the second band joins
    after the first stride-2 conv.
    Channels at width 1.0: 64 (1/4), 256 (1/8), 512 (1/16), as in ISDNet's shallow net.
    """

    def __init__(self, in_ch: int, width: float = 1.0, laplacian: bool = True) -> None:
        super().__init__()
        self.laplacian = laplacian
        self.in_ch = in_ch
        c1, c2, c3, c4 = (max(8, round(c * width)) for c in (32, 64, 256, 512))
        self.channels = (c2, c3, c4)
        extra = in_ch if laplacian else 0
        self.stem1 = ConvBNAct(in_ch + extra, c1, 3, 2)
        self.stem2 = ConvBNAct(c1 + extra, c2, 3, 2)
        self.stage8 = nn.Sequential(CatBottleneck(c2, c3, 2), CatBottleneck(c3, c3))
        self.stage16 = nn.Sequential(CatBottleneck(c3, c4, 2), CatBottleneck(c4, c4))

    def band_convs(self, prefix: str = "") -> dict[str, list[tuple[str, int]]]:
        """Convs that read input bands: their input segments (for fine-tuning on new bands)."""
        c = self.in_ch
        if not self.laplacian:
            return {f"{prefix}stem1.0.weight": [("bands", c)]}
        return {f"{prefix}stem1.0.weight": [("bands", c), ("bands", c)],
                f"{prefix}stem2.0.weight": [("fixed", self.stem1[0].out_channels), ("bands", c)]}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.laplacian:
            r1, r2 = laplacian_residuals(x, 2)
            f2 = self.stem1(torch.cat([x, r1], dim=1))
            f4 = self.stem2(torch.cat([f2, r2], dim=1))
        else:
            f4 = self.stem2(self.stem1(x))
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        return [f4, f8, f16]
