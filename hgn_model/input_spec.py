"""What a checkpoint expects as input: bands and per-dtype normalisation in raw units (contract C1).

A checkpoint stores one :class:`Normalization` per dtype its training pixels came in (mean, std
and a percentile range per band, all in the units stored in the rasters). ``Segmenter`` picks
the entry for the input's dtype and computes ``(x * top / value_max - mean) / std`` (the scale
only when ``value_max`` is given), so no dtype maximum is ever assumed. ``range_problem`` tells
a scene whose values do not look like the training pixels (0..1 floats into a 0..255 model,
12-bit DN into a 16-bit model) before any pixel is segmented.

Format 1 stored one mean/std in [0, 1] units plus ``uint16_max``; such specs are converted on
load into uint8 (x 255), uint16 (x uint16_max) and float32 (x 1) entries, uint8 first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["RANGE_TOLERANCE", "InputSpec", "Normalization", "suggest_value_max"]

# A scene whose brightest band top differs from the checkpoint's by more than this factor either
# way is flagged. 0..1 floats vs a 0..255 model is 255x, 12-bit DN vs a 16-bit model 16x; a dark
# but genuine scene (water, shadow) stays within ~5x of the training top.
RANGE_TOLERANCE = 10.0


class Normalization(BaseModel):
    """Per-band statistics of training pixels of one dtype, in raw (stored) units."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    dtype: str = Field(description="dtype of the training pixels these stats come from")
    mean: list[float] = Field(description="per band, raw units")
    std: list[float] = Field(description="per band, raw units, > 0")
    value_range: list[tuple[float, float]] = Field(
        description="per band (low, high) percentiles of training pixels, raw units, "
                    "nodata excluded")

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        try:
            kind = np.dtype(v).kind
        except TypeError:
            raise ValueError(f"dtype {v!r} is not a numpy dtype name") from None
        if kind not in "uif":
            raise ValueError(f"dtype {v!r}: expected a real integer or float dtype")
        return np.dtype(v).name

    @model_validator(mode="after")
    def _consistent(self) -> Normalization:
        n = len(self.mean)
        if n == 0 or len(self.std) != n or len(self.value_range) != n:
            raise ValueError(
                f"normalization for {self.dtype}: mean, std and value_range need one entry per "
                f"band (got {len(self.mean)}, {len(self.std)}, {len(self.value_range)})"
            )
        bad = [s for s in self.std if not (math.isfinite(s) and s > 0)]
        if bad:
            raise ValueError(f"normalization for {self.dtype}: std must be > 0, got {bad}")
        for lo, hi in self.value_range:
            if not (math.isfinite(lo) and math.isfinite(hi) and hi >= lo):
                raise ValueError(
                    f"normalization for {self.dtype}: value_range ({lo}, {hi}) is not a range")
        return self

    @property
    def top(self) -> float:
        """Max over bands of the value_range highs: what ``value_max`` is mapped onto."""
        return max(hi for _, hi in self.value_range)

    @property
    def bottom(self) -> float:
        return min(lo for lo, _ in self.value_range)


class InputSpec(BaseModel):
    """What the model expects: band count, band names and per-dtype normalisation."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    bands: int = Field(3, ge=1)
    band_names: list[str] = Field(default_factory=list)
    normalization: list[Normalization] = Field(min_length=1,
                                               description="[0] is the default entry")

    @model_validator(mode="before")
    @classmethod
    def _from_format_1(cls, data: Any) -> Any:
        """Format 1 (mean/std in [0, 1] units + uint16_max) -> uint8/uint16/float32 entries."""
        if not isinstance(data, dict) or "normalization" in data or "mean" not in data:
            return data
        data = dict(data)
        mean, std = data.pop("mean"), data.pop("std", None)
        if std is None:
            raise ValueError("format-1 input spec has mean but no std")
        u16 = float(data.pop("uint16_max", 65535.0))
        data["normalization"] = [
            _scaled_entry(dt, mean, std, top)
            for dt, top in (("uint8", 255.0), ("uint16", u16), ("float32", 1.0))
        ]
        return data

    @model_validator(mode="after")
    def _bands_match(self) -> InputSpec:
        for norm in self.normalization:
            if len(norm.mean) != self.bands:
                raise ValueError(
                    f"normalization for {norm.dtype} has {len(norm.mean)} bands, the input has "
                    f"{self.bands}")
        if self.band_names and len(self.band_names) != self.bands:
            raise ValueError(f"band_names {self.band_names} do not match bands={self.bands}")
        return self

    def normalization_for(self, dtype: str | np.dtype) -> Normalization:
        """The entry for ``dtype``: exact match, else the nearest of the same family, else [0].

        Floats fall back to a float entry (float64/float16 copies of float32 training data stay
        in float units). Integers fall back to the integer entry nearest in width, same
        signedness first: int16 products (Landsat, Sentinel-2 L2A) carry the units of their
        uint16 counterparts, not of 8-bit imagery.
        """
        want = np.dtype(dtype)
        for norm in self.normalization:
            if norm.dtype == want.name:
                return norm
        family = "f" if want.kind == "f" else "iu"
        same = [n for n in self.normalization if np.dtype(n.dtype).kind in family]
        if not same:
            return self.normalization[0]
        return min(same, key=lambda n: (abs(np.dtype(n.dtype).itemsize - want.itemsize),
                                        np.dtype(n.dtype).kind != want.kind))

    def range_problem(
        self, dtype: str | np.dtype, observed: Sequence[tuple[float, float]],
        value_max: float | None = None,
    ) -> str | None:
        """None when a scene's per-band (low, high) looks like the training pixels, else why not.

        ``observed`` is in raw units with nodata excluded. The comparison is made after the
        ``value_max`` scaling ``Segmenter`` would apply, on the brightest band's high (a factor
        of RANGE_TOLERANCE either way) and on lows far below the training range (by more than
        the training span). A constant sample carries no scale and passes.
        """
        if not observed:
            return None
        norm = self.normalization_for(dtype)
        lo = min(float(a) for a, _ in observed)
        hi = max(float(b) for _, b in observed)
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            return None
        scale = norm.top / value_max if value_max else 1.0
        s_lo, s_hi = lo * scale, hi * scale
        top, bottom = norm.top, norm.bottom
        span = max(top - bottom, 1e-12)
        ratio = s_hi / top if top > 0 else math.inf
        too_dim = s_hi <= 0 or ratio < 1.0 / RANGE_TOLERANCE
        too_bright = ratio > RANGE_TOLERANCE
        too_low = s_lo < bottom - span
        if not (too_dim or too_bright or too_low):
            return None
        name = np.dtype(dtype).name
        seen = f"{lo:.6g}..{hi:.6g}"
        if value_max:
            seen += f" (scaled by value_max {value_max:g} to {s_lo:.6g}..{s_hi:.6g})"
        fix = suggest_value_max(hi, name)
        how = (f"set `value_max: {fix:g}` in the run config (the scene value that corresponds to "
               f"{top:.6g}) or use a checkpoint trained on such data"
               if fix is not None and not too_low
               else "rescale the scene or use a checkpoint trained on such data")
        return (f"{name} scene values {seen} do not match the range the checkpoint expects "
                f"({bottom:.6g}..{top:.6g}, {norm.dtype} training pixels): {how}")


def suggest_value_max(high: float, dtype: str = "float32") -> float | None:
    """The full-scale value a sample with this high most likely came from (1, 255, 2^k - 1)."""
    if not (math.isfinite(high) and high > 0):
        return None
    if high <= 1.0 and np.dtype(dtype).kind == "f":
        return 1.0
    bits = max(8, math.ceil(math.log2(high + 1)))
    return float(2**bits - 1)


def _scaled_entry(dtype: str, mean: Sequence[float], std: Sequence[float], top: float
                  ) -> Normalization:
    return Normalization(
        dtype=dtype, mean=[float(m) * top for m in mean], std=[float(s) * top for s in std],
        value_range=[(0.0, top)] * len(mean),
    )
