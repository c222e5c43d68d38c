"""valid_mask: a pixel is nodata only when every band is nodata (declared value or NaN)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.nodata import nodata_fraction, valid_mask


def test_all_bands_must_be_nodata() -> None:
    w = np.ones((3, 2, 2), dtype=np.uint16)
    w[:, 0, 0] = 0  # all bands nodata
    w[0, 0, 1] = 0  # one band only: still data
    mask = valid_mask(w, 0)
    assert mask is not None
    assert mask.tolist() == [[False, True], [True, True]]
    assert nodata_fraction(mask) == pytest.approx(0.25)


def test_no_nodata_returns_none() -> None:
    w = np.arange(12, dtype=np.uint8).reshape(3, 2, 2) + 1
    assert valid_mask(w, 0) is None
    assert valid_mask(w, None) is None
    assert nodata_fraction(None) == 0.0


def test_nan_is_nodata_for_floats_even_with_another_declared_value() -> None:
    w = np.full((2, 2, 3), 5.0, dtype=np.float32)
    w[:, 1, 2] = np.nan
    w[:, 0, 0] = -99999.0
    mask = valid_mask(w, -99999.0)
    assert mask is not None
    assert not mask[1, 2] and not mask[0, 0] and mask.sum() == 4
    only_nan = valid_mask(w, float("nan"))
    assert only_nan is not None and only_nan.sum() == 5


def test_unrepresentable_nodata_on_integers_masks_nothing() -> None:
    w = np.zeros((1, 2, 2), dtype=np.uint16)
    assert valid_mask(w, -9999) is None
    assert valid_mask(w, 0.5) is None


def test_rejects_2d() -> None:
    with pytest.raises(ValueError, match="expected"):
        valid_mask(np.zeros((2, 2)), 0)
