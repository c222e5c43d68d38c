"""ResNet-18-style deep branch with a width multiplier and optional dilation.

HGN keeps it plain (stride 32, no dilation); the ISDNet-like baseline dilates the last two
stages to output stride 8, which is what makes that baseline expensive.
"""

from __future__ import annotations

import torch
from torch import nn

from hgn_model.layers import ConvBNAct

__all__ = ["BasicBlock", "ResNet18"]


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_ch, out_ch, 3, stride, dilation=dilation)
        self.conv2 = ConvBNAct(out_ch, out_ch, 3, 1, dilation=dilation, act=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = ConvBNAct(in_ch, out_ch, 1, stride, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet18(nn.Module):
    """Deep-stem ResNet-18. ``forward`` returns the four stage outputs (strides 4, 8, 16, 32).

    Args:
        in_ch: input channels.
        width: channel multiplier (1.0 = 64/128/256/512).
        dilate: dilate stages 3 and 4 instead of striding (output stride 8, ISDNet style).
    """

    def __init__(self, in_ch: int = 3, width: float = 1.0, dilate: bool = False) -> None:
        super().__init__()
        chs = [max(8, round(c * width)) for c in (64, 128, 256, 512)]
        stem = max(8, round(32 * width))
        self.channels = tuple(chs)
        self.stem = nn.Sequential(
            ConvBNAct(in_ch, stem, 3, 2),
            ConvBNAct(stem, stem, 3, 1),
            ConvBNAct(stem, chs[0], 3, 1),
            nn.MaxPool2d(3, 2, 1),
        )
        s3, d3 = (1, 2) if dilate else (2, 1)
        s4, d4 = (1, 4) if dilate else (2, 1)
        self.layer1 = nn.Sequential(BasicBlock(chs[0], chs[0]), BasicBlock(chs[0], chs[0]))
        self.layer2 = nn.Sequential(BasicBlock(chs[0], chs[1], 2), BasicBlock(chs[1], chs[1]))
        self.layer3 = nn.Sequential(
            BasicBlock(chs[1], chs[2], s3, d3), BasicBlock(chs[2], chs[2], 1, d3)
        )
        self.layer4 = nn.Sequential(
            BasicBlock(chs[2], chs[3], s4, d4), BasicBlock(chs[3], chs[3], 1, d4)
        )

    def band_convs(self, prefix: str = "") -> dict[str, list[tuple[str, int]]]:
        """Convs that read input bands: their input segments (for fine-tuning on new bands)."""
        return {f"{prefix}stem.0.0.weight": [("bands", self.stem[0][0].in_channels)]}

    @property
    def stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats
