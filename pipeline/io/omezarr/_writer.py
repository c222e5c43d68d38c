"""The writer of one scene's store: create, write level-0 blocks, finalize the pyramid."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import ConfigError, OutputError, OutputNotFoundError, WindowError
from pipeline.io.omezarr._arrays import forget_arrays, open_array, open_group
from pipeline.io.omezarr._layout import (
    CONFIDENCE_LAYER,
    LABELS_LAYER,
    MIN_LEVELS,
    WRITER_FORMAT,
    class_list,
    georef_attrs,
    jsonable,
    level_shapes,
    multiscale,
    now,
    package_version,
    scene_store_url,
)
from pipeline.io.omezarr._pyramid import downsample_level, mean_downsample, mode_downsample
from pipeline.state.integrity import Record, block_keys, digest_store
from pipeline.storage import StorageOptions, get_fs, join_url, redact, strip_protocol

if TYPE_CHECKING:
    from pipeline.scene import Georef

__all__ = ["SceneWriter"]


class SceneWriter:
    """Writes one scene's OME-Zarr store. Picklable (spec only; arrays open lazily)."""

    def __init__(self, url: str, scene_id: str, height: int, width: int, chunk: tuple[int, int],
                 levels: int, confidence: bool, storage_options: Mapping[str, Any] | None) -> None:
        self.url = url
        self.scene_id = scene_id
        self.height = height
        self.width = width
        self.chunk = chunk
        self.levels = levels
        self.confidence = confidence
        self._options = StorageOptions(storage_options or {})

    def __repr__(self) -> str:
        return (f"SceneWriter({self.scene_id!r}, url={self.url!r}, shape=({self.height}, "
                f"{self.width}), chunk={self.chunk}, levels={self.levels}, "
                f"confidence={self.confidence})")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_options"] = dict(self._options)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._options = StorageOptions(state["_options"])

    # -- construction
    @classmethod
    def create(
        cls,
        output_url: str,
        scene_id: str,
        height: int,
        width: int,
        chunk: int | tuple[int, int],
        classes: Sequence[Any],
        provenance: Mapping[str, Any],
        georef: Georef | None = None,
        confidence: bool = True,
        levels: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> SceneWriter:
        """Create the store, every level array (empty) and all metadata (status "incomplete").

        ``levels`` None: enough 2x levels for the coarsest to fit one chunk, at least
        :data:`MIN_LEVELS`. ``classes``: ``[(name, rgba), ...]`` indexed by label id (objects
        with ``.name``/``.color`` work too). An existing store is refused unless ``overwrite``;
        use :meth:`open` to resume one.
        """
        url = scene_store_url(output_url, scene_id)
        if int(height) < 1 or int(width) < 1:
            raise ConfigError(f"scene {scene_id!r}: height={height}, width={width} must be >= 1")
        if isinstance(chunk, Sequence):
            if len(chunk) != 2:
                raise ConfigError(f"chunk={chunk!r}: give an int or (height, width)")
            ch, cw = int(chunk[0]), int(chunk[1])
        else:
            ch = cw = int(chunk)
        if ch < 1 or cw < 1:
            raise ConfigError(f"chunk={chunk!r} must be positive")
        if levels is None:
            levels = MIN_LEVELS
            while True:
                h_top, w_top = level_shapes(int(height), int(width), levels)[-1]
                if h_top <= ch and w_top <= cw:
                    break
                levels += 1
        if int(levels) < 1:
            raise ConfigError(f"levels={levels!r} must be >= 1 (default: >= {MIN_LEVELS})")
        writer = cls(url, scene_id, int(height), int(width), (ch, cw), int(levels),
                     bool(confidence), storage_options)
        class_table = class_list(classes)
        # Provenance often embeds the run config: make sure the credentials used for this
        # very write can never end up in the store's attributes.
        hgn = dict(jsonable(dict(provenance), "provenance", writer._options))
        hgn.setdefault("package_version", package_version())
        hgn.setdefault("created", now())
        if georef is not None:
            hgn["georeference"] = georef.to_dict()
        hgn["status"] = "incomplete"
        hgn["writer"] = {
            "format": WRITER_FORMAT, "height": writer.height, "width": writer.width,
            "chunk": [ch, cw], "levels": writer.levels, "confidence": writer.confidence,
            "labels": f"labels/{LABELS_LAYER}",
            "confidence_image": "." if writer.confidence else None,
        }
        try:
            writer._create_store(class_table, hgn, georef, overwrite)
        except (OutputError, ConfigError):
            raise
        except Exception as exc:
            raise OutputError(
                f"scene {scene_id!r}: cannot create {url}: {type(exc).__name__}: "
                f"{redact(str(exc), writer._options)}"
            ) from None
        return writer

    def _create_store(self, classes: list[tuple[str, list[int]]], hgn: dict[str, Any],
                      georef: Georef | None, overwrite: bool) -> None:
        if not overwrite and self._exists():
            raise OutputError(
                f"scene {self.scene_id!r}: {self.url} already exists but the output's ledger "
                "(_hgn/ledger) has no record of it (deleted, or written by another tool): rerun "
                "with `--set overwrite=true` (config `overwrite: true`) to recompute and replace "
                "it, or write to another --output"
            )
        shapes = level_shapes(self.height, self.width, self.levels)
        geo0 = georef_attrs(georef, shapes[0]) if georef is not None else {}
        ome_root: dict[str, Any] = {"version": "0.5"}
        if self.confidence:
            ome_root["multiscales"] = [multiscale(CONFIDENCE_LAYER, self.levels, "mean")]
        forget_arrays(self.url)
        root = open_group(self.url, self._options, mode="w")
        root.attrs.put({"ome": ome_root, "hgn": hgn, **geo0})
        labels = root.create_group("labels", attributes={
            "ome": {"version": "0.5", "labels": [LABELS_LAYER]},
        })
        image_label: dict[str, Any] = {
            "colors": [{"label-value": i, "rgba": rgba} for i, (_, rgba) in enumerate(classes)],
            "properties": [{"label-value": i, "name": name} for i, (name, _) in enumerate(classes)],
        }
        if self.confidence:
            image_label["source"] = {"image": "../../"}
        seg = labels.create_group(LABELS_LAYER, attributes={
            "ome": {"version": "0.5",
                    "multiscales": [multiscale(LABELS_LAYER, self.levels, "mode")],
                    "image-label": image_label},
            **geo0,
        })
        targets = [seg] + ([root] if self.confidence else [])
        for k, shape in enumerate(shapes):
            attrs = georef_attrs(georef.scaled(2**k), shape) if georef is not None else {}
            chunks = (min(self.chunk[0], shape[0]), min(self.chunk[1], shape[1]))
            for group in targets:
                group.create_array(
                    str(k), shape=shape, chunks=chunks, dtype="uint8", fill_value=0,
                    dimension_names=("y", "x"), attributes=attrs, overwrite=True,
                )

    def _exists(self) -> bool:
        fs = get_fs(self.url, self._options)
        return bool(fs.exists(join_url(strip_protocol(self.url), "zarr.json")))

    @classmethod
    def exists(cls, output_url: str, scene_id: str,
               storage_options: Mapping[str, Any] | None = None) -> bool:
        """Whether ``<output>/<scene_id>.ome.zarr`` has root metadata (complete or not)."""
        url = scene_store_url(output_url, scene_id)
        return cls(url, scene_id, 1, 1, (1, 1), 1, False, storage_options)._exists()

    @classmethod
    def open(cls, output_url: str, scene_id: str,
             storage_options: Mapping[str, Any] | None = None) -> SceneWriter:
        """Reopen a store made by :meth:`create` (resume, finalize, inspection)."""
        url = scene_store_url(output_url, scene_id)
        try:
            attrs = dict(open_group(url, storage_options or {}, mode="r").attrs)
        except FileNotFoundError:
            raise OutputNotFoundError(
                f"scene {scene_id!r}: no output store at {url}; create it with SceneWriter.create"
            ) from None
        except Exception as exc:
            raise OutputError(
                f"scene {scene_id!r}: cannot open {url}: {type(exc).__name__}: "
                f"{redact(str(exc), storage_options)}"
            ) from None
        spec = (attrs.get("hgn") or {}).get("writer")
        if not isinstance(spec, Mapping) or spec.get("format") != WRITER_FORMAT:
            raise OutputError(
                f"scene {scene_id!r}: {url} was not written by this SceneWriter "
                f"(hgn.writer={spec!r}); remove it or write to another output root"
            )
        return cls(url, scene_id, int(spec["height"]), int(spec["width"]),
                   (int(spec["chunk"][0]), int(spec["chunk"][1])), int(spec["levels"]),
                   bool(spec["confidence"]), storage_options)

    # -- inspection
    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes as stored now (fresh read)."""
        return dict(open_group(self.url, self._options, mode="r").attrs)

    @property
    def complete(self) -> bool:
        return (self.attrs.get("hgn") or {}).get("status") == "complete"

    def level_shape(self, level: int) -> tuple[int, int]:
        return level_shapes(self.height, self.width, self.levels)[level]

    def chunk_origins(self) -> Iterator[tuple[int, int]]:
        """Top-left corners of level-0 output chunks, row by row."""
        for y in range(0, self.height, self.chunk[0]):
            for x in range(0, self.width, self.chunk[1]):
                yield y, x

    def read_level(self, level: int = 0, layer: str = LABELS_LAYER) -> np.ndarray:
        """A whole level as numpy (previews, tests); mind the size of level 0."""
        return np.asarray(self._array(layer, level, mode="r")[...])

    def array_path(self, layer: str, level: int) -> str:
        """Path of a layer's level array inside the store (also its chunks' key prefix)."""
        if layer == LABELS_LAYER:
            return f"labels/{LABELS_LAYER}/{level}"
        if layer == CONFIDENCE_LAYER and self.confidence:
            return str(level)
        raise ConfigError(f"layer={layer!r}: this store has {self._layers()}")

    def _array(self, layer: str, level: int, mode: str = "r+") -> Any:
        return open_array(self.url, self.array_path(layer, level), self._options, mode)

    def _layers(self) -> list[str]:
        return [LABELS_LAYER] + ([CONFIDENCE_LAYER] if self.confidence else [])

    # -- writing
    def write_block(self, y0: int, x0: int, labels: np.ndarray,
                    confidence: np.ndarray | None = None) -> dict[str, Record]:
        """Write a chunk-aligned level-0 block (one or more whole chunks).

        ``y0``/``x0`` must be multiples of the chunk size and the block must span whole chunks
        (short only at the scene's bottom/right edge). ``confidence`` is required when the
        store has a confidence layer and ignored otherwise. Returns the checksum record of
        every chunk written, by store key (:mod:`pipeline.state.integrity`; None: nothing stored).
        """
        labels = np.asarray(labels)
        where = f"scene {self.scene_id!r}: block at y={y0}, x={x0}"
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise WindowError(f"{where}: labels must be a 2-D uint8 array, got {labels.dtype} "
                              f"{labels.shape}")
        h, w = labels.shape
        ch, cw = self.chunk
        aligned = (
            y0 >= 0 and x0 >= 0 and y0 % ch == 0 and x0 % cw == 0 and h >= 1 and w >= 1
            and y0 + h <= self.height and x0 + w <= self.width
            and (h % ch == 0 or y0 + h == self.height)
            and (w % cw == 0 or x0 + w == self.width)
        )
        if not aligned:
            raise WindowError(
                f"{where}, size {h} x {w} is not chunk-aligned: origins must be multiples of "
                f"the chunk {ch} x {cw} and blocks must span whole chunks of the "
                f"{self.height} x {self.width} scene (short only at its edge)"
            )
        conf = None
        if self.confidence:
            if confidence is None:
                raise WindowError(f"{where}: this store has a confidence layer; pass confidence")
            conf = np.asarray(confidence)
            if conf.shape != labels.shape or conf.dtype != np.uint8:
                raise WindowError(f"{where}: confidence must be uint8 {labels.shape}, got "
                                  f"{conf.dtype} {conf.shape}")
        try:
            self._array(LABELS_LAYER, 0)[y0:y0 + h, x0:x0 + w] = labels
            if conf is not None:
                self._array(CONFIDENCE_LAYER, 0)[y0:y0 + h, x0:x0 + w] = conf
        except Exception as exc:
            raise OutputError(
                f"{where}, size {h} x {w}: writing to {self.url} failed: {type(exc).__name__}: "
                f"{redact(str(exc), self._options)}"
            ) from None
        keys = [k for layer in self._layers()
                for k in block_keys(self.array_path(layer, 0), self.chunk, y0, x0, h, w)]
        return digest_store(self.url, self._options).take(keys)

    def finalize(self, extra_attrs: Mapping[str, Any] | None = None) -> dict[str, Record]:
        """Build levels 1.. from level 0 and mark the store complete (idempotent).

        ``extra_attrs`` are merged into ``attrs["hgn"]`` (e.g. timings, finished time).
        Returns the checksum record of every pyramid chunk written, by store key.
        """
        pyramid = tuple(f"{self.array_path(layer, k)}/" for layer in self._layers()
                        for k in range(1, self.levels))
        try:
            for layer, reduce in ((LABELS_LAYER, mode_downsample),
                                  (CONFIDENCE_LAYER, mean_downsample)):
                if layer not in self._layers():
                    continue
                for level in range(1, self.levels):
                    self._build_level(layer, level, reduce)
            root = open_group(self.url, self._options, mode="r+")
            attrs = dict(root.attrs)
            hgn = dict(attrs.get("hgn") or {})
            hgn.update(jsonable(dict(extra_attrs or {}), "extra_attrs", self._options))
            hgn.setdefault("finished", now())
            hgn["status"] = "complete"
            root.attrs.update({"hgn": hgn})
            self.close()
            return digest_store(self.url, self._options).take_prefix(pyramid)
        except (ConfigError, WindowError):
            raise
        except Exception as exc:
            raise OutputError(
                f"scene {self.scene_id!r}: finalizing {self.url} failed: {type(exc).__name__}: "
                f"{redact(str(exc), self._options)}"
            ) from None

    def close(self) -> None:
        """Forget this store's opened arrays in this process (done after finalize)."""
        forget_arrays(self.url)

    def _build_level(self, layer: str, level: int, reduce: Any) -> None:
        """Level ``level`` of ``layer`` from ``level - 1`` (see :func:`downsample_level`)."""
        downsample_level(self._array(layer, level - 1, mode="r"), self._array(layer, level),
                         reduce)
