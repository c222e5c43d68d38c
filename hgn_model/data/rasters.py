"""Labelled rasters a user has: image/mask pairs (``data.kind: pairs``) and zarr groups
(``data.kind: zarr``), read in windows through the pipeline's own readers.

Every file goes through ``pipeline.catalog.catalog(url, storage_options)`` (metadata only) and
``pipeline.io.readers.open_scene(info, storage_options).read(y0, y1, x0, x1, bands=...)``, so
training reads exactly what ``hgn-pipeline run`` reads (GeoTIFF/COG, zarr, and whatever else the
format layer opens: PNG, JPEG, ...), local or on S3, one window at a time.

Masks: single-band class ids mapped through the class table's ids, or (3+ bands with every
class given a ``color``) RGB-coded, mapped through the colours (DeepGlobe). Image nodata (the
file's, or ``data.nodata``) and ignore classes become IGNORE_INDEX.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from functools import cached_property
from typing import Any

import numpy as np

from hgn_model.data.classes import IGNORE_INDEX, ClassTable, load_class_table
from hgn_model.data.source import SceneRef, Window
from hgn_model.errors import ConfigError

__all__ = ["PairsSource", "ZarrSource", "open_source"]

_STRIP = 1024  # rows per read when sampling whole masks for the class index


def _join(root: str, rel: str) -> str:
    if "://" in root:
        return f"{root.rstrip('/')}/{rel.lstrip('/')}"
    return posixpath.join(root, rel)


def _scene_info(url: str, options: dict[str, Any]):
    from pipeline.catalog import catalog

    cat = catalog(url, options)
    if not cat.scenes:
        why = "; ".join(str(f) for f in cat.failures) or "no readable raster there"
        raise ConfigError(f"cannot read {url}: {why}")
    return cat.scenes[0]


class _Scenes:
    """Shared plumbing: band selection, nodata, label mapping, fingerprints."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.options = dict(data.storage_options)
        self._readers: dict[str, Any] = {}

    def _reader(self, info: Any):
        from pipeline.io.readers import open_scene

        key = info.url + (info.array_path or "")
        if key not in self._readers:
            self._readers[key] = open_scene(info, self.options)
        return self._readers[key]

    def _bands(self, info: Any, sid: str) -> list[int]:
        bands = list(self.data.bands) if self.data.bands else list(range(info.bands))
        bad = [b for b in bands if not 0 <= b < info.bands]
        if bad:
            raise ConfigError(f"scene {sid!r}: bands {bad} do not exist ({info.url} has "
                              f"{info.bands} bands, 0-based)")
        return bands

    def _nodata(self, info: Any) -> float | None:
        return self.data.nodata if self.data.nodata is not None else getattr(info, "nodata", None)

    def _window(self, sid: str, img_info: Any, image: np.ndarray, labels: np.ndarray
                ) -> Window:
        from pipeline.nodata import valid_mask

        valid = valid_mask(image, self._nodata(img_info))
        if valid is not None:
            labels = labels.copy()
            labels[~valid] = IGNORE_INDEX
        return Window(image, labels, valid)

    def fingerprint(self, ids: list[str]) -> str:
        h = hashlib.sha256()
        for sid in ids:
            for info in self._infos(sid):
                h.update(f"{info.url}|{info.fingerprint}".encode())
        return f"{self.data.kind}-{h.hexdigest()[:16]}"


class PairsSource(_Scenes):
    """Image + mask files matched by ``{id}`` patterns under ``root``."""

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        self.classes: ClassTable = _table(data)
        self.ids = self._ids()
        self._img = {i: _scene_info(_join(data.root, data.image.format(id=i)), self.options)
                     for i in self.ids}
        self._mask = {i: _scene_info(_join(data.root, data.mask.format(id=i)), self.options)
                      for i in self.ids}
        for i in self.ids:
            a, b = self._img[i], self._mask[i]
            if a.shape[1:] != b.shape[1:]:
                raise ConfigError(f"scene {i!r}: image {a.url} is {a.height} x {a.width} px but "
                                  f"mask {b.url} is {b.height} x {b.width}; they must match")
        first = self._img[self.ids[0]]
        self.band_names = [f"band{b}" for b in self._bands(first, self.ids[0])]
        self._rgb = {i: self._mask[i].bands >= 3 and all(c.color for c in self.classes.classes)
                     for i in self.ids}

    def _ids(self) -> list[str]:
        d = self.data
        listed = [*(d.train_ids or []), *(d.val_ids or [])]
        if listed:
            return list(dict.fromkeys(listed))
        from pipeline.storage import get_fs, strip_protocol

        fs = get_fs(d.root, self.options)
        base = strip_protocol(d.root).rstrip("/")
        pattern = d.image.replace("{id}", "*")
        rx = re.compile(re.escape(d.image).replace(re.escape("{id}"), "(.+)") + "$")
        found = sorted(m.group(1) for p in fs.glob(f"{base}/{pattern}")
                       if (m := rx.search(posixpath.relpath(p, base))))
        if not found:
            raise ConfigError(f"no image matches {d.image!r} under {d.root}; check root and "
                              "the pattern, or list train_ids / val_ids")
        return found

    def _infos(self, sid: str) -> list[Any]:
        return [self._img[sid], self._mask[sid]]

    @cached_property
    def scenes(self) -> list[SceneRef]:
        out = []
        for i in self.ids:
            info = self._img[i]
            out.append(SceneRef(i, len(self._bands(info, i)), info.height, info.width,
                                np.dtype(info.dtype).name))
        return out

    def _labels(self, sid: str, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        info = self._mask[sid]
        where = f"scene {sid!r} ({info.url}): "
        if self._rgb[sid]:
            rgb = self._reader(info).read(y0, y1, x0, x1, bands=[0, 1, 2])
            return self.classes.map_colors(rgb, self.data.unlisted, where)
        raw = self._reader(info).read(y0, y1, x0, x1, bands=[0])[0]
        return self.classes.map_ids(raw, self.data.unlisted, where)

    def read(self, scene_id: str, y0: int, y1: int, x0: int, x1: int) -> Window:
        info = self._img[scene_id]
        image = self._reader(info).read(y0, y1, x0, x1, bands=self._bands(info, scene_id))
        return self._window(scene_id, info, image, self._labels(scene_id, y0, y1, x0, x1))

    def label_sample(self, scene_id: str, stride: int) -> np.ndarray:
        info = self._mask[scene_id]
        rows = []
        for y0 in range(0, info.height, _STRIP):
            y1 = min(y0 + _STRIP, info.height)
            lab = self._labels(scene_id, y0, y1, 0, info.width)
            rows.append(lab[(-y0) % stride::stride, ::stride])
        return np.concatenate(rows)


class ZarrSource(_Scenes):
    """A folder of zarr groups with an image array and a labels array (the benchmark's)."""

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        from pipeline.catalog import catalog

        cat = catalog(data.root, self.options, layout=data.layout)
        infos = [s for s in cat.scenes if s.kind in ("zarr", "ome-zarr")]
        if not infos:
            why = "; ".join(str(f) for f in cat.failures[:3])
            raise ConfigError(f"no zarr scenes under {data.root}" + (f": {why}" if why else ""))
        self._img = {s.scene_id: s for s in infos}
        self.ids = sorted(self._img)
        self.classes = _table(data, self._group_classes(infos[0]))
        first = infos[0]
        self.band_names = [f"band{b}" for b in self._bands(first, first.scene_id)]
        self._labels_arr: dict[str, Any] = {}

    def _group_classes(self, info: Any) -> list[dict] | None:
        import zarr

        group = zarr.open_group(info.url, mode="r", storage_options=self.options or None)
        rec = dict(group.attrs.get("hgn_synthetic", {}))
        return rec.get("classes")

    def _infos(self, sid: str) -> list[Any]:
        return [self._img[sid]]

    @cached_property
    def scenes(self) -> list[SceneRef]:
        return [SceneRef(i, len(self._bands(s, i)), s.height, s.width, np.dtype(s.dtype).name)
                for i, s in self._img.items()]

    def _labels_of(self, sid: str):
        if sid not in self._labels_arr:
            import zarr

            info = self._img[sid]
            group = zarr.open_group(info.url, mode="r", storage_options=self.options or None)
            if self.data.labels not in group:
                raise ConfigError(f"scene {sid!r} ({info.url}) has no {self.data.labels!r} "
                                  "array; set data.labels to its labels array")
            self._labels_arr[sid] = group[self.data.labels]
        return self._labels_arr[sid]

    def read(self, scene_id: str, y0: int, y1: int, x0: int, x1: int) -> Window:
        info = self._img[scene_id]
        image = self._reader(info).read(y0, y1, x0, x1, bands=self._bands(info, scene_id))
        raw = np.asarray(self._labels_of(scene_id)[y0:y1, x0:x1])
        labels = self.classes.map_ids(raw, self.data.unlisted, f"scene {scene_id!r}: ")
        return self._window(scene_id, info, image, labels)

    def label_sample(self, scene_id: str, stride: int) -> np.ndarray:
        raw = np.asarray(self._labels_of(scene_id)[::stride, ::stride])
        return self.classes.map_ids(raw, self.data.unlisted, f"scene {scene_id!r}: ")


def _table(data: Any, fallback: list[dict] | None = None) -> ClassTable:
    spec = data.classes if data.classes is not None else fallback
    if spec is None:
        raise ConfigError(f"data.kind {data.kind}: give the class table (`classes`: a list of "
                          "{id, name, color?, ignore?} or a YAML file)")
    try:
        return load_class_table(spec)
    except ValueError as exc:
        raise ConfigError(f"classes: {exc}") from exc


def open_source(data: Any) -> PairsSource | ZarrSource:
    """The source of a ``pairs`` or ``zarr`` data section."""
    return PairsSource(data) if data.kind == "pairs" else ZarrSource(data)
