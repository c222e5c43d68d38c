"""Inference API: a checkpoint in, labels (and optionally confidence / probabilities) out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hgn_model._upsample import upsample_argmax
from hgn_model.checkpoint import CheckpointConfig, Normalization, load_checkpoint
from hgn_model.errors import ConfigError, InputError
from hgn_model.layers import ConvBNAct

__all__ = ["Prediction", "Segmenter", "fuse_conv_bn"]



@dataclass(frozen=True)
class Prediction:
    """Outputs of ``Segmenter.predict``; shapes follow the input (with or without batch axis).

    labels: uint8 class ids. confidence: uint8, round(255 * max softmax). probs: float32 (K first).
    """

    labels: np.ndarray
    confidence: np.ndarray | None = None
    probs: np.ndarray | None = None


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the conv before it (inference only, in place).

    Removes a full pass over every feature map; measured ~10% of CPU latency at 2448^2.
    """
    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(module[1], nn.BatchNorm2d):
            conv, bn = module[0], module[1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                              conv.padding, conv.dilation, conv.groups, bias=True)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale[:, None, None, None])
                fused.bias.copy_(bn.bias - bn.running_mean * scale)
            module[0], module[1] = fused, nn.Identity()
    return model


class Segmenter:
    """A loaded model plus the preprocessing its checkpoint prescribes.

    Takes images (C, H, W) or (N, C, H, W) of any H, W >= 1 and any real dtype (integers or
    floats); each is normalised with the checkpoint's entry for its dtype
    (``InputSpec.normalization_for``), in raw units, so no dtype maximum is assumed. Pads by
    reflection to the multiple the network needs and crops back. On CPU each image of a batch
    runs on its own so results never depend on the batch size (oneDNN picks kernels by shape);
    on CUDA a batch of one shape runs at once under fp16/bf16 autocast, channels-last, copied
    from page-locked host memory without blocking.
    """

    def __init__(
        self,
        model: nn.Module,
        config: CheckpointConfig,
        device: str = "auto",
        precision: str = "auto",
        threads: int | None = None,
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} but CUDA is not available; use 'cpu' or 'auto'")
        if precision == "auto":
            precision = "fp16" if device.startswith("cuda") else "fp32"
        if precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(f"precision={precision!r}: expected auto, fp32, fp16 or bf16")
        if threads:
            torch.set_num_threads(threads)
        self.config = config
        self.device = torch.device(device)
        self.precision = precision
        # NHWC everywhere: oneDNN is markedly faster on it (stem conv ~5x on CPU), and it is
        # the layout CUDA's fp16/bf16 tensor-core convolutions take without transposes.
        self.model = fuse_conv_bn(model.eval()).to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.size_divisor = int(getattr(model, "size_divisor", 32))
        # ignore classes (a table's "nodata", "unlabelled") never trained: never predicted
        ignored = [c.ignore for c in config.classes]
        self._ignored = torch.tensor(ignored, device=self.device) if any(ignored) else None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", precision: str = "auto",
        threads: int | None = None,
    ) -> Segmenter:
        """Load and verify a checkpoint (see ``hgn_model.checkpoint``) and wrap it."""
        model, config = load_checkpoint(path)
        return cls(model, config, device=device, precision=precision, threads=threads)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    def predict(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        return_confidence: bool = False,
        return_probs: bool = False,
        value_max: float | None = None,
        valid_mask: np.ndarray | Sequence[np.ndarray | None] | None = None,
    ) -> Prediction:
        """Segment one image (C, H, W) or a batch (N, C, H, W) / list of (C, H, W).

        Args:
            value_max: the scene value that corresponds to the top of the checkpoint's range
                (``Normalization.top``); pixels are scaled by ``top / value_max`` before
                ``(x - mean) / std``. None: the values are taken in the training units.
            valid_mask: bool (H, W) for one image, (N, H, W) or a list of (H, W) / None for a
                batch; False marks nodata. Nodata pixels enter the network as the band mean
                (so fill values such as -99999 never reach it) and come out as label 0,
                confidence 0 and all-zero probabilities; an all-nodata image is not run.
        """
        single = isinstance(images, np.ndarray) and images.ndim == 3
        batch = [images] if single else list(images)
        if not batch:
            raise InputError("images is an empty batch; pass (C, H, W) or (N, C, H, W) arrays")
        for i, img in enumerate(batch):
            self._check(img, i)
        masks = _masks(valid_mask, batch, single)
        results: list[tuple | None] = [None] * len(batch)
        todo = []
        for i, (img, mask) in enumerate(zip(batch, masks, strict=True)):
            if mask is not None and not mask.any():  # nothing to segment: skip the forward
                results[i] = _empty(img.shape[-2:], self.num_classes, return_confidence,
                                    return_probs)
            else:
                todo.append(i)
        batched = self.device.type == "cuda" and _same_shape([batch[i] for i in todo])
        groups = [todo] if batched and todo else [[i] for i in todo]
        for group in groups:
            x = self._to_device(
                torch.cat([self._prepare(batch[i], masks[i], value_max, i) for i in group]))
            lab, cf, pr = self._infer(x, batch[group[0]].shape[-2:], return_confidence,
                                      return_probs)
            for j, i in enumerate(group):
                results[i] = _apply_mask(masks[i], lab[j], cf[j] if cf else None,
                                         pr[j] if pr else None)

        def pack(k: int) -> np.ndarray | None:
            items = [r[k] for r in results]
            if items[0] is None:
                return None
            return items[0] if single else (np.stack(items) if _same_shape(items) else items)

        return Prediction(pack(0), pack(1), pack(2))

    def _check(self, img: np.ndarray, index: int) -> None:
        if not isinstance(img, np.ndarray):
            raise InputError(f"image {index}: expected a numpy array, got {type(img).__name__}")
        if img.ndim != 3:
            raise InputError(
                f"image {index}: expected shape (C, H, W), got {img.shape}; add a band axis for "
                "single-band images or move bands first for (H, W, C)"
            )
        c, h, w = img.shape
        if c != self.in_channels:
            raise InputError(
                f"image {index}: has {c} bands but the checkpoint expects {self.in_channels} "
                f"({self.config.input.band_names or 'bands'}); select bands in the run config"
            )
        if h == 0 or w == 0:
            raise InputError(f"image {index}: zero-size image {img.shape}")
        if img.dtype.kind not in "uif":
            raise InputError(
                f"image {index}: dtype {img.dtype} is not supported; expected a real integer "
                "or float dtype (uint8, int16, uint16, float32, ...)"
            )

    def _prepare(self, img: np.ndarray, mask: np.ndarray | None, value_max: float | None,
                 index: int) -> torch.Tensor:
        if img.dtype.kind == "f":
            _check_finite(img, mask, index)
        mul, sub = _coefficients(self.config.input.normalization_for(img.dtype), value_max)
        h, w = img.shape[-2:]
        div = self.size_divisor
        ph, pw = (-h) % div, (-w) % div
        ph2, pw2 = max(0, div - h - ph), max(0, div - w - pw)
        arr = _pad(img, ph, pw, ph2, pw2)
        # One float32 copy, laid out HWC: as a tensor it is already channels-last (NHWC),
        # which oneDNN wants, and the normalisation then runs in place.
        # np.array copies even when the view is already contiguous float32 (one band): the
        # in-place ops below must never touch the caller's array.
        hwc = np.array(arr.transpose(1, 2, 0), dtype=np.float32, order="C")
        hwc *= mul
        hwc -= sub
        if mask is not None:  # nodata enters as the band mean: 0 after normalisation
            hwc[~_pad(mask[None], ph, pw, ph2, pw2)[0]] = 0.0
        return torch.from_numpy(hwc).permute(2, 0, 1)[None]

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """The host batch on the model's device; on CUDA through page-locked memory, so the
        copy is one asynchronous DMA (the stream orders it before the forward)."""
        if self.device.type != "cuda":
            return x
        return x.pin_memory().to(self.device, non_blocking=True)

    @torch.inference_mode()
    def _infer(
        self, x: torch.Tensor, hw: tuple[int, int], want_conf: bool, want_probs: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[np.ndarray] | None]:
        h, w = int(hw[0]), int(hw[1])
        # a no-op for single images (HWC already is NHWC), a copy for concatenated batches
        x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            logits = self.model.forward_train(x)["out"]
        if self._ignored is not None:  # finite: bilinear weights of 0 times -inf would be NaN
            logits = logits.masked_fill(self._ignored.view(1, -1, 1, 1), -1e4)
        lab, conf, probs = upsample_argmax(logits, x.shape[-2:], (h, w), want_conf, want_probs)
        return list(lab), _rows(conf), _rows(probs)


def _rows(a: np.ndarray | None) -> list[np.ndarray] | None:
    return None if a is None else list(a)


def _same_shape(items: Sequence[np.ndarray]) -> bool:
    return len({a.shape for a in items}) == 1


def _coefficients(norm: Normalization, value_max: float | None) -> tuple[np.ndarray, np.ndarray]:
    """float32 (mul, sub) with x * mul - sub == (x * top / value_max - mean) / std.

    Computed as (x / unit - mean / top) / (std / top), unit = value_max or top, in float32 in
    this order: for a converted format-1 checkpoint these are bit for bit the coefficients the
    format-1 code used, so its labels do not change.
    """
    top = norm.top
    unit = np.float32(value_max if value_max else top)
    std01 = (np.asarray(norm.std, np.float64) / top).astype(np.float32)
    mean01 = (np.asarray(norm.mean, np.float64) / top).astype(np.float32)
    return np.float32(1.0) / (unit * std01), mean01 / std01


def _pad(arr: np.ndarray, ph: int, pw: int, ph2: int, pw2: int) -> np.ndarray:
    """Reflect-pad (C, H, W) by (ph, pw) at the bottom/right, then symmetric-pad tiny images."""
    # numpy's reflect handles pads larger than the image (tiny windows, 1 x N strips).
    if ph or pw:
        arr = np.pad(arr, ((0, 0), (0, ph), (0, pw)), mode="reflect")
    if ph2 or pw2:
        arr = np.pad(arr, ((0, 0), (0, ph2), (0, pw2)), mode="symmetric")
    return arr


def _check_finite(img: np.ndarray, mask: np.ndarray | None, index: int) -> None:
    """NaN/Inf at a valid pixel: an InputError naming (and carrying) band, y, x."""
    bad = ~np.isfinite(img)
    if mask is not None:
        bad &= mask[None]
    if not bad.any():
        return
    band, y, x = (int(v) for v in np.argwhere(bad)[0])
    raise InputError(
        f"image {index}: {int(bad.sum())} NaN/Inf pixel values at valid pixels (first at band "
        f"{band}, y={y}, x={x}); mask them as nodata (valid_mask) or fill them before "
        "inference", band=band, y=y, x=x, index=index,
    )


def _masks(valid_mask, batch: list[np.ndarray], single: bool) -> list[np.ndarray | None]:
    """One (H, W) bool mask or None per image, checked against the image shapes."""
    if valid_mask is None:
        return [None] * len(batch)
    if single:
        items = [valid_mask]
    elif isinstance(valid_mask, np.ndarray) and valid_mask.ndim == 3:
        items = list(valid_mask)
    elif isinstance(valid_mask, np.ndarray):
        raise InputError(
            f"valid_mask has shape {valid_mask.shape}; a batch needs (N, H, W) or a list of "
            "(H, W) masks")
    else:
        items = list(valid_mask)
    if len(items) != len(batch):
        raise InputError(f"valid_mask has {len(items)} masks for {len(batch)} images")
    out = []
    for i, (m, img) in enumerate(zip(items, batch, strict=True)):
        if m is None:
            out.append(None)
            continue
        if not isinstance(m, np.ndarray) or m.dtype != np.bool_:
            got = m.dtype if isinstance(m, np.ndarray) else type(m).__name__
            raise InputError(f"valid_mask {i}: expected a bool array (False = nodata), got {got}")
        if m.shape != img.shape[-2:]:
            raise InputError(
                f"valid_mask {i}: shape {m.shape} does not match image {i}'s (H, W) "
                f"{img.shape[-2:]}")
        out.append(None if m.all() else m)
    return out


def _empty(hw: tuple[int, int], k: int, want_conf: bool, want_probs: bool) -> tuple:
    zeros = np.zeros(hw, np.uint8)
    return (zeros, zeros.copy() if want_conf else None,
            np.zeros((k, *hw), np.float32) if want_probs else None)


def _apply_mask(mask: np.ndarray | None, labels: np.ndarray, conf: np.ndarray | None,
                probs: np.ndarray | None) -> tuple:
    if mask is not None:
        nodata = ~mask
        labels[nodata] = 0
        if conf is not None:
            conf[nodata] = 0
        if probs is not None:
            probs[:, nodata] = 0.0
    return labels, conf, probs
