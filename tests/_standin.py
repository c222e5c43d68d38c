"""Test-only stand-in for ``hgn_model.Segmenter`` and tiny scene archives.

``TinySegmenter`` is a real (small, randomly initialised, seeded) torch conv net behind the
Segmenter ``predict()`` contract. Its receptive field has radius ``RF`` px, so with a halo of
at least ``RF`` the pipeline must reproduce whole-scene inference exactly away from the scene
edges: a sharp check of the windowing and stitching offsets. Never shipped in the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import zarr

RF = 3  # receptive-field radius: 3x3 conv (1) + 5x5 conv (2)
CLASSES = [
    ("background", (0, 0, 0, 0)),
    ("a", (255, 0, 0, 255)),
    ("b", (0, 255, 0, 255)),
    ("c", (0, 0, 255, 255)),
]


class TinySegmenter:
    """Deterministic float64 conv net; labels uint8, confidence = round(max softmax * 255)."""

    def __init__(self, in_channels: int = 3, device: str = "auto", threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(1234)
        k = len(CLASSES)
        self.w1 = torch.randn(8, in_channels, 3, 3, generator=gen, dtype=torch.float64)
        self.w2 = torch.randn(k, 8, 5, 5, generator=gen, dtype=torch.float64)
        self.in_channels, self.num_classes = in_channels, k
        self.device = "cuda" if device != "cpu" and torch.cuda.is_available() else "cpu"
        self.config = SimpleNamespace(
            arch="tiny-standin",
            sha256="0" * 64,
            in_channels=in_channels,
            num_classes=k,
            classes=[SimpleNamespace(name=n, color=c) for n, c in CLASSES],
        )
        self.calls = 0

    def predict(self, images, return_confidence=False, return_probs=False, value_max=None,
                valid_mask=None):
        single = images.ndim == 3
        x = images[None] if single else images
        mask = None if valid_mask is None else np.asarray(valid_mask, bool).reshape(
            x.shape[0], *x.shape[-2:])
        if mask is not None and not mask.any():  # contract C1: the network is not run
            zeros = np.zeros((x.shape[0], *x.shape[-2:]), np.uint8)
            zeros = zeros[0] if single else zeros
            return SimpleNamespace(labels=zeros, probs=None,
                                   confidence=zeros.copy() if return_confidence else None)
        if x.dtype == np.uint8:
            scale = 255.0
        elif x.dtype == np.uint16:
            scale = float(value_max or 65535)
        else:
            scale = 1.0
        valid = np.ones((x.shape[0], *x.shape[-2:]), bool) if mask is None else mask
        if x.dtype.kind == "f" and not np.isfinite(x).all(axis=1)[valid].all():
            raise ValueError("image has NaN/Inf pixel values at valid pixels")  # as Segmenter
        t = torch.from_numpy(np.array(x, dtype=np.float64)) / scale
        if mask is not None:  # contract C1: nodata pixels enter the network as 0
            t[torch.from_numpy(~mask)[:, None].expand_as(t)] = 0.0
        with torch.no_grad():
            h = torch.relu(torch.nn.functional.conv2d(t, self.w1, padding=1))
            logits = torch.nn.functional.conv2d(h, self.w2, padding=2)
            probs = torch.softmax(logits, dim=1)
        self.calls += 1
        labels = probs.argmax(1).numpy().astype(np.uint8)
        conf = np.round(probs.max(1).values.numpy() * 255).astype(np.uint8)
        if mask is not None:
            labels[~mask], conf[~mask] = 0, 0
        if single:
            labels, conf = labels[0], conf[0]
        return SimpleNamespace(
            labels=labels, confidence=conf if return_confidence else None, probs=None
        )


@dataclass(frozen=True)
class TinyLoader:
    """Picklable ``loader(device, threads)`` for executors."""

    in_channels: int = 3

    def __call__(self, device: str = "auto", threads: int | None = None) -> TinySegmenter:
        return TinySegmenter(self.in_channels, device, threads)


class _CrashOnce(TinySegmenter):
    """Kills its process on its first predict while ``marker`` does not exist, then works."""

    def __init__(self, marker: str, *args, **kw):
        super().__init__(*args, **kw)
        self.marker = marker

    def predict(self, images, **kw):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text("crashed")
            os._exit(1)  # a hard crash (OOM kill, segfault), not an exception
        return super().predict(images, **kw)


@dataclass(frozen=True)
class CrashOnceLoader:
    """Loader whose model crashes its worker once (fault-tolerance tests)."""

    marker: str

    def __call__(self, device: str = "auto", threads: int | None = None) -> TinySegmenter:
        return _CrashOnce(self.marker, 3, device, threads)


class _Slow(TinySegmenter):
    """The stand-in, plus ``delay_s`` of sleep per predict call: a model that takes time
    without taking CPU, so pool tests on a 2-core machine measure the pool, not the cores."""

    def __init__(self, delay_s: float, *args, **kw):
        super().__init__(*args, **kw)
        self.delay_s = delay_s

    def predict(self, images, **kw):
        import time

        time.sleep(self.delay_s)
        return super().predict(images, **kw)


@dataclass(frozen=True)
class SlowLoader:
    """Loader of the slow stand-in. While the file ``gate`` exists, a new model's load
    blocks: actors started then never become ready (a restart that does not come)."""

    delay_s: float = 0.05
    gate: str | None = None

    def __call__(self, device: str = "auto", threads: int | None = None) -> TinySegmenter:
        import time

        while self.gate is not None and os.path.exists(self.gate):
            time.sleep(0.1)
        return _Slow(self.delay_s, 3, device, threads)


class _Killer(TinySegmenter):
    def predict(self, images, **kw):
        os._exit(1)  # every call kills its process: a batch no actor survives


@dataclass(frozen=True)
class KillerLoader:
    """Loader whose model kills its worker on every predict (poison-batch tests)."""

    def __call__(self, device: str = "auto", threads: int | None = None) -> TinySegmenter:
        return _Killer(3, device, threads)


def smooth_image(seed: int, c: int, h: int, w: int, dtype: str = "uint8") -> np.ndarray:
    """Blobby image so the stand-in's labels form regions (not salt and pepper)."""
    rng = np.random.default_rng(seed)
    small = rng.random((c, h // 16 + 2, w // 16 + 2))
    big = np.kron(small, np.ones((16, 16)))[:, :h, :w]
    img = np.clip(big + 0.15 * rng.random((c, h, w)), 0, 1)
    peak = 255 if dtype == "uint8" else 65535
    return (img * peak).astype(dtype) if dtype != "float32" else img.astype(np.float32)


def write_zarr_scene(root: Path | str, name: str, image: np.ndarray,
                     labels: np.ndarray | None = None, chunks: int = 256,
                     storage_options: dict | None = None) -> str:
    """A zarr v3 group ``<root>/<name>.zarr`` with ``image`` (C,H,W) (+ ``labels``).

    ``root``: a local folder or an ``s3://`` URL (with ``storage_options``).
    """
    path = f"{str(root).rstrip('/')}/{name}.zarr"
    kw = {"storage_options": storage_options} if storage_options else {}
    g = zarr.open_group(path, mode="w", **kw)
    c, h, w = image.shape
    arr = g.create_array("image", shape=image.shape, dtype=image.dtype,
                         chunks=(c, min(chunks, h), min(chunks, w)))
    arr[...] = image
    if labels is not None:
        lab = g.create_array("labels", shape=labels.shape, dtype=labels.dtype,
                             chunks=(min(chunks, h), min(chunks, w)))
        lab[...] = labels
    return path


def make_tiny_checkpoint(directory: Path, in_channels: int = 3) -> Path:
    """A real (randomly initialised, seeded) narrow HGN checkpoint for end-to-end tests."""
    from hgn_model import create_model, save_checkpoint
    from hgn_model.checkpoint import CheckpointConfig, ClassInfo, InputSpec

    torch.manual_seed(0)
    model_cfg = {"width": 0.125}
    model = create_model("hgn", len(CLASSES), in_channels=in_channels, **model_cfg)
    cfg = CheckpointConfig(
        arch="hgn",
        model_cfg=model_cfg,
        classes=[ClassInfo(name=n, color=c) for n, c in CLASSES],
        input=InputSpec(bands=in_channels, mean=[0.5] * in_channels, std=[0.25] * in_channels),
    )
    stem = Path(directory) / "tiny-hgn"
    save_checkpoint(model, cfg, stem)
    return stem.with_suffix(".safetensors")
