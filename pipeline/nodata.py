"""Nodata masks: which pixels of a window carry data. Pure numpy.

A pixel is nodata when *all* its bands are nodata: equal to the scene's declared nodata value
(GeoTIFF tag, zarr fill value declared as nodata, or the run config's ``nodata``), or NaN.
NaN always counts as nodata for float scenes (GDAL's convention), whatever value is declared.
A pixel with data in some bands and nodata in others is a data pixel.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.errors import WindowError

__all__ = ["nodata_fraction", "valid_mask"]


def valid_mask(window: np.ndarray, nodata: float | None) -> np.ndarray | None:
    """``(h, w)`` bool mask of data pixels of a ``(C, h, w)`` window; None when all are data.

    ``nodata`` may be None (only NaN marks nodata, float windows only) or NaN.
    """
    if window.ndim != 3:
        raise WindowError(f"window has shape {window.shape}; expected (C, h, w)")
    floating = window.dtype.kind == "f"
    declared = nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata))
    if declared and not floating and not _representable(nodata, window.dtype):
        declared = False  # e.g. nodata=-9999 on uint16: no pixel can hold it
    if not declared and not floating:
        return None
    missing = np.ones(window.shape[1:], dtype=bool)
    for band in window:  # band by band: no (C, h, w) temporary
        band_missing = np.isnan(band) if floating else np.zeros(band.shape, dtype=bool)
        if declared:
            band_missing |= band == nodata
        missing &= band_missing
        if not missing.any():
            return None
    return ~missing


def nodata_fraction(mask: np.ndarray | None) -> float:
    """Share of nodata pixels for a mask from :func:`valid_mask` (0.0 for None)."""
    if mask is None or mask.size == 0:
        return 0.0
    return 1.0 - float(np.count_nonzero(mask)) / mask.size


def _representable(value: float, dtype: np.dtype) -> bool:
    info = np.iinfo(dtype)
    return float(value).is_integer() and info.min <= value <= info.max
