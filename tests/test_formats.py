"""The format contract: one base test class, one subclass per format (zarr-python v3 style).

Every subclass writes one small scene in its format (:meth:`FormatContract.write`) and says
what must come back; the base runs the same checks on it, from a local folder and from the
real S3 server (SeaweedFS): probe metadata, windows at random boxes and at the edges equal to
one whole-scene read, dtype and byte order, band selection, the nodata mask, georeference,
and pickling.
"""

from __future__ import annotations

import math
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import zarr
from conftest import write_geotiff, write_ome_zarr

from pipeline.catalog import catalog
from pipeline.io.readers import open_scene
from pipeline.nodata import valid_mask
from pipeline.scene import SUPPORTED_DTYPES, Georef, SceneInfo

UTM = ("EPSG:32618", (435730.0, 10.0, 0.0, 4179460.0, 0.0, -10.0))
WGS = ("EPSG:4326", (-122.52, 0.0001, 0.0, 37.81, 0.0, -0.0001))


@dataclass
class Expected:
    """What the scene written by a subclass must read back as."""

    data: np.ndarray | None  # (C, H, W) as written; None for lossy formats
    nodata: float | None = None
    georef: Georef | None = None
    catalog_kw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    info: SceneInfo
    expected: Expected
    storage_options: dict[str, Any]
    whole: np.ndarray  # one read of the whole scene


def _with_nodata(data: np.ndarray, value: float, rng: np.random.Generator) -> np.ndarray:
    """A border of nodata pixels (all bands) plus a few pixels with nodata in one band only."""
    out = data.copy()
    out[:, :3, :] = value
    out[:, :, -2:] = value
    ys, xs = rng.integers(3, out.shape[1], 5), rng.integers(0, out.shape[2] - 2, 5)
    out[0, ys, xs] = value  # nodata in band 0 only: still a data pixel
    return out


def _edge_boxes(h: int, w: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    boxes = [(0, h, 0, w), (0, 1, 0, 1), (h - 1, h, w - 1, w), (0, h, w - 1, w),
             (h - 1, h, 0, w), (h // 2, h, w // 3, w)]
    for _ in range(8):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        boxes.append((y0, int(rng.integers(y0 + 1, h + 1)), x0, int(rng.integers(x0 + 1, w + 1))))
    return boxes


class FormatContract:
    """Base: subclasses set ``kind`` and implement ``write(root, rng) -> Expected``."""

    kind: ClassVar[str]

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        raise NotImplementedError

    @pytest.fixture(scope="class", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
    @classmethod
    def case(cls, request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Case:
        name = cls.__name__.lower()
        root = tmp_path_factory.mktemp(name)
        expected = cls().write(root, np.random.default_rng(zlib.crc32(name.encode())))
        url, so = str(root), {}
        if request.param == "s3":
            server = request.getfixturevalue("s3_server")
            bucket = server.make_bucket(f"fmt-{name[4:]}"[:60])
            server.filesystem().put(str(root) + "/", f"{bucket[5:]}/scene/", recursive=True)
            url, so = f"{bucket}/scene", server.storage_options
        cat = catalog(url, so, **expected.catalog_kw)
        assert not cat.failures, cat.failures
        assert len(cat.scenes) == 1, cat.scenes
        info = cat.scenes[0]
        whole = open_scene(info, so).read(0, info.height, 0, info.width)
        return Case(info, expected, so, whole)

    def test_probe_metadata(self, case: Case) -> None:
        info, exp = case.info, case.expected
        assert info.kind == self.kind
        if exp.data is not None:
            assert info.shape == exp.data.shape
            assert info.dtype == exp.data.dtype.newbyteorder("=").name
        assert len(info.fingerprint) == 32
        if exp.nodata is None:
            assert info.nodata is None
        else:
            assert info.nodata == exp.nodata or (math.isnan(info.nodata) and math.isnan(exp.nodata))

    def test_whole_read_equals_what_was_written(self, case: Case) -> None:
        if case.expected.data is None:  # lossy: the contract is windows == the whole read
            assert case.whole.shape == case.info.shape
            return
        np.testing.assert_array_equal(case.whole, case.expected.data)

    def test_windows_equal_the_whole_read(self, case: Case) -> None:
        reader = open_scene(case.info, case.storage_options)
        rng = np.random.default_rng(3)
        for y0, y1, x0, x1 in _edge_boxes(case.info.height, case.info.width, rng):
            got = reader.read(y0, y1, x0, x1)
            np.testing.assert_array_equal(got, case.whole[:, y0:y1, x0:x1],
                                          err_msg=f"{self.kind} box {(y0, y1, x0, x1)}")

    def test_dtype_and_byte_order(self, case: Case) -> None:
        got = open_scene(case.info, case.storage_options).read(1, 9, 2, 12)
        assert got.dtype == np.dtype(case.info.dtype) and got.dtype.isnative
        assert got.flags.c_contiguous and got.flags.writeable

    def test_band_selection(self, case: Case) -> None:
        c = case.info.bands
        reader = open_scene(case.info, case.storage_options)
        for bands in ([c - 1, 0], [0, 0], list(range(c))[::-1], [c // 2]):
            got = reader.read(2, 20, 3, 17, bands=bands)
            np.testing.assert_array_equal(got, case.whole[bands, 2:20, 3:17])

    def test_nodata_mask(self, case: Case) -> None:
        mask = valid_mask(case.whole, case.info.nodata)
        nodata = case.expected.nodata
        if nodata is None and case.whole.dtype.kind != "f":
            assert mask is None
            return
        data = case.whole.astype(np.float64)
        missing = np.isnan(data).all(axis=0)
        if nodata is not None and not math.isnan(nodata):
            missing |= (data == nodata).all(axis=0)
        want = None if not missing.any() else ~missing
        if want is None:
            assert mask is None
        else:
            np.testing.assert_array_equal(mask, want)
            assert not mask[:3].any() and mask[3:, :-2].mean() > 0.9  # the border is nodata

    def test_georeference(self, case: Case) -> None:
        want, got = case.expected.georef, case.info.georef
        if want is None:
            assert got is None
            return
        assert got is not None and got.crs == want.crs
        np.testing.assert_allclose(got.transform, want.transform, rtol=0, atol=1e-9)

    def test_pickling(self, case: Case) -> None:
        reader = open_scene(case.info, case.storage_options)
        first = reader.read(0, 10, 0, 10)  # opens (and caches) a handle in this process
        blob = pickle.dumps(reader)
        assert len(blob) < 8_000
        np.testing.assert_array_equal(pickle.loads(blob).read(0, 10, 0, 10), first)


# ------------------------------------------------------------------------ zarr family


class TestZarrV3Array(FormatContract):
    kind = "zarr"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = _with_nodata(rng.integers(1, 256, (3, 67, 93), dtype=np.uint8), 0, rng)
        crs, transform = UTM
        x0, dx, rx, y0, ry, dy = transform
        arr = zarr.create_array(str(root / "a.zarr"), shape=data.shape, chunks=(3, 32, 32),
                                dtype=data.dtype, attributes={
                                    "nodata": 0, "proj:code": crs,
                                    "spatial:transform": [dx, rx, x0, ry, dy, y0]})
        arr[...] = data
        return Expected(data, 0.0, Georef(*UTM))


class TestZarrV2BigEndianInt16(FormatContract):
    kind = "zarr"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = _with_nodata(rng.integers(-3000, 3000, (4, 50, 61)).astype(">i2"), -9999, rng)
        arr = zarr.create_array(str(root / "b.zarr"), shape=data.shape, chunks=(2, 16, 32),
                                dtype=">i2", zarr_format=2, attributes={"_FillValue": -9999})
        arr[...] = data
        return Expected(data, -9999.0)


class TestZarrGroupFloat32(FormatContract):
    kind = "zarr"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = _with_nodata(rng.random((3, 40, 45), dtype=np.float32), np.nan, rng)
        group = zarr.open_group(str(root / "g.zarr"), mode="w")
        group.create_array("image", data=data, chunks=(3, 16, 16))
        group.create_array("labels", data=np.zeros((40, 45), np.uint8), chunks=(16, 16))
        return Expected(data, None)  # NaN is nodata in float scenes without a declaration


class TestOmeZarr05(FormatContract):
    kind = "ome-zarr"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = rng.integers(0, 65536, (2, 97, 131), dtype=np.uint16)
        write_ome_zarr(root / "img.ome.zarr", data, "cyx", "0.5")
        return Expected(data)


class TestOmeZarr04Float64(FormatContract):
    kind = "ome-zarr"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = rng.random((3, 50, 61))
        write_ome_zarr(root / "img.ome.zarr", data[None, :, None], "tczyx", "0.4")
        return Expected(data)


# ------------------------------------------------------------------------ GDAL rasters


class TestCogUint16(FormatContract):
    kind = "raster"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = _with_nodata(rng.integers(1, 4096, (3, 300, 270), dtype=np.uint16), 0, rng)
        write_geotiff(root / "cog.tif", data, *UTM, driver="COG", nodata=0,
                      compress="deflate", blocksize=128, overviews="AUTO")
        return Expected(data, 0.0, Georef(*UTM))


class TestGeoTiffInt16SevenBandStrips(FormatContract):
    kind = "raster"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = _with_nodata(rng.integers(-2000, 9000, (7, 61, 77)).astype(np.int16), -9999, rng)
        write_geotiff(root / "l8.tif", data, *WGS, nodata=-9999, interleave="band",
                      blockysize=8)
        return Expected(data, -9999.0, Georef(*WGS))


class TestGeoTiffFloat32Nan(FormatContract):
    kind = "raster"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = _with_nodata(rng.random((2, 45, 66), dtype=np.float32), np.nan, rng)
        web = ("EPSG:3857", (-13627000.0, 2.0, 0.0, 4551000.0, 0.0, -2.0))
        write_geotiff(root / "f.tif", data, *web, nodata=float("nan"), tiled=True,
                      blockxsize=16, blockysize=16, compress="zstd")
        return Expected(data, float("nan"), Georef(*web))


class TestBigEndianTiff(FormatContract):
    """Motorola byte order, written by tifffile: GDAL hands back native-order pixels."""

    kind = "raster"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        import tifffile

        data = rng.integers(0, 60000, (2, 50, 70), dtype=np.uint16)
        tifffile.imwrite(root / "be.tif", data, byteorder=">", photometric="minisblack",
                         planarconfig="separate", tile=(16, 16))
        return Expected(data)


class TestPng(FormatContract):
    kind = "raster"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        from PIL import Image

        data = rng.integers(0, 256, (3, 53, 71), dtype=np.uint8)
        Image.fromarray(np.moveaxis(data, 0, -1), "RGB").save(root / "photo.png")
        return Expected(data)


class TestJpeg(FormatContract):
    kind = "raster"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        from PIL import Image

        data = rng.integers(0, 256, (3, 70, 90), dtype=np.uint8)
        Image.fromarray(np.moveaxis(data, 0, -1), "RGB").save(root / "aerial.jpg", quality=90)
        return Expected(None)  # lossy: windows must equal the whole decoded image


class TestJpeg2000(FormatContract):
    kind = "raster"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = rng.integers(0, 4096, (1, 64, 80), dtype=np.uint16)
        write_geotiff(root / "b.jp2", data, *UTM, driver="JP2OpenJPEG",
                      QUALITY="100", REVERSIBLE="YES")
        return Expected(data, None, Georef(*UTM))


class TestVrtMosaic(FormatContract):
    kind = "raster"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = rng.integers(0, 256, (2, 40, 60), dtype=np.uint8)
        crs, (x0, dx, rx, y0, ry, dy) = UTM
        (root / ".parts").mkdir()  # hidden: catalogued as skipped, read through the VRT only
        write_geotiff(root / ".parts/left.tif", data[:, :, :30], *UTM)
        write_geotiff(root / ".parts/right.tif", data[:, :, 30:], crs,
                      (x0 + 30 * dx, dx, rx, y0, ry, dy))
        bands = "".join(
            f'<VRTRasterBand dataType="Byte" band="{b}">' + "".join(
                f'<SimpleSource><SourceFilename relativeToVRT="1">.parts/{name}</SourceFilename>'
                f'<SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="30" '
                f'ySize="40"/><DstRect xOff="{off}" yOff="0" xSize="30" ySize="40"/>'
                "</SimpleSource>" for name, off in (("left.tif", 0), ("right.tif", 30)))
            + "</VRTRasterBand>" for b in (1, 2))
        (root / "mosaic.vrt").write_text(
            f'<VRTDataset rasterXSize="60" rasterYSize="40"><SRS>{crs}</SRS>'
            f"<GeoTransform>{x0}, {dx}, {rx}, {y0}, {ry}, {dy}</GeoTransform>{bands}"
            "</VRTDataset>")
        return Expected(data, None, Georef(*UTM))


class TestBandFiles(FormatContract):
    kind = "bandfiles"

    def write(self, root: Path, rng: np.random.Generator) -> Expected:
        data = _with_nodata(rng.integers(1, 10000, (3, 66, 54), dtype=np.uint16), 0, rng)
        for name, band in zip(("B04", "B03", "B02"), data, strict=True):
            write_geotiff(root / f"T18_{name}.tif", band[None], *UTM, nodata=0, tiled=True,
                          blockxsize=16, blockysize=16)
        return Expected(data, 0.0, Georef(*UTM), {"band_files": {
            "pattern": "{scene}_B{band}.tif", "bands": ["04", "03", "02"]}})


# ------------------------------------------------------------------------ every dtype


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
def test_every_real_dtype_is_accepted(tmp_path: Path, dtype: str) -> None:
    data = (np.arange(2 * 9 * 7) % 100).reshape(2, 9, 7).astype(dtype)
    zarr.create_array(str(tmp_path / "z.zarr"), data=data)
    if dtype != "float16":  # GDAL 3.10 has no Float16
        write_geotiff(tmp_path / "t.tif", data)
    cat = catalog(str(tmp_path))
    assert not cat.failures
    for info in cat.scenes:
        assert info.dtype == dtype
        np.testing.assert_array_equal(open_scene(info).read(0, 9, 0, 7), data)


@pytest.mark.parametrize("dtype", ["bool", "complex64", "int64", "uint64"])
def test_other_dtypes_are_refused_with_the_fix(tmp_path: Path, dtype: str) -> None:
    zarr.create_array(str(tmp_path / "z.zarr"), shape=(4, 4), dtype=dtype)
    (failure,) = catalog(str(tmp_path)).failures
    assert f"dtype {dtype!r}" in failure.reason and "not supported" in failure.reason
    assert "convert it" in failure.reason
