"""Every raster GDAL reads, through rasterio: GeoTIFF/COG, PNG, JPEG, JPEG 2000, VRT.

Why rasterio and not tifffile: GDAL is how GIS tools read rasters. It decodes only the tiles or
strips a window touches (``DatasetReader.read(window=...)``), reads COGs on S3 by range
requests, and reports nodata, CRS (EPSG or any custom projection), transforms (tiepoints,
matrices, PixelIsPoint, ``.aux.xml`` and world-file sidecars) and block shapes the way QGIS
will show them. A file is recognised by its extension (:data:`RASTER_SUFFIXES`); GDAL then
identifies the format by content, so a GeoTIFF named ``*.jp2`` still reads.

Remote files (``s3://``) are read by GDAL's own ``/vsis3/`` client (HTTP range requests and
GDAL's block cache: what GDAL does best for COGs), configured from the pipeline's storage
options (:func:`gdal_s3_settings`: credentials, endpoint, region, anonymous access); GDAL never
lists the remote folder looking for sidecars (``GDAL_DISABLE_READDIR_ON_OPEN``).

Known limits: PNG and JPEG are not tiled, so every window decodes the image from its top
(fine for the sizes these formats hold, slow for random windows of huge JPEGs); a TIFF with
several full-resolution pages is refused (GDAL would read only the first page); per-band
nodata values must agree (else set ``nodata`` in the run config); alpha bands and GDAL mask
bands are read as pixel values, not as nodata.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pipeline.errors import SceneReadError
from pipeline.io.formats._common import Target, Unusable, check_dtype, fingerprint, stamp
from pipeline.io.geotiff import georef_of
from pipeline.io.readers import Handle, SceneReader
from pipeline.scene import Probe, SceneInfo, Unreadable
from pipeline.storage import is_remote, redact, strip_protocol

__all__ = [
    "RASTER_SUFFIXES",
    "RasterFormat",
    "RasterReader",
    "dataset_facts",
    "gdal_env",
    "gdal_path",
    "gdal_s3_settings",
    "open_dataset",
]

RASTER_SUFFIXES = (".tif", ".tiff", ".gtiff", ".png", ".jpg", ".jpeg", ".jp2", ".j2k", ".vrt")
GDAL_HTTP_RETRIES = 3  # GDAL's own retries of failed S3 requests (botocore's role for s3fs)
_VSI_PREFIX = re.compile(r"/vsis3/")  # GDAL paths in its messages: show bucket/key instead


def _quiet_rasterio() -> None:
    # A plain PNG/JPEG has no georeference; we report that ourselves (SceneInfo.georef None).
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


class _StaticCredentials:
    """The slice of a boto3 session rasterio's ``AWSSession`` uses, from fixed credentials."""

    def __init__(self, key: str, secret: str, token: str | None, region: str | None) -> None:
        self.region_name = region
        self._creds = (key, secret, token)

    def get_credentials(self) -> Any:
        from botocore.credentials import Credentials

        return Credentials(*self._creds)


def gdal_s3_settings(storage_options: Mapping[str, Any] | None) -> tuple[Any, dict[str, str]]:
    """(rasterio session, GDAL config options) for ``/vsis3/`` equivalent to s3fs options.

    Credentials reach GDAL through rasterio's ``AWSSession`` (as rasterio requires), the
    endpoint, region and retry settings as config options; none of them ever enters a path or
    a message. Without explicit credentials GDAL uses its own chain (AWS_* variables, ~/.aws,
    instance roles), as botocore does for s3fs.
    """
    from rasterio.session import AWSSession

    so = dict(storage_options or {})
    client = so.get("client_kwargs") or {}
    opts = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no listing of the prefix for sidecars
        "GDAL_HTTP_MAX_RETRY": str(GDAL_HTTP_RETRIES),
        "GDAL_HTTP_RETRY_DELAY": "0.5",
    }
    endpoint, region = client.get("endpoint_url"), client.get("region_name")
    host = None
    if endpoint:
        parts = urlsplit(endpoint)
        host = parts.netloc + parts.path.rstrip("/")
        opts["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        opts["AWS_VIRTUAL_HOSTING"] = "FALSE"  # path-style, as custom S3 servers expect
    session = None
    if so.get("anon"):
        session = AWSSession(aws_unsigned=True, region_name=region, endpoint_url=host)
    elif so.get("key") and so.get("secret"):
        creds = _StaticCredentials(str(so["key"]), str(so["secret"]), so.get("token"), region)
        session = AWSSession(session=creds, endpoint_url=host)
    else:
        if host:
            opts["AWS_S3_ENDPOINT"] = host
        if region:
            opts["AWS_REGION"] = str(region)
    return session, opts


def gdal_path(url: str) -> str:
    """GDAL's path for a local path or an ``s3://`` URL (``/vsis3/bucket/key``)."""
    return f"/vsis3/{strip_protocol(url)}" if is_remote(url) else strip_protocol(url)


def gdal_env(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    """The ``rasterio.Env`` to open and read ``url`` in (S3 settings for remote URLs)."""
    import rasterio

    if not is_remote(url):
        return contextlib.nullcontext()
    session, opts = gdal_s3_settings(storage_options)
    return rasterio.Env(session=session, **opts)


def open_dataset(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """A rasterio dataset for a local path or an ``s3://`` URL (caller closes it)."""
    import rasterio

    _quiet_rasterio()
    with gdal_env(url, storage_options):
        return rasterio.open(gdal_path(url), sharing=False)


def _truncation(ds: Any, size: int) -> str | None:
    """Why a GeoTIFF's pixel data runs past the end of the file, if it does."""
    if ds.driver not in ("GTiff", "COG") or size <= 0:
        return None
    bh, bw = ds.block_shapes[0]
    last = ((ds.height - 1) // bh, (ds.width - 1) // bw)
    per_band = ds.interleaving is not None and ds.interleaving.value.upper() == "BAND"
    end = 0
    for bidx in range(1, (ds.count if per_band else 1) + 1):
        for row, col in ((0, 0), last):
            offset = ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=bidx)
            length = ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=bidx)
            if offset and length:
                end = max(end, int(offset) + int(length))
    if end > size:
        return (f"file is truncated: image data extends to byte {end} but the file has {size} "
                "bytes; re-copy the file")
    return None


def _nodata(ds: Any, where: str, override: float | None) -> float | None:
    values: list[float] = []
    for v in ds.nodatavals:
        if v is None:
            continue
        v = float(v)
        if not any(v == w or (math.isnan(v) and math.isnan(w)) for w in values):
            values.append(v)
    if len(values) > 1 and override is None:
        raise Unusable(
            f"{where}: its bands declare different nodata values {values}; a pixel is nodata "
            "when all its bands are, so set one value with `nodata:` in the run config"
        )
    return values[0] if values else None


def dataset_facts(ds: Any, where: str, size: int, override: float | None = None
                  ) -> dict[str, Any]:
    """Shape, dtype, nodata, georeference, blocks and layout of an open dataset (checked)."""
    if ds.count == 0:
        subs = len(ds.subdatasets)
        raise Unusable(f"{where} has no raster bands ({subs} sub-datasets); open one of "
                       "them with GDAL and save it as a GeoTIFF")
    if ds.driver == "GTiff" and ds.subdatasets:
        raise Unusable(
            f"{where} holds {len(ds.subdatasets)} full-resolution images (TIFF pages) and GDAL "
            "reads only the first: store the bands in one image (interleaved or "
            "PLANARCONFIG=SEPARATE) or one file per band (`band_files` in the run config)"
        )
    dtypes = sorted(set(ds.dtypes))
    if len(dtypes) > 1:
        raise Unusable(f"{where}: its bands have different dtypes {dtypes}; convert them to "
                       "one (e.g. gdal_translate -ot Float32)")
    dtype = check_dtype(dtypes[0], where)
    reason = _truncation(ds, size)
    if reason:
        raise Unusable(reason)
    bh, bw = (int(v) for v in ds.block_shapes[0])
    interleave = ds.interleaving.value.upper() if ds.interleaving is not None else "BAND"
    pixel = interleave == "PIXEL" and ds.count > 1
    return {
        "shape": (int(ds.count), int(ds.height), int(ds.width)),
        "dtype": dtype,
        "nodata": _nodata(ds, where, override),
        "georef": georef_of(ds),
        "chunks": (int(ds.count) if pixel else 1, bh, bw),
        "layout": "HWC" if pixel else "CHW",
        "driver": ds.driver,
    }


def _size(target: Target) -> int:
    size = target.entry.get("size")
    if size is None:
        size = target.fs.info(target.path).get("size")
    return int(size or 0)


def probe_file(target: Target, where: str) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """Facts of one raster file (raises Unusable); shared with multi-file scenes."""
    from rasterio.errors import RasterioError

    size = _size(target)
    if size < 8:
        raise Unusable(f"{where} is truncated or empty: {size} bytes")
    try:
        ds = open_dataset(target.url, target.storage_options)
    except RasterioError as exc:
        detail = _VSI_PREFIX.sub("", redact(str(exc), target.storage_options))
        raise Unusable(f"{where} is not a raster GDAL can read ({detail})") from None
    with ds:
        facts = dataset_facts(ds, where, size, target.nodata)
    entry = target.entry or target.fs.info(target.path)
    return facts, entry


class RasterReader(SceneReader):
    """Windows of a GDAL raster: only the blocks a window touches are read and decoded."""

    THREAD_SAFE = False  # a GDAL dataset handle must not be read by two threads at once

    def _open(self) -> Handle:
        from rasterio.windows import Window

        info = self.info
        ds = open_dataset(info.url, self._options)
        now = (ds.count, ds.height, ds.width)
        if now != tuple(info.shape):
            ds.close()
            raise SceneReadError(info.scene_id, info.url,
                                 f"the file now has (bands, height, width) {now}, catalogued as "
                                 f"{tuple(info.shape)}: re-run the catalog")

        def read(y0: int, y1: int, x0: int, x1: int, bands: list[int]) -> np.ndarray:
            window = Window(x0, y0, x1 - x0, y1 - y0)
            with gdal_env(info.url, self._options):
                return ds.read([b + 1 for b in bands], window=window)

        return Handle(read, [ds])


class RasterFormat:
    """GDAL rasters by file extension (see module docstring)."""

    name = "raster"
    kinds = ("raster", "tiff")  # "tiff": scenes recorded before the rasterio reader
    suffixes = RASTER_SUFFIXES

    def probe(self, target: Target) -> Probe:
        try:
            facts, entry = probe_file(target, "the file")
        except Unusable as exc:
            return Unreadable(str(exc))
        shape, dtype = facts["shape"], facts["dtype"]
        stamps = [(target.name, stamp(entry))]
        return SceneInfo(
            scene_id=target.scene_id, url=target.url, kind="raster", array_path=None,
            shape=shape, layout=facts["layout"], dtype=dtype,
            fingerprint=fingerprint("raster", None, shape, dtype, "cyx", stamps),
            georef=facts["georef"], axes="cyx", chunks=facts["chunks"], nodata=facts["nodata"],
        )

    def open(self, info: SceneInfo, storage_options: Mapping[str, Any] | None = None
             ) -> RasterReader:
        return RasterReader(info, storage_options)
