"""Labelled scenes a training run reads from: what is at this place, in windows.

A :class:`Source` lists its scenes from metadata (:class:`SceneRef`: id, shape, dtype) and
reads windows of image + labels on demand, so a dataset never has to fit in memory. Labels
come back as uint8 output indexes of the run's class table, with IGNORE_INDEX where the mask
says ignore or the image is nodata; the image in its stored dtype (bands selected), plus the
valid mask (False = nodata). Implementations: :class:`SyntheticSource` (the procedural
benchmark, in memory) here; rasters (``data.kind: pairs``) and zarr groups
(``data.kind: zarr``) in :mod:`hgn_model.data.rasters`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from hgn_model.data.classes import IGNORE_INDEX, ClassEntry, ClassTable

__all__ = ["SceneRef", "Source", "SyntheticSource", "Window", "read_padded"]


@dataclass(frozen=True)
class SceneRef:
    """One scene of a source, from metadata only."""

    id: str
    bands: int
    height: int
    width: int
    dtype: str


@dataclass
class Window:
    """Pixels of one window: image (C, h, w) stored dtype, labels (h, w) uint8, valid or None."""

    image: np.ndarray
    labels: np.ndarray
    valid: np.ndarray | None = None


class Source(Protocol):
    """What a training run needs from its data."""

    classes: ClassTable
    band_names: list[str]

    @property
    def scenes(self) -> list[SceneRef]: ...

    def read(self, scene_id: str, y0: int, y1: int, x0: int, x1: int) -> Window:
        """Window rows y0:y1, columns x0:x1, inside the scene."""
        ...

    def label_sample(self, scene_id: str, stride: int) -> np.ndarray:
        """Labels at every ``stride``-th pixel (rows and columns), for class statistics."""
        ...


def read_padded(source: Source, ref: SceneRef, y0: int, x0: int, size: int) -> Window:
    """A ``size`` square window at (y0, x0) that may reach past the scene: padded as nodata.

    Padding is labelled IGNORE_INDEX and marked invalid, so it never enters a loss and enters
    the network as the band mean (like nodata at inference).
    """
    ya, xa = max(y0, 0), max(x0, 0)
    yb, xb = min(y0 + size, ref.height), min(x0 + size, ref.width)
    win = source.read(ref.id, ya, yb, xa, xb)
    if (ya, xa, yb, xb) == (y0, x0, y0 + size, x0 + size):
        return win
    image = np.zeros((win.image.shape[0], size, size), win.image.dtype)
    labels = np.full((size, size), IGNORE_INDEX, np.uint8)
    valid = np.zeros((size, size), bool)
    sl = np.s_[ya - y0:yb - y0, xa - x0:xb - x0]
    image[(slice(None), *sl)] = win.image
    labels[sl] = win.labels
    valid[sl] = True if win.valid is None else win.valid
    return Window(image, labels, valid)


@functools.lru_cache(maxsize=24)
def _generated(seed: int, size: int, bands: int, dtype: str):  # -> synthetic.Scene
    """Scenes are pure functions of their arguments: drawn once per process (read-only use)."""
    from hgn_model.data.synthetic import generate_scene

    return generate_scene(seed, size, size, bands, dtype)


class SyntheticSource:
    """Benchmark scenes drawn from seeds (``hgn_model.data.synthetic``), held in memory.

    Class 0 ("unknown": clouds, the no-data corner) is a class here, as in the benchmark's
    convention (scored, but excluded from the reported mIoU excl. 0); no pixel is nodata.
    """

    def __init__(self, seeds: Sequence[int], size: int = 2448, bands: int = 3,
                 dtype: str = "uint8") -> None:
        from hgn_model.data.synthetic import CLASSES

        self.dtype = dtype
        self._scenes = {str(s): _generated(int(s), size, bands, dtype) for s in seeds}
        self.classes = ClassTable(classes=[
            ClassEntry(id=i, name=c.name, color=c.color) for i, c in enumerate(CLASSES)])
        self.band_names = ["red", "green", "blue", "nir"][:bands]

    @property
    def scenes(self) -> list[SceneRef]:
        return [SceneRef(k, *s.image.shape, s.image.dtype.name) for k, s in self._scenes.items()]

    def scene(self, scene_id: str):  # -> hgn_model.data.synthetic.Scene
        return self._scenes[scene_id]

    def read(self, scene_id: str, y0: int, y1: int, x0: int, x1: int) -> Window:
        s = self._scenes[scene_id]
        return Window(s.image[:, y0:y1, x0:x1], s.labels[y0:y1, x0:x1])

    def label_sample(self, scene_id: str, stride: int) -> np.ndarray:
        return self._scenes[scene_id].labels[::stride, ::stride]
