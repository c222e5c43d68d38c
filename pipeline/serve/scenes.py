"""What the viewer knows about an output root: scene views, sources, legends (all read-only).

Everything is read through the query API (:class:`pipeline.query.OutputStore` /
:class:`~pipeline.query.SceneView`), the change-layer readers and the format layer's readers
for the source image; nothing here writes. Opened scenes are cached for :data:`VIEW_TTL_S`
seconds, so a nightly run that rewrites a store shows up on the next page load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import NotFoundError, OutputError
from pipeline.query import OutputStore, SceneNotFoundError, SceneView

__all__ = ["LEGEND_MAX_PIXELS", "Scene", "SceneRegistry"]

VIEW_TTL_S = 10.0  # re-open a scene's store after this long (picks up rewrites by runs)
LEGEND_MAX_PIXELS = 16_000_000  # legend areas from the finest level with at most this many px
SOURCE_SAMPLE = 256  # px side of the windows sampled for the source image's display stretch


@dataclass
class Scene:
    """An opened scene plus what the viewer derives from it (lazily, once per version)."""

    view: SceneView
    opened: float
    so: dict[str, Any]
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _key_locks: dict[str, threading.Lock] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """Changes whenever a run or a diff rewrites the store (tile URLs carry it)."""
        from pipeline.io.omezarr import read_change_attrs

        if "version" not in self._cache:
            h = self.view.hgn
            change = read_change_attrs(self.view.url, self.so) or {}
            self._cache["version"] = "|".join(str(v) for v in (
                h.get("run_id"), h.get("finished"), change.get("created")))
        return self._cache["version"]

    def cached(self, key: str, make: Any) -> Any:
        """``make()`` once per key; one lock per key, so a slow legend never holds up tiles
        (and makers may use other keys)."""
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._cache:
                self._cache[key] = make()
        return self._cache[key]


class SceneRegistry:
    """Scene views of one output root, by id, re-opened after :data:`VIEW_TTL_S`."""

    def __init__(self, output_url: str, storage_options: Mapping[str, Any] | None) -> None:
        self.store = OutputStore(output_url, storage_options)
        self.so = dict(storage_options or {})
        self._scenes: dict[str, Scene] = {}
        self._ids: tuple[float, set[str]] | None = None
        self._lock = threading.Lock()

    def get(self, scene_id: str | None) -> Scene:
        if not scene_id:
            raise NotFoundError("no scene id given (?scene=ID)")
        now = time.monotonic()
        with self._lock:
            scene = self._scenes.get(scene_id)
            if scene is not None and now - scene.opened < VIEW_TTL_S:
                return scene
        try:
            view = self.store.scene(scene_id)
        except (SceneNotFoundError, OutputError) as exc:  # OutputError: a refused id ("..")
            raise NotFoundError(str(exc)) from None
        scene = Scene(view, now, self.so)
        with self._lock:
            self._scenes[scene_id] = scene
        return scene

    def ids(self) -> set[str]:
        """Scene ids (a listing of the output, cached for :data:`VIEW_TTL_S`)."""
        now = time.monotonic()
        with self._lock:
            if self._ids is not None and now - self._ids[0] < VIEW_TTL_S:
                return self._ids[1]
        ids = set(self.store.scene_ids())
        with self._lock:
            self._ids = (now, ids)
        return ids


def legend(scene: Scene) -> dict[str, Any]:
    """Classes with colours, pixels and areas (m2, ha) from the store's class statistics."""
    return scene.cached("legend", lambda: _legend(scene.view))


def _legend(view: SceneView) -> dict[str, Any]:
    level = 0
    while level < view.levels - 1 and np.prod(view.level_shape(level)) > LEGEND_MAX_PIXELS:
        level += 1
    st = view.class_stats(level=level, allow_incomplete=True)  # says what it left out
    rows = []
    for r in st.rows:
        rgba = view.classes[r.label][1] if r.label < len(view.classes) else (0, 0, 0, 0)
        rows.append({"label": r.label, "name": r.name, "rgba": list(rgba), "pixels": r.pixels,
                     "area_m2": r.area, "area_ha": None if r.area is None else r.area / 1e4,
                     "fraction": r.fraction})
    return {"scene_id": view.scene_id, "exact": st.exact, "level": st.level,
            "area_unit": st.area_unit, "note": st.note, "rows": rows,
            "coverage": st.coverage, "left_out": len(st.left_out or ())}


def source_reader(scene: Scene) -> tuple[Any, list[int]] | None:
    """(reader, bands to show as RGB) of the input image, or None when it is not readable."""
    return scene.cached("source", lambda: _open_source(scene))


def _open_source(scene: Scene) -> tuple[Any, list[int]] | None:
    from pipeline.io.readers import open_scene
    from pipeline.query.preview import display_bands
    from pipeline.scene import SceneInfo

    hgn = scene.view.hgn
    recorded = hgn.get("input_scene")
    if not isinstance(recorded, Mapping):
        return None
    try:
        info = SceneInfo.from_dict(recorded)
        if (info.height, info.width) != (scene.view.height, scene.view.width):
            return None  # the input changed since: its pixels no longer match these labels
        reader = open_scene(info, scene.so)
        reader.close()  # a handle this process cached earlier must not hide a moved input
        reader.read(0, 1, 0, 1)  # opens it: a moved or unreadable input fails here
    except Exception:  # any reason the source cannot be shown: the labels still can
        return None
    return reader, display_bands(hgn, info)


def source_stretch(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) display range: 2nd/98th percentiles of a few sampled windows."""
    def make() -> tuple[np.ndarray, np.ndarray]:
        from pipeline.nodata import valid_mask

        reader, bands = source_reader(scene)
        h, w, s = scene.view.height, scene.view.width, SOURCE_SAMPLE
        samples = []
        for fy, fx in ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)):
            y0, x0 = max(0, int(fy * h) - s // 2), max(0, int(fx * w) - s // 2)
            win = reader.read(y0, min(h, y0 + s), x0, min(w, x0 + s), bands=bands)
            mask = valid_mask(win, reader.info.nodata)
            flat = win.reshape(len(bands), -1).astype(np.float64)
            samples.append(flat if mask is None else flat[:, mask.ravel()])
        data = np.concatenate(samples, axis=1)
        if data.shape[1] == 0:
            return np.zeros(len(bands)), np.ones(len(bands))
        lo, hi = np.percentile(data, 2, axis=1), np.percentile(data, 98, axis=1)
        return lo, np.maximum(hi, lo + 1e-9)

    return scene.cached("stretch", make)
