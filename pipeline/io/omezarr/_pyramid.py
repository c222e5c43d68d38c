"""The pyramid: 2x2 mode (labels) and mean (confidence) downsampling, block by block."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

PYRAMID_WORKERS = 4  # concurrent pyramid tasks in finalize
PYRAMID_BLOCK_PIXELS = 1 << 18  # coarse pixels per task (>= 1 chunk): batching small chunks
# halved finalize time for 128-px chunks here; memory per task stays ~1 Mpx of source


def _pad_even(a: np.ndarray) -> np.ndarray:
    if a.shape[0] % 2:
        a = np.concatenate([a, a[-1:]], axis=0)
    if a.shape[1] % 2:
        a = np.concatenate([a, a[:, -1:]], axis=1)
    return a


def mode_downsample(labels: np.ndarray) -> np.ndarray:
    """2x2 mode of a (H, W) label array -> (ceil(H/2), ceil(W/2)), same dtype.

    Ties go to the value met first in row-major order inside the block; an odd last
    row/column is replicated (which leaves the mode and its tie order unchanged).
    """
    a = _pad_even(np.asarray(labels))
    v = (a[0::2, 0::2], a[0::2, 1::2], a[1::2, 0::2], a[1::2, 1::2])
    # How many of the 4 block values equal v[i], from the 6 pairwise comparisons (6x faster
    # than a (4, 4, h, w) broadcast).
    e01, e02, e03 = v[0] == v[1], v[0] == v[2], v[0] == v[3]
    e12, e13, e23 = v[1] == v[2], v[1] == v[3], v[2] == v[3]
    counts = (
        e01.astype(np.uint8) + e02 + e03,
        e01.astype(np.uint8) + e12 + e13,
        e02.astype(np.uint8) + e12 + e23,
        e03.astype(np.uint8) + e13 + e23,
    )
    out, best = v[0].copy(), counts[0]
    for value, count in zip(v[1:], counts[1:], strict=True):
        np.copyto(out, value, where=count > best)  # strictly more: earlier values win ties
        best = np.maximum(best, count)
    return out


def mean_downsample(values: np.ndarray) -> np.ndarray:
    """Rounded 2x2 mean of a (H, W) uint8 array (odd edges replicated)."""
    a = _pad_even(np.asarray(values)).astype(np.uint16)
    total = a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2]
    return ((total + 2) // 4).astype(np.uint8)


def downsample_level(src: Any, dst: Any, reduce: Any) -> None:
    """Fill array ``dst`` with ``reduce`` (2x2) of ``src``, one block of coarse chunks per task.

    A task covers k x k coarse chunks (k so the block is about PYRAMID_BLOCK_PIXELS, at least
    one chunk) and reads the 2x larger finer region: memory per task is bounded by the chunk
    size, never by the scene size.
    """
    sh, sw = src.shape
    dh, dw = dst.shape
    ch, cw = dst.chunks
    k = max(1, math.isqrt(PYRAMID_BLOCK_PIXELS // (ch * cw)))
    bh, bw = k * ch, k * cw

    def one(origin: tuple[int, int]) -> None:
        y, x = origin
        block = np.asarray(src[2 * y:min(2 * (y + bh), sh), 2 * x:min(2 * (x + bw), sw)])
        dst[y:min(y + bh, dh), x:min(x + bw, dw)] = reduce(block)

    origins = [(y, x) for y in range(0, dh, bh) for x in range(0, dw, bw)]
    with ThreadPoolExecutor(PYRAMID_WORKERS, thread_name_prefix="pyramid") as pool:
        for _ in pool.map(one, origins):
            pass
