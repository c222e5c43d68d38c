"""Multi-file scenes: one single-band raster per band on one grid (Sentinel-2, Landsat).

Declared in the run config by a file-name pattern::

    band_files:
      pattern: "{scene}_B{band}.tif"    # archive-relative path; {scene} may contain "/"
      bands: ["04", "03", "02"]         # the band order the model gets

Every file whose archive-relative path matches the pattern belongs to scene ``{scene}``;
the scene's bands are those files in ``bands`` order. A pattern is what Sentinel-2
(``T33UUP_20230101T100000_B04.jp2``) and Landsat (``LC08_..._B4.TIF``) deliveries already
look like, so users write one line instead of a STAC catalogue per scene.

The probe opens each file with GDAL (:mod:`.raster`) and refuses scenes whose files do not
share one grid (size, transform, CRS), one dtype and one nodata value, naming the files and
their grids: bands of different resolutions (Sentinel-2's 10 m and 20 m bands) must be
resampled first. Reads open one GDAL dataset per file (per thread) and stack the windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.errors import SceneReadError
from pipeline.io.formats._common import BandFile, Target, Unusable, fingerprint, stamp
from pipeline.io.formats.raster import gdal_env, open_dataset, probe_file
from pipeline.io.readers import Handle, SceneReader
from pipeline.scene import Georef, Probe, SceneInfo, Unreadable

__all__ = ["BandFilesFormat", "BandFilesReader", "describe_grid"]

GRID_TOL_PX = 1e-6  # transforms may differ by float noise of their writers: 1e-6 pixel


def _crs_unit(crs: str | None) -> str:
    if crs is None:
        return "units"
    try:
        from pipeline.io.geotiff import to_pyproj

        unit = to_pyproj(crs).axis_info[0].unit_name
    except Exception:  # unknown CRS text: the grid is still described, in CRS units
        return "CRS units"
    return {"metre": "m", "degree": "deg", "US survey foot": "ftUS", "foot": "ft"}.get(unit, unit)


def describe_grid(shape: tuple[int, int, int], georef: Georef | None) -> str:
    """``"1947 x 1933 px at 10 m (EPSG:32618, origin 435730, 4179460)"``."""
    _, h, w = shape
    if georef is None:
        return f"{h} x {w} px, no georeference"
    x0, dx, _, y0, _, dy = georef.transform
    crs = georef.crs if georef.crs and len(georef.crs) < 40 else ("custom CRS" if georef.crs
                                                                  else "no CRS")
    size = f"{abs(dx):g}" if abs(dx) == abs(dy) else f"{abs(dx):g} x {abs(dy):g}"
    return f"{h} x {w} px at {size} {_crs_unit(georef.crs)} ({crs}, origin {x0:.10g}, {y0:.10g})"


def _same_grid(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["shape"][1:] != b["shape"][1:]:
        return False
    ga, gb = a["georef"], b["georef"]
    if ga is None or gb is None:
        return ga is gb
    if (ga.crs or "") != (gb.crs or ""):
        return False
    scale = max(abs(ga.transform[1]), abs(ga.transform[5]), 1e-12)
    return all(abs(p - q) <= GRID_TOL_PX * scale
               for p, q in zip(ga.transform, gb.transform, strict=True))


def _check(files: tuple[BandFile, ...], facts: list[dict[str, Any]]) -> None:
    names = [f.path.rsplit("/", 1)[-1] for f in files]
    multi = [(n, f["shape"][0]) for n, f in zip(names, facts, strict=True) if f["shape"][0] != 1]
    if multi:
        raise Unusable("band files must hold one band each: " + ", ".join(
            f"{n} has {c}" for n, c in multi))
    ref = facts[0]
    off = [i for i, f in enumerate(facts) if not _same_grid(ref, f)]
    if off:
        grids = "; ".join(f"{names[i]}: {describe_grid(facts[i]['shape'], facts[i]['georef'])}"
                          for i in [0, *off])
        raise Unusable(
            f"band files are on different grids ({grids}): list bands of one resolution in "
            "band_files.bands, or resample them onto one grid first (e.g. gdalwarp -tr 10 10)"
        )
    dtypes = {f["dtype"] for f in facts}
    if len(dtypes) > 1:
        raise Unusable("band files have different dtypes: " + ", ".join(
            f"{n} {f['dtype']}" for n, f in zip(names, facts, strict=True)))


def _common_nodata(files: tuple[BandFile, ...], facts: list[dict[str, Any]],
                   override: float | None) -> float | None:
    if override is not None:
        return override
    values = [f["nodata"] for f in facts]
    first = values[0]

    def same(v: float | None) -> bool:
        return v == first or (v is not None and first is not None and math.isnan(v)
                              and math.isnan(first))

    if not all(same(v) for v in values):
        listed = ", ".join(f"{b.path.rsplit('/', 1)[-1]} {v}"
                           for b, v in zip(files, values, strict=True))
        raise Unusable(f"band files declare different nodata values ({listed}); set one "
                       "with `nodata:` in the run config")
    return first


class BandFilesReader(SceneReader):
    """Windows of a multi-file scene: one GDAL read per requested band file, stacked."""

    THREAD_SAFE = False  # GDAL dataset handles: one set per thread

    def _open(self) -> Handle:
        from rasterio.windows import Window

        info = self.info
        datasets: list[Any] = []
        try:
            for url in info.files:
                ds = open_dataset(url, self._options)
                datasets.append(ds)
                if (ds.height, ds.width) != (info.height, info.width):
                    raise SceneReadError(
                        info.scene_id, url,
                        f"band file is now {ds.height} x {ds.width} px, catalogued as "
                        f"{info.height} x {info.width}: re-run the catalog")
        except Exception:
            for ds in datasets:
                ds.close()
            raise

        def read(y0: int, y1: int, x0: int, x1: int, bands: list[int]) -> np.ndarray:
            window = Window(x0, y0, x1 - x0, y1 - y0)
            with gdal_env(info.url, self._options):
                return np.stack([datasets[b].read(1, window=window) for b in bands])

        return Handle(read, datasets)


class BandFilesFormat:
    """Scenes made of one file per band (see module docstring)."""

    name = "bandfiles"
    kinds = ("bandfiles",)
    suffixes: tuple[str, ...] = ()  # never picked by file name: the catalog groups the files

    def probe(self, target: Target) -> Probe:
        files = target.files
        if not files:
            return Unreadable("a multi-file scene needs at least one band file")
        facts, stamps = [], []
        try:
            for f in files:
                sub = Target(f.url, f.path, target.scene_id, target.fs, target.storage_options,
                             entry=f.entry, nodata=target.nodata)
                fact, entry = probe_file(sub, f"band file {f.path.rsplit('/', 1)[-1]}")
                facts.append(fact)
                stamps.append((f"{f.band}:{sub.name}", stamp(entry)))
            _check(files, facts)
            nodata = _common_nodata(files, facts, target.nodata)
        except Unusable as exc:
            return Unreadable(str(exc))
        ref = facts[0]
        shape = (len(files), ref["shape"][1], ref["shape"][2])
        axes = "cyx"
        return SceneInfo(
            scene_id=target.scene_id, url=files[0].url, kind="bandfiles", array_path=None,
            shape=shape, layout="CHW", dtype=ref["dtype"],
            fingerprint=fingerprint("bandfiles", None, shape, ref["dtype"], axes, stamps),
            georef=ref["georef"], axes=axes, chunks=(1, *ref["chunks"][1:]), nodata=nodata,
            files=tuple(f.url for f in files),
        )

    def open(self, info: SceneInfo, storage_options: Mapping[str, Any] | None = None
             ) -> BandFilesReader:
        return BandFilesReader(info, storage_options)
