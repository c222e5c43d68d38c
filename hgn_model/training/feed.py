"""Batches for the training loop: crops drawn, read, augmented and turned into tensors.

On CPU (one data thread) each context is augmented in numpy by :class:`Batcher` and then
normalised. With ``data_threads > 1`` (the default on CUDA) W batchers, each with its own seeded
RNG stream, draw the contexts of a step in a thread pool (context j from batcher j mod W, so
the batch does not depend on thread timing), one step ahead of the compute; images travel as
stored and the float work (rotation, jitter, normalisation) runs on the device. Measured on
CPU, the two paths give the same tensors for the same draws
(``tests/test_train.py::test_device_side_augmentation_equals_the_cpu_path``).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from hgn_model.data.sampling import Batcher, ClassIndex, ContextSampler, RawSample, Sample
from hgn_model.input_spec import Normalization
from hgn_model.models._base import Detail

__all__ = ["Feed"]


def _tensors(samples: list[Sample], norms: dict[str, Normalization], dtype: str, crop: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Detail | None]:
    norm = norms[dtype]
    mean = np.asarray(norm.mean, np.float32).reshape(-1, 1, 1)
    inv = (1.0 / np.asarray(norm.std, np.float64)).astype(np.float32).reshape(-1, 1, 1)
    xs = []
    for s in samples:
        x = (s.image - mean) * inv
        if s.valid is not None:
            x[:, ~s.valid] = 0.0  # nodata and padding enter as the band mean
        xs.append(x)
    x = torch.from_numpy(np.stack(xs)).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(np.stack([s.labels for s in samples]).astype(np.int64)).to(device)
    size = samples[0].image.shape[-1]
    detail = None if crop >= size else Detail.of([s.offsets for s in samples], crop)
    return x, y, detail


def _device_tensors(samples: list[RawSample], norms: dict[str, Normalization], crop: int,
                    top: float, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor, Detail | None]:
    """The augmentation of :class:`Batcher` done on the device, from images as stored."""
    xs = []
    for s in samples:
        img = s.image.astype(np.int32) if s.image.dtype == np.uint16 else s.image
        x = torch.from_numpy(np.ascontiguousarray(img)).to(device, non_blocking=True).float()
        x = torch.rot90(x, s.rot, dims=(1, 2))
        if s.flip:
            x = x.flip(2)
        x = x * s.gain + torch.from_numpy(s.offset).to(device) * float(top)
        dt = np.dtype(s.dtype)
        if dt.kind in "ui":
            x = x.clamp(float(np.iinfo(dt).min), float(np.iinfo(dt).max))
        norm = norms[s.dtype]
        mean = torch.tensor(norm.mean, device=device).view(-1, 1, 1)
        std = torch.tensor(norm.std, device=device).view(-1, 1, 1)
        x = (x - mean) / std
        if s.valid is not None:
            x = x * torch.from_numpy(s.valid).to(device)
        xs.append(x)
    x = torch.stack(xs).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(np.stack([s.labels for s in samples]).astype(np.int64)).to(device)
    size = samples[0].image.shape[-1]
    detail = None if crop >= size else Detail.of([s.offsets for s in samples], crop)
    return x, y, detail


class Feed:
    """Per step: (x, y, detail) tensors on ``device`` for ``contexts`` contexts."""

    def __init__(self, plan: Any, index: ClassIndex, size: int, cfg: Any, seed: list[int],
                 norms: dict[str, Normalization], train_dtype: str, top: float,
                 contexts: int, device: torch.device, threads: int) -> None:
        self.norms, self.train_dtype, self.top = norms, train_dtype, top
        self.crop, self.contexts, self.device = cfg.crop, contexts, device
        self.threads = max(1, threads)
        seeds = [seed] if self.threads == 1 else [[*seed, w] for w in range(self.threads)]
        self.rngs = [np.random.default_rng(s) for s in seeds]
        self.batchers = [
            Batcher(plan.source, ContextSampler(plan.train, index, size, cfg.class_aware, rng,
                                                plan.forbidden),
                    cfg.crop, cfg.details_per_context, cfg.class_aware, top, rng)
            for rng in self.rngs]
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self._next: list[Future] | None = None
        self._after: list[dict] | None = None

    def _submit(self) -> list[Future]:
        assert self._pool is not None
        # batcher w serves contexts w, w + W, ...: each runs its share in order on one thread
        return [self._pool.submit(self._share, w) for w in range(self.threads)]

    def _share(self, w: int) -> list[RawSample]:
        return [self.batchers[w].sample_raw() for _ in range(w, self.contexts, self.threads)]

    def next(self) -> tuple[torch.Tensor, torch.Tensor, Detail | None]:
        if self._pool is None:
            if self.device.type == "cuda":
                raw = [self.batchers[0].sample_raw() for _ in range(self.contexts)]
                return _device_tensors(raw, self.norms, self.crop, self.top, self.device)
            samples = [self.batchers[0].sample() for _ in range(self.contexts)]
            return _tensors(samples, self.norms, self.train_dtype, self.crop, self.device)
        jobs = self._next or self._submit()
        shares = [j.result() for j in jobs]
        # the RNGs as they stand after this step's draws: what a checkpoint must record
        self._after = [r.bit_generator.state for r in self.rngs]
        self._next = self._submit()  # the next step's reads overlap this step's compute
        raw = [shares[j % self.threads][j // self.threads] for j in range(self.contexts)]
        return _device_tensors(raw, self.norms, self.crop, self.top, self.device)

    def rng_states(self) -> list[dict]:
        """Data RNG states after the last step handed out (prefetched draws excluded)."""
        if self._pool is not None and self._after is not None:
            return list(self._after)
        return [r.bit_generator.state for r in self.rngs]

    def set_rng_states(self, states: list[dict] | dict) -> None:
        if self._next is not None:  # drop draws made from the old states
            for job in self._next:
                job.result()
            self._next = None
        states = states if isinstance(states, list) else [states]
        for rng, st in zip(self.rngs, states, strict=False):
            rng.bit_generator.state = st
        self._after = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
