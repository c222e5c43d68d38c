"""Query what a run wrote: scenes, metadata, windows, class areas, PNG previews.

Works on any output root (local path or ``s3://``) in the layout of
:mod:`pipeline.io.omezarr`: one ``<scene_id>.ome.zarr`` per scene, labels under
``labels/segmentation/<level>``, optional confidence at ``<level>`` of the root image, and
the ledger under ``_hgn/`` (:mod:`pipeline.ledger`) for scene states.

Boxes are in level-0 pixels, half-open ``(y0, y1, x0, x1)``, whatever level is read: level
``k`` returns rows ``floor(y0 / 2^k) .. ceil(y1 / 2^k)`` (each coarse pixel summarises a
``2^k x 2^k`` block). Geographic boxes ``(xmin, ymin, xmax, ymax)`` are in the scene's CRS
and need a georeference. Class areas are exact at level 0; at a coarser level each coarse
pixel counts for the level-0 pixels it covers inside the box, so totals stay exact and only
the split between classes is approximate (fast: 4^k fewer pixels read).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.coverage import DecodingArray, decode_failure, tile_key, trusted_tiles
from pipeline.errors import (
    DamagedOutputError,
    OutputNotFoundError,
    QueryError,
    SceneNotFoundError,
    WindowError,
)
from pipeline.hgnstore import HGN_DIR, HgnStore
from pipeline.io.omezarr import CONFIDENCE_LAYER, LABELS_LAYER, STORE_SUFFIX, SceneWriter
from pipeline.ledger import Ledger, RunFingerprint
from pipeline.scene import Georef
from pipeline.stats import ClassRow, ClassStats, class_stats, with_coverage
from pipeline.storage import get_fs, is_remote, resolve_url, strip_protocol

__all__ = [
    "ClassRow",
    "ClassStats",
    "OutputStore",
    "QueryError",
    "SceneNotFoundError",
    "SceneSummary",
    "SceneView",
]

READ_WORKERS = 4  # concurrent chunk-tile reads for stats/previews (S3 latency hiding)
_Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class SceneSummary:
    """One line of ``query scenes``: status and provenance."""

    scene_id: str
    status: str  # ledger state (pending/running/done/failed), else "complete"/"incomplete"
    store: str | None
    height: int | None = None
    width: int | None = None
    levels: int | None = None
    arch: str | None = None
    checkpoint_sha256: str | None = None
    input_url: str | None = None
    input_fingerprint: str | None = None
    run_id: str | None = None
    finished: str | None = None
    georeferenced: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OutputStore:
    """An output root written by ``hgn-pipeline run``."""

    def __init__(self, output_url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = resolve_url(output_url)
        self.storage_options = dict(storage_options or {})

    def _ledger_records(self) -> dict[str, Any]:
        current = HgnStore(self.url, self.storage_options).read_json("ledger/current.json")
        if not current:
            return {}
        fp = RunFingerprint(current["token"], current.get("settings", {}))
        return Ledger(self.url, fp, self.storage_options).scenes()

    def _store_ids(self) -> Iterator[str]:
        """Scene ids of every ``*.ome.zarr`` below the root (never descends into a store)."""
        fs = get_fs(self.url, self.storage_options)
        root = strip_protocol(self.url).rstrip("/")
        if is_remote(self.url):
            fs.invalidate_cache(root)
        stack = [root]
        while stack:
            path = stack.pop()
            try:
                entries = fs.ls(path, detail=True)
            except FileNotFoundError:
                continue
            for e in entries:
                name = e["name"].rstrip("/")
                base = name.rsplit("/", 1)[-1]
                if e.get("type") != "directory" or name == path or base.startswith("."):
                    continue
                if path == root and base == HGN_DIR:
                    continue
                if base.endswith(STORE_SUFFIX):
                    yield name[len(root) + 1 : -len(STORE_SUFFIX)]
                else:
                    stack.append(name)

    def scene_ids(self) -> list[str]:
        """Ids of every scene with an output store, sorted (a listing; no store is opened)."""
        return sorted(self._store_ids())

    def _check_root(self) -> None:
        """OutputNotFoundError unless the root exists and holds a run's output."""
        fs = get_fs(self.url, self.storage_options)
        root = strip_protocol(self.url).rstrip("/")
        if is_remote(self.url):
            fs.invalidate_cache(root)
        if not fs.exists(root):
            raise OutputNotFoundError(
                f"output {self.url} does not exist: check --output (the folder or "
                "s3://bucket/prefix given to `hgn-pipeline run --output`)"
            )

    def list_scenes(self) -> list[SceneSummary]:
        """Every scene with an output store or a ledger record, sorted by id."""
        self._check_root()
        records = self._ledger_records()
        ids = set(self._store_ids())
        if not ids and not records and not HgnStore(self.url, self.storage_options).list(""):
            raise OutputNotFoundError(
                f"output {self.url} holds no hgn-pipeline output (no *.ome.zarr store and no "
                f"{HGN_DIR}/ folder): check --output"
            )

        def one(sid: str) -> SceneSummary:
            rec = records.get(sid)
            base: dict[str, Any] = {"scene_id": sid, "store": None, "status": "missing"}
            if rec is not None:
                base.update(status=rec.state, input_fingerprint=rec.input_fingerprint,
                            run_id=rec.run_id, error=rec.info.get("error"))
            if sid not in ids:
                return SceneSummary(**base)
            view = self.scene(sid)
            hgn = view.hgn
            return SceneSummary(**{
                **base,
                "status": rec.state if rec is not None else hgn.get("status", "incomplete"),
                "store": view.url, "height": view.height, "width": view.width,
                "levels": view.levels, "arch": hgn.get("arch"),
                "checkpoint_sha256": hgn.get("checkpoint_sha256"),
                "input_url": hgn.get("input_url"),
                "input_fingerprint": base.get("input_fingerprint") or hgn.get("input_fingerprint"),
                "run_id": hgn.get("run_id") or base.get("run_id"),
                "finished": hgn.get("finished"), "georeferenced": view.georef is not None,
            })

        with ThreadPoolExecutor(READ_WORKERS) as pool:
            return list(pool.map(one, sorted(ids | set(records))))

    def scene(self, scene_id: str) -> SceneView:
        """Open one scene's store; :class:`SceneNotFoundError` lists close ids."""
        try:
            writer = SceneWriter.open(self.url, scene_id, storage_options=self.storage_options)
        except OutputNotFoundError:
            self._check_root()
            known = sorted(self._store_ids())
            import difflib

            close = difflib.get_close_matches(scene_id, known, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise SceneNotFoundError(
                f"scene {scene_id!r} has no output under {self.url} ({len(known)} scenes there"
                f"{hint}); list them with `hgn-pipeline query scenes --output {self.url}`"
            ) from None
        return SceneView(writer, self.storage_options)


class SceneView:
    """Read access to one scene's OME-Zarr store."""

    def __init__(self, writer: SceneWriter, storage_options: Mapping[str, Any]) -> None:
        self._w = writer
        self._so = dict(storage_options)
        self.scene_id = writer.scene_id
        self.url = writer.url
        self.output_url = writer.url[: -len(writer.scene_id + STORE_SUFFIX) - 1]
        self._integrity: Any = None
        self.height, self.width, self.levels = writer.height, writer.width, writer.levels
        self.chunk = writer.chunk
        attrs = writer.attrs
        self.hgn: dict[str, Any] = dict(attrs.get("hgn") or {})
        geo = self.hgn.get("georeference")
        self.georef = Georef(geo.get("crs"), tuple(geo["transform"])) if geo else None
        self.classes = self._read_classes()
        self.layers = [LABELS_LAYER] + ([CONFIDENCE_LAYER] if writer.confidence else [])

    def integrity(self) -> Any:
        """The cheap integrity check of this scene (:mod:`pipeline.ops.checks`), cached."""
        if self._integrity is None:
            from pipeline.ops.checks import inspect_scene

            self._integrity = inspect_scene(self.output_url, self.scene_id, self._so)
        return self._integrity


    def _read_classes(self) -> list[tuple[str, tuple[int, int, int, int]]]:
        import zarr

        kw = {"storage_options": self._so} if is_remote(self.url) else {}
        group = zarr.open_group(store=self.url, path=f"labels/{LABELS_LAYER}", mode="r", **kw)
        il = group.attrs["ome"]["image-label"]
        names = {p["label-value"]: p.get("name", str(p["label-value"])) for p in il["properties"]}
        colors = {c["label-value"]: tuple(c["rgba"]) for c in il["colors"]}
        n = max([*names, *colors]) + 1
        return [(names.get(i, str(i)), colors.get(i, (0, 0, 0, 0))) for i in range(n)]

    def metadata(self) -> dict[str, Any]:
        """JSON-ready: shape, levels, chunk, layers, classes, georeference, provenance."""
        return {
            "scene_id": self.scene_id, "store": self.url, "height": self.height,
            "width": self.width, "levels": self.levels,
            "level_shapes": [list(self.level_shape(k)) for k in range(self.levels)],
            "chunk": list(self.chunk), "layers": self.layers,
            "classes": [{"label": i, "name": n, "rgba": list(c)}
                        for i, (n, c) in enumerate(self.classes)],
            "georeference": self.georef.to_dict() if self.georef else None,
            "hgn": self.hgn,
        }

    def level_shape(self, level: int) -> tuple[int, int]:
        self._check_level(level)
        return self._w.level_shape(level)

    def _check_level(self, level: int) -> None:
        if not (isinstance(level, int) and 0 <= level < self.levels):
            raise QueryError(
                f"level={level!r} is out of range for scene {self.scene_id!r}: it has levels "
                f"0..{self.levels - 1} (0 = full resolution)"
            )

    # -- boxes
    def pixel_box(
        self,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        clip: bool = False,
    ) -> tuple[int, int, int, int]:
        """Level-0 box from a pixel box or a geographic bbox (whole scene if neither)."""
        if box is not None and bbox is not None:
            raise QueryError("give a pixel box or a geographic bbox, not both")
        if bbox is not None:
            box = self._geo_to_pixels(bbox)
            what = f"bbox {tuple(bbox)} (pixels {box})"
        else:
            what = f"box {tuple(box) if box is not None else None}"
        if box is None:
            return (0, self.height, 0, self.width)
        if len(box) != 4:
            raise WindowError(f"box {tuple(box)!r}: expected 4 numbers y0, y1, x0, x1")
        y0, y1, x0, x1 = (int(v) for v in box)
        if clip:
            y0, y1 = max(y0, 0), min(y1, self.height)
            x0, x1 = max(x0, 0), min(x1, self.width)
        if not (0 <= y0 < y1 <= self.height and 0 <= x0 < x1 <= self.width):
            raise WindowError(
                f"{what} is outside scene {self.scene_id!r} of {self.height} x {self.width} px "
                "(need 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width"
                f"{'' if clip else '; clip=True / --clip keeps the part inside'})"
            )
        return (y0, y1, x0, x1)

    def _geo_to_pixels(self, bbox: Sequence[float]) -> tuple[int, int, int, int]:
        if self.georef is None:
            raise QueryError(
                f"scene {self.scene_id!r} has no georeference (its input had none): use a "
                "pixel box (y0, y1, x0, x1) instead of a geographic bbox"
            )
        if len(bbox) != 4 or not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
            raise WindowError(f"bbox {tuple(bbox)!r}: expected xmin, ymin, xmax, ymax with "
                              "xmin < xmax and ymin < ymax (in the scene's CRS)")
        x0, dx, rx, y0, ry, dy = self.georef.transform
        inv = np.linalg.inv(np.array([[dx, rx], [ry, dy]], dtype=float))
        xs, ys = [], []
        for gx, gy in ((bbox[0], bbox[1]), (bbox[0], bbox[3]), (bbox[2], bbox[1]),
                       (bbox[2], bbox[3])):
            col, row = inv @ np.array([gx - x0, gy - y0])
            xs.append(col)
            ys.append(row)
        return (math.floor(min(ys) + 1e-9), math.ceil(max(ys) - 1e-9),
                math.floor(min(xs) + 1e-9), math.ceil(max(xs) - 1e-9))

    # -- reads
    def _array(self, layer: str, level: int) -> Any:
        import zarr

        self._check_level(level)
        if layer not in self.layers:
            raise QueryError(f"layer={layer!r}: scene {self.scene_id!r} has {self.layers}")
        path = f"labels/{LABELS_LAYER}/{level}" if layer == LABELS_LAYER else str(level)
        kw = {"storage_options": self._so} if is_remote(self.url) else {}
        return zarr.open_array(store=self.url, path=path, mode="r", **kw)

    @staticmethod
    def _level_box(box: tuple[int, int, int, int], level: int) -> tuple[int, int, int, int]:
        f = 2**level
        y0, y1, x0, x1 = box
        return (y0 // f, -(-y1 // f), x0 // f, -(-x1 // f))

    def read(
        self,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        level: int = 0,
        layer: str = LABELS_LAYER,
        clip: bool = False,
        allow_incomplete: bool = False,
    ) -> np.ndarray:
        """A window as a (rows, cols) uint8 numpy array.

        Refuses a window with missing or damaged chunks (:mod:`pipeline.coverage`) unless
        ``allow_incomplete``; then those chunks read as 0.
        """
        b = self.pixel_box(box, bbox, clip)
        arr = self._array(layer, level)
        lbox = self._level_box(b, level)
        tiles, skip, path = trusted_tiles(self, layer, level, lbox, arr.chunks,
                                          allow_incomplete)
        ly0, ly1, lx0, lx1 = lbox
        out = np.zeros((ly1 - ly0, lx1 - lx0), dtype=np.uint8)
        for ty0, ty1, tx0, tx1 in tiles:
            key = tile_key(path, arr.chunks, (ty0, ty1, tx0, tx1))
            if key in skip:
                continue
            try:
                out[ty0 - ly0:ty1 - ly0, tx0 - lx0:tx1 - lx0] = arr[ty0:ty1, tx0:tx1]
            except Exception as exc:  # bytes that do not decode: name the chunk
                if not allow_incomplete:
                    raise decode_failure(self, key, exc) from None
        return out

    def read_xarray(
        self,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        level: int = 0,
        layer: str = LABELS_LAYER,
        clip: bool = False,
        allow_incomplete: bool = False,
    ) -> Any:
        """A window as an ``xarray.DataArray`` (y, x).

        Coordinates are pixel centres: in CRS units for a north-up georeference, else in
        level-0 pixel units. attrs carry the CRS, the level's GDAL transform and CF
        ``flag_values``/``flag_meanings`` for the classes.
        """
        import xarray as xr

        b = self.pixel_box(box, bbox, clip)
        data = self.read(b, level=level, layer=layer, allow_incomplete=allow_incomplete)
        ly0, ly1, lx0, lx1 = self._level_box(b, level)
        f = 2**level
        rows = (np.arange(ly0, ly1) + 0.5) * f - 0.5  # level-0 pixel-centre coordinates
        cols = (np.arange(lx0, lx1) + 0.5) * f - 0.5
        attrs: dict[str, Any] = {"scene_id": self.scene_id, "level": level, "layer": layer,
                                 "box": list(b)}
        if layer == LABELS_LAYER:
            attrs["flag_values"] = list(range(len(self.classes)))
            attrs["flag_meanings"] = " ".join(n.replace(" ", "_") for n, _ in self.classes)
        if self.georef is not None:
            g = self.georef.scaled(f)
            attrs["crs"] = g.crs or ""
            attrs["transform"] = list(g.transform)
            x0, dx, rx, y0, ry, dy = self.georef.transform
            if rx == 0 and ry == 0:
                return xr.DataArray(data, dims=("y", "x"), name=layer, attrs=attrs, coords={
                    "y": y0 + (rows + 0.5) * dy, "x": x0 + (cols + 0.5) * dx})
        return xr.DataArray(data, dims=("y", "x"), name=layer, attrs=attrs,
                            coords={"y": rows, "x": cols})

    @staticmethod
    def _tiles(chunks: tuple[int, int], lbox: _Box) -> list[_Box]:
        """``lbox`` cut along the array's chunk grid (one read per chunk)."""
        ch, cw = chunks
        y0, y1, x0, x1 = lbox
        return [(ty, min((ty // ch + 1) * ch, y1), tx, min((tx // cw + 1) * cw, x1))
                for ty in [y0, *range((y0 // ch + 1) * ch, y1, ch)]
                for tx in [x0, *range((x0 // cw + 1) * cw, x1, cw)]]

    def class_stats(
        self,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        level: int = 0,
        clip: bool = False,
        allow_incomplete: bool = False,
    ) -> ClassStats:
        """Pixels and true areas (m2) per class; chunk by chunk, so any scene size fits.

        Areas are geodesic (:mod:`pipeline.stats`, :mod:`pipeline.areas`): exact per row on
        grids whose pixel area varies only with latitude, interpolated between exact samples
        on others. At a level k > 0 each coarse pixel counts for the level-0 pixels (and the
        area) it covers inside the box. A window with missing, damaged or not yet computed
        chunks is refused (:mod:`pipeline.coverage`); with ``allow_incomplete`` they are
        left out and ``coverage`` (also on every row) says which share was counted.
        """
        b = self.pixel_box(box, bbox, clip)
        arr = self._array(LABELS_LAYER, level)
        tiles, skip, path = trusted_tiles(self, LABELS_LAYER, level, self._level_box(b, level),
                                          arr.chunks, allow_incomplete)
        while True:
            good = [t for t in tiles if tile_key(path, arr.chunks, t) not in skip]
            try:
                st = class_stats(self.scene_id, DecodingArray(arr, self, path), b, level, good,
                                 self.classes, self.georef, READ_WORKERS)
                break
            except DamagedOutputError as exc:  # a chunk that does not decode
                if not allow_incomplete:
                    raise
                skip |= set(exc.chunks)
        return with_coverage(st, b, skip) if allow_incomplete else st

    # -- preview
    def preview(
        self,
        path: str | Path,
        box: Sequence[int] | None = None,
        bbox: Sequence[float] | None = None,
        max_size: int = 1024,
        source: bool = False,
        alpha: float = 0.5,
        clip: bool = False,
    ) -> Path:
        """PNG coloured by the class colours; ``source=True`` blends it over the input image.

        The labels come from the coarsest pyramid level that still gives ``max_size`` px;
        the source is read at full resolution tile by tile (mind huge boxes).
        """
        from PIL import Image

        if max_size < 1:
            raise QueryError(f"max_size={max_size!r} must be >= 1 pixel")
        if not 0.0 <= alpha <= 1.0:
            raise QueryError(f"alpha={alpha!r} must be in 0..1 (label opacity over the source)")
        b = self.pixel_box(box, bbox, clip)
        step = max(1, -(-max(b[1] - b[0], b[3] - b[2]) // max_size))
        level = min(self.levels - 1, int(math.log2(step)))
        r = max(1, step // 2**level)
        labels = self.read(b, level=level)[::r, ::r]
        lut = np.zeros((256, 4), np.uint8)
        for i, (_, rgba) in enumerate(self.classes):
            lut[i] = rgba
        rgba = lut[labels].astype(np.float32)
        if source:
            base = self._source_rgb(b, step, labels.shape)
            a = rgba[..., 3:4] / 255.0 * alpha
            rgb = base * (1 - a) + rgba[..., :3] * a
            img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
        else:
            img = Image.fromarray(rgba.astype(np.uint8), "RGBA")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, format="PNG")
        return out

    def _source_info(self) -> Any:
        """The input scene, from the provenance (older stores: by cataloguing its URL)."""
        from pipeline.scene import SceneInfo

        recorded = self.hgn.get("input_scene")
        if isinstance(recorded, Mapping):
            return SceneInfo.from_dict(recorded)
        from pipeline.catalog import catalog

        url = self.hgn.get("input_url")
        layout = (self.hgn.get("config") or {}).get("layout", "CHW")
        if not url:
            raise QueryError(f"scene {self.scene_id!r}: provenance has no input_url")
        cat = catalog(url, self._so, layout=layout)
        if len(cat.scenes) != 1:
            reasons = "; ".join(str(f) for f in cat.failures) or f"{len(cat.scenes)} scenes"
            raise QueryError(f"scene {self.scene_id!r}: source {url} cannot be read ({reasons})")
        return cat.scenes[0]

    def _source_rgb(self, b: tuple[int, int, int, int], step: int,
                    shape: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        from pipeline.io.readers import open_scene

        info = self._source_info()
        bands = (self.hgn.get("config") or {}).get("bands") or list(range(info.bands))
        if max(bands) >= info.bands:  # the run read this scene as stored (preflight.scene_bands)
            bands = list(range(info.bands))
        bands = list(bands[:3]) if len(bands) >= 3 else [bands[0]] * 3
        reader = open_scene(info, self._so)
        y0, y1, x0, x1 = b
        tile = max(step, 1024 // step * step)  # a multiple of step: strides stay aligned
        rows = []
        for ty in range(y0, y1, tile):
            cols = [np.asarray(reader.read(ty, min(ty + tile, y1), tx, min(tx + tile, x1),
                                           bands=bands))[:, ::step, ::step]
                    for tx in range(x0, x1, tile)]
            rows.append(np.concatenate(cols, axis=2))
        img = np.concatenate(rows, axis=1).astype(np.float32)
        lo, hi = np.percentile(img, 2), np.percentile(img, 98)  # display stretch
        img = np.clip((img - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
        pil = Image.fromarray(np.moveaxis(img, 0, -1), "RGB")
        if pil.size != (shape[1], shape[0]):
            pil = pil.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
        return np.asarray(pil, dtype=np.float32)

