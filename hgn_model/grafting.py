"""The two grafting operators that carry shallow (full-resolution) structure into the deep net.

GSAG: global-structure-aggregated grafting. Shallow pixels are softly assigned to K learned
structure tokens and pooled into them (cost linear in pixels, output size independent of the
image); deep pixels then cross-attend to the K tokens, and the result is added back through a
zero-initialised gate, so an untrained graft leaves the deep network unchanged.

LSAG: local-structure-aligned grafting. Going up the decoder, the upsampled deep feature is warped
by an offset field predicted from (deep, shallow) so its edges land on the shallow edges, then
fused with the shallow feature through a learned per-pixel gate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hgn_model.layers import ConvBNAct, DWSepConv, resize_to

__all__ = ["GSAG", "LSAG"]


class GSAG(nn.Module):
    """Global-structure-aggregated grafting of a shallow feature map into a deep one.

    Args:
        shallow_ch: channels of the shallow feature (any stride).
        deep_ch: channels of the deep feature being grafted into.
        tokens: number of structure tokens K.
        dim: token/attention width.
        heads: attention heads.
    """

    def __init__(
        self, shallow_ch: int, deep_ch: int, tokens: int = 32, dim: int = 64, heads: int = 4
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"GSAG dim={dim} must be divisible by heads={heads}")
        self.heads = heads
        self.assign = nn.Conv2d(shallow_ch, tokens, 1)
        self.value = nn.Conv2d(shallow_ch, dim, 1)
        # Learned token identities keep tokens distinct even where few pixels are assigned.
        self.token_embed = nn.Parameter(torch.zeros(tokens, dim))
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Conv2d(deep_ch, dim, 1)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Conv2d(dim, deep_ch, 1)
        # Zero-initialised per-channel gate: the graft starts as an identity on the deep path.
        self.gamma = nn.Parameter(torch.zeros(1, deep_ch, 1, 1))
        nn.init.trunc_normal_(self.token_embed, std=0.02)

    def aggregate(self, shallow: torch.Tensor) -> torch.Tensor:
        """Pool shallow pixels into K tokens: (N, C, H, W) -> (N, K, dim)."""
        assign = self.assign(shallow).flatten(2).softmax(dim=1)  # (N, K, P), soft per pixel
        value = self.value(shallow).flatten(2)  # (N, dim, P)
        mass = assign.sum(dim=2, keepdim=True).clamp_min(1e-6)
        tokens = torch.bmm(assign, value.transpose(1, 2)) / mass  # weighted mean, (N, K, dim)
        return self.norm(tokens + self.token_embed)

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        n, _, h, w = deep.shape
        tokens = self.aggregate(shallow)
        k, v = self.kv(tokens).chunk(2, dim=-1)  # (N, K, dim) each
        q = self.q(deep).flatten(2).transpose(1, 2)  # (N, P, dim)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, t.shape[1], self.heads, -1).transpose(1, 2)

        attn = F.scaled_dot_product_attention(split(q), split(k), split(v))  # (N, h, P, d)
        attn = attn.transpose(1, 2).reshape(n, h * w, -1).transpose(1, 2).reshape(n, -1, h, w)
        return deep + self.gamma * self.out(attn)


class LSAG(nn.Module):
    """Local-structure-aligned grafting: warp the upsampled deep feature onto shallow edges.

    Args:
        deep_ch: channels of the coarser (deep/decoder) input.
        shallow_ch: channels of the finer shallow feature.
        out_ch: output channels.
        align: predict offsets and gate (True) or plain upsample + sum (the "no LSAG" ablation).
        light: use a depthwise-separable fusion conv (for the finest, most expensive level).
    """

    def __init__(
        self, deep_ch: int, shallow_ch: int, out_ch: int, align: bool = True, light: bool = False
    ) -> None:
        super().__init__()
        self.align = align
        self.deep_proj = ConvBNAct(deep_ch, out_ch, 1)
        self.shallow_proj = ConvBNAct(shallow_ch, out_ch, 1)
        if align:
            self.offset = nn.Conv2d(2 * out_ch, 3, 3, padding=1)  # dy, dx (pixels), gate logit
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)
        self.fuse = DWSepConv(out_ch, out_ch) if light else ConvBNAct(out_ch, out_ch, 3)

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        size = shallow.shape[-2:]
        d = resize_to(self.deep_proj(deep), size)
        s = self.shallow_proj(shallow)
        if not self.align:
            return self.fuse(d + s)
        # offset(cat(d, s)) computed as two convs over the weight's halves: same result
        # without materialising the concatenation at the finest level (memory-bound on CPU).
        w, c = self.offset.weight, d.shape[1]
        pred = F.conv2d(d, w[:, :c], self.offset.bias, padding=1) + F.conv2d(s, w[:, c:], padding=1)
        d = _warp(d, pred[:, :2])
        gate = torch.sigmoid(pred[:, 2:3])  # 0.5 at init: an even blend
        return self.fuse(torch.lerp(s, d, gate))  # gate * d + (1 - gate) * s, one pass


def _warp(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` at (pixel grid + offset), offsets in pixels, border padding."""
    _, _, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=x.device, dtype=x.dtype)
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0)
    grid = grid + offset.permute(0, 2, 3, 1).flip(-1) * scale  # (dy, dx) -> (x, y) order
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
