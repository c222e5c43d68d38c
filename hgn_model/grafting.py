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
        fuse: "conv" (dense 3x3), "dwsep" (depthwise 3x3 + pointwise) or "dw" (depthwise 3x3
            only): the lighter ones are for the finest, most expensive level.
        resample: "coarse" (default): the deep half of the offset conv runs at the coarse
            resolution and the warped deep feature is sampled from the coarse map in one
            bilinear pass; "fine" (format 1): upsample first, then predict offsets and warp.
    """

    def __init__(
        self, deep_ch: int, shallow_ch: int, out_ch: int, align: bool = True, fuse: str = "conv",
        resample: str = "coarse",
    ) -> None:
        super().__init__()
        if resample not in ("coarse", "fine"):
            raise ValueError(f"LSAG resample={resample!r}: expected 'coarse' or 'fine'")
        self.align = align
        self.resample = resample
        self.deep_proj = ConvBNAct(deep_ch, out_ch, 1)
        self.shallow_proj = ConvBNAct(shallow_ch, out_ch, 1)
        if align:
            self.offset = nn.Conv2d(2 * out_ch, 3, 3, padding=1)  # dy, dx (pixels), gate logit
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)
        fusers = {"conv": lambda: ConvBNAct(out_ch, out_ch, 3),
                  "dwsep": lambda: DWSepConv(out_ch, out_ch),
                  "dw": lambda: ConvBNAct(out_ch, out_ch, 3, groups=out_ch)}
        if fuse not in fusers:
            raise ValueError(f"LSAG fuse={fuse!r}: expected one of {sorted(fusers)}")
        self.fuse = fusers[fuse]()

    def forward(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        if self.align and self.resample == "coarse":
            return self._forward_coarse(deep, shallow)
        size = shallow.shape[-2:]
        d = resize_to(self.deep_proj(deep), size)
        s = self.shallow_proj(shallow)
        if not self.align:
            return self.fuse(d + s)
        # offset(cat(d, s)) computed as two convs over the weight's halves: same result
        # without materialising the concatenation at the finest level (memory-bound on CPU).
        w, c = self.offset.weight, d.shape[1]
        pred = (F.conv2d(d, w[:, :c].contiguous(), self.offset.bias, padding=1)
                + F.conv2d(s, w[:, c:].contiguous(), padding=1))
        d = _warp(d, pred[:, :2])
        gate = torch.sigmoid(pred[:, 2:3])  # 0.5 at init: an even blend
        return self.fuse(torch.lerp(s, d, gate))  # gate * d + (1 - gate) * s, one pass

    def _forward_coarse(self, deep: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        """Offsets from (deep, shallow), deep half at the coarse size; one resampling pass.

        Measured at 2448^2 on CPU (1 thread), against the "fine" order: the full-size upsample
        of the deep feature, the deep half of the offset conv at full size and the second
        resampling were ~40% of the finest level's time. The weight slices are made contiguous:
        a strided weight sends F.conv2d to its slow non-oneDNN path (~33 ms per call).
        """
        size = shallow.shape[-2:]
        dc = self.deep_proj(deep)
        s = self.shallow_proj(shallow)
        w, c = self.offset.weight, dc.shape[1]
        pred = resize_to(F.conv2d(dc, w[:, :c].contiguous(), self.offset.bias, padding=1), size)
        pred = pred + F.conv2d(s, w[:, c:].contiguous(), padding=1)
        d = _sample_up(dc, pred[:, :2], size)
        gate = torch.sigmoid(pred[:, 2:3])  # 0.5 at init: an even blend
        return self.fuse(torch.addcmul(s, gate, d - s))  # gate * d + (1 - gate) * s


def _sample_up(x: torch.Tensor, offset: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear sample of coarse ``x`` at the fine pixel centres + offset (fine pixels).

    With zero offsets this equals ``F.interpolate(x, size, mode="bilinear")`` (the same
    align_corners=False mapping and edge clamping), so one pass upsamples and warps.
    """
    h, w = int(size[0]), int(size[1])
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    scale = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=torch.float32)
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0)
    grid = grid + offset.permute(0, 2, 3, 1).flip(-1).float() * scale  # (dy, dx) -> (x, y)
    # sampled in float32 whatever the autocast dtype: fp16 grid coordinates would be off by
    # ~0.2 px at 640 px, and grid_sample wants input and grid of one dtype
    out = F.grid_sample(x.float(), grid.float(), mode="bilinear", padding_mode="border",
                        align_corners=False).to(x.dtype)
    # grid_sample returns NCHW on CPU; an elementwise op mixing it with the NHWC shallow
    # feature then runs ~10x slower than the copy back to x's layout (137 vs 5 ms at 320^2).
    return out.contiguous(memory_format=_layout(x))


def _layout(x: torch.Tensor) -> torch.memory_format:
    nhwc = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc and not x.is_contiguous() else torch.contiguous_format


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
