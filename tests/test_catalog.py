"""Catalog: walk + dispatch over a mixed archive; every entry is a scene, a failure or skipped."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import write_geotiff

from pipeline.catalog import Catalog, Georef, SceneInfo, catalog
from pipeline.errors import ConfigError, StorageError


@pytest.fixture(scope="module")
def cat(archive) -> Catalog:
    return catalog(str(archive.root))


def test_every_scene_is_found_with_shape_and_dtype(cat, archive) -> None:
    assert [s.scene_id for s in cat.scenes] == sorted(archive.expected)
    for scene in cat.scenes:
        want = archive.expected[scene.scene_id]
        assert scene.shape == want.shape, scene.scene_id
        assert scene.dtype == str(want.dtype), scene.scene_id
        assert scene.kind == archive.kinds[scene.scene_id], scene.scene_id


def test_scene_urls_and_array_paths(cat, archive) -> None:
    s1 = cat.get("synth/s1")
    assert s1.url == str(archive.root / "synth/s1.zarr")
    assert (s1.array_path, s1.ground_truth) == ("image", "labels")
    assert cat.get("synth/s2").ground_truth is None
    assert cat.get("plain_v3").array_path is None
    assert cat.get("ome/img05").array_path == "0"
    assert cat.get("ome/img04").axes == "tczyx"
    assert cat.get("tiff/geo_rgb").url == str(archive.root / "tiff/geo_rgb.tif")


def test_layouts_and_tiles_as_stored(cat) -> None:
    geo = cat.get("tiff/geo_rgb")
    assert geo.layout == "HWC" and geo.chunks == (3, 64, 64)  # pixel-interleaved tiles
    planar = cat.get("tiff/planar16")
    assert planar.layout == "CHW" and planar.chunks == (1, 32, 150)  # band strips
    assert cat.get("nested/gray2d").shape[0] == 1


def test_hwc_layout_from_config(archive) -> None:
    hwc = catalog(str(archive.hwc_root), layout="HWC")
    assert not hwc.failures
    assert {s.scene_id: s.shape for s in hwc.scenes} == {
        k: v.shape for k, v in archive.hwc_expected.items()
    }
    assert hwc.get("hwc_v3").layout == "HWC"
    assert hwc.get("planar").layout == "CHW"  # a GeoTIFF declares its own layout
    assert hwc.get("hwc_group").ground_truth == "labels"


def test_georeference_from_geotiffs(cat, archive) -> None:
    for scene_id, (crs, transform) in archive.georefs.items():
        georef = cat.get(scene_id).georef
        assert georef is not None, scene_id
        assert georef.crs == crs
        np.testing.assert_allclose(georef.transform, transform, rtol=0, atol=1e-9)
    assert cat.get("tiff/planar16").georef is None
    assert cat.get("plain_v3").georef is None


def test_pixel_is_point_shifts_origin_by_half_a_pixel(tmp_path: Path) -> None:
    """Raw GeoKeys (RasterPixelIsPoint): GDAL moves the origin to pixel (0, 0)'s corner."""
    import tifffile

    keys = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 2, 3072, 0, 1, 32633)
    tags = [(33550, "d", 3, (2.0, 2.0, 0.0), True),
            (33922, "d", 6, (0.0, 0.0, 0.0, 1000.0, 5000.0, 0.0), True),
            (34735, "H", len(keys), keys, True)]
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((4, 4), np.uint8), extratags=tags)
    georef = catalog(str(tmp_path)).get("p").georef
    assert georef == Georef("EPSG:32633", (999.0, 2.0, 0.0, 5001.0, 0.0, -2.0))


def test_crs_without_epsg_code_survives_as_wkt2(tmp_path: Path) -> None:
    import pyproj

    custom = ("+proj=tmerc +lat_0=0 +lon_0=15.5 +k=0.9996 +x_0=400000 +y_0=0 +ellps=GRS80 "
              "+units=m +no_defs")
    transform = (400000.0, 5.0, 0.0, 5200000.0, 0.0, -5.0)
    write_geotiff(tmp_path / "custom.tif", np.ones((1, 8, 8), np.uint8), custom, transform)
    write_geotiff(tmp_path / "nc.tif", np.ones((1, 8, 8), np.uint8), "EPSG:32119", transform)
    cat = catalog(str(tmp_path))
    wkt = cat.get("custom").georef.crs
    assert wkt.startswith("PROJCRS[") and "15.5" in wkt
    assert pyproj.CRS.from_wkt(wkt).equals(pyproj.CRS.from_proj4(custom))
    assert cat.get("nc").georef.crs == "EPSG:32119"  # a state plane CRS keeps its code


def test_corrupt_scenes_fail_alone_with_named_reasons(cat, archive) -> None:
    got = {f.scene_id: f for f in cat.failures}
    assert set(got) == set(archive.failures)
    for scene_id, needle in archive.failures.items():
        assert needle in got[scene_id].reason, (scene_id, got[scene_id].reason)
        assert got[scene_id].url.startswith(str(archive.root))


def test_every_non_scene_is_skipped_once_with_its_reason(cat, archive) -> None:
    got = {s.path: s.reason for s in cat.skipped}
    assert set(got) == set(archive.skipped)
    for path, needle in archive.skipped.items():
        assert needle in got[path], (path, got[path])
    assert str(cat.skipped[0]).startswith(f"{cat.skipped[0].path}: ")
    ids = {s.scene_id for s in cat.scenes} | {f.scene_id for f in cat.failures}
    assert not any(i.startswith((".cache", "_hgn")) or "README" in i for i in ids)


def test_sidecars_name_their_raster(tmp_path: Path) -> None:
    write_geotiff(tmp_path / "a.tif", np.ones((1, 4, 4), np.uint8))
    (tmp_path / "a.tif.aux.xml").write_text("<PAMDataset/>")
    (tmp_path / "a.tfw").write_text("1\n0\n0\n-1\n0\n0\n")
    (tmp_path / "notes.dat").write_bytes(b"\x00\x01")
    cat = catalog(str(tmp_path))
    got = {s.path: s.reason for s in cat.skipped}
    assert "sidecar of a.tif" in got["a.tif.aux.xml"] and "sidecar of a.tif" in got["a.tfw"]
    assert got["notes.dat"].startswith("not a raster: .dat")
    assert [s.scene_id for s in cat.scenes] == ["a"]


def test_multi_page_and_empty_tiffs_fail_with_their_reason(tmp_path: Path) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((4, 16, 16), np.uint16),
                     photometric="minisblack")  # 4 pages, one per band
    (tmp_path / "empty.tif").write_bytes(b"")
    got = {f.scene_id: f.reason for f in catalog(str(tmp_path)).failures}
    assert "4 full-resolution images (TIFF pages)" in got["stack"] and "band_files" in got["stack"]
    assert "truncated or empty: 0 bytes" in got["empty"]


def test_fingerprint_is_stable_and_tracks_metadata(tmp_path: Path, archive) -> None:
    shutil.copytree(archive.root / "synth", tmp_path / "synth")
    first = catalog(str(tmp_path)).get("synth/s1").fingerprint
    assert catalog(str(tmp_path)).get("synth/s1").fingerprint == first
    meta = tmp_path / "synth/s1.zarr/image/zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"] = {"note": "rewritten"}
    meta.write_text(json.dumps(doc))
    os.utime(meta, (1e9, 1e9))
    assert catalog(str(tmp_path)).get("synth/s1").fingerprint != first


def test_catalog_reads_no_pixels(tmp_path: Path) -> None:
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=(3, 64, 64), chunks=(3, 32, 32),
                            dtype="uint8")
    arr[...] = 7
    for chunk in (tmp_path / "a.zarr/c").rglob("*"):
        if chunk.is_file():
            chunk.write_bytes(b"garbage that no codec decodes")
    cat = catalog(str(tmp_path))
    assert cat.get("a").shape == (3, 64, 64) and not cat.failures


def test_single_scene_roots_and_file_urls(archive) -> None:
    one = catalog(f"file://{archive.root}/synth/s1.zarr")
    assert [s.scene_id for s in one.scenes] == ["s1"]
    tif = catalog(str(archive.root / "tiff/geo_rgb.tif"))
    assert [s.scene_id for s in tif.scenes] == ["geo_rgb"]
    text = catalog(str(archive.root / "README.txt"))
    assert not text.scenes and [s.reason[:12] for s in text.skipped] == ["not a raster"]


def test_duplicate_ids_both_fail_naming_each_other(tmp_path: Path, archive) -> None:
    shutil.copytree(archive.root / "synth/s2.zarr", tmp_path / "x.zarr")
    shutil.copy(archive.root / "tiff/planar16.tiff", tmp_path / "x.tif")
    cat = catalog(str(tmp_path))
    assert not cat.scenes
    assert sorted(f.url for f in cat.failures) == [str(tmp_path / "x.tif"),
                                                   str(tmp_path / "x.zarr")]
    for f in cat.failures:
        assert f.scene_id == "x" and "duplicate scene id 'x'" in f.reason
        assert "x.tif" in f.reason and "x.zarr" in f.reason


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="layout='WHC'"):
        catalog(str(tmp_path), layout="WHC")
    with pytest.raises(StorageError, match="does not exist"):
        catalog(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="scheme 'gs'"):
        catalog("gs://bucket/x")
    with pytest.raises(ConfigError, match="band_files"):
        catalog(str(tmp_path), band_files={"pattern": "{scene}.tif", "bands": ["1"]})


def test_scene_info_round_trips_through_json(cat) -> None:
    for scene in [*cat.scenes, replace(cat.scenes[0], nodata=float("nan"), files=("a", "b"))]:
        again = SceneInfo.from_dict(json.loads(json.dumps(scene.to_dict(), allow_nan=False)))
        assert again == scene


def test_nodata_from_files_and_the_config_override(tmp_path: Path) -> None:
    write_geotiff(tmp_path / "n.tif", np.ones((2, 8, 8), np.int16), nodata=-9999)
    zarr.create_array(str(tmp_path / "z.zarr"), shape=(8, 8), dtype="float32",
                      attributes={"_FillValue": "NaN"})
    zarr.create_array(str(tmp_path / "plain.zarr"), shape=(8, 8), dtype="uint8")
    cat = catalog(str(tmp_path))
    assert cat.get("n").nodata == -9999 and math.isnan(cat.get("z").nodata)
    assert cat.get("plain").nodata is None  # fill_value alone is not nodata
    assert {s.nodata for s in catalog(str(tmp_path), nodata=0).scenes} == {0.0}


def test_images_written_by_ome_zarr_py(tmp_path: Path) -> None:
    import warnings

    from ome_zarr.format import FormatV04, FormatV05

    with warnings.catch_warnings():  # its default Scaler warns at import
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.writer import write_image

    from pipeline.io.readers import open_scene

    rng = np.random.default_rng(5)
    v5, v4 = rng.integers(0, 65536, (2, 97, 131), np.uint16), rng.random((40, 33), np.float32)
    write_image(v5, zarr.open_group(str(tmp_path / "v5.ome.zarr"), mode="w", zarr_format=3),
                axes="cyx", fmt=FormatV05(), scale_factors=[2])
    write_image(v4[None, None, None],
                zarr.open_group(str(tmp_path / "v4.ome.zarr"), mode="w", zarr_format=2),
                axes="tczyx", fmt=FormatV04(), scale_factors=[2])
    cat = catalog(str(tmp_path))
    assert not cat.failures
    assert (cat.get("v5").shape, cat.get("v4").shape) == ((2, 97, 131), (1, 40, 33))
    np.testing.assert_array_equal(open_scene(cat.get("v5")).read(3, 60, 9, 100),
                                  v5[:, 3:60, 9:100])
    np.testing.assert_array_equal(open_scene(cat.get("v4")).read(0, 40, 0, 33), v4[None])


# ------------------------------------------------------------------- multi-file scenes

UTM = ("EPSG:32618", (435730.0, 10.0, 0.0, 4179460.0, 0.0, -10.0))
BANDS = {"band_files": {"pattern": "{scene}_B{band}.tif", "bands": ["04", "03", "02"]}}


def _band(path: Path, value: int, shape: tuple[int, int] = (20, 30), georef=UTM,
          dtype: str = "uint16") -> None:
    write_geotiff(path, np.full((1, *shape), value, dtype), *georef)


def test_band_files_form_one_scene_in_band_order(tmp_path: Path) -> None:
    (tmp_path / "tiles").mkdir()
    for band, value in (("02", 2), ("03", 3), ("04", 4), ("08", 8)):
        _band(tmp_path / f"tiles/T18_B{band}.tif", value)
    (tmp_path / "tiles/T18_MTD.xml").write_text("<metadata/>")
    cat = catalog(str(tmp_path), **BANDS)
    (scene,) = cat.scenes
    assert (scene.scene_id, scene.kind, scene.shape) == ("tiles/T18", "bandfiles", (3, 20, 30))
    assert [Path(f).name for f in scene.files] == ["T18_B04.tif", "T18_B03.tif", "T18_B02.tif"]
    assert scene.georef == Georef(*UTM)
    skipped = {s.path: s.reason for s in cat.skipped}
    assert "band '08'" in skipped["tiles/T18_B08.tif"]
    assert skipped["tiles/T18_MTD.xml"].startswith("not a raster")


def test_band_files_missing_a_band_fail_naming_it(tmp_path: Path) -> None:
    _band(tmp_path / "a_B04.tif", 4)
    _band(tmp_path / "a_B03.tif", 3)
    (failure,) = catalog(str(tmp_path), **BANDS).failures
    assert failure.scene_id == "a" and "['02']" in failure.reason
    assert "a_B02.tif" in failure.reason


def test_band_files_on_different_grids_name_files_and_grids(tmp_path: Path) -> None:
    _band(tmp_path / "g_B04.tif", 4)
    _band(tmp_path / "g_B03.tif", 3)
    coarse = ("EPSG:32618", (435720.0, 20.0, 0.0, 4179460.0, 0.0, -20.0))
    _band(tmp_path / "g_B02.tif", 2, (10, 15), coarse)
    (failure,) = catalog(str(tmp_path), **BANDS).failures
    for needle in ("different grids", "g_B04.tif: 20 x 30 px at 10 m", "g_B02.tif: 10 x 15 px "
                   "at 20 m", "EPSG:32618", "gdalwarp"):
        assert needle in failure.reason, failure.reason


def test_band_files_with_other_dtypes_or_several_bands_are_refused(tmp_path: Path) -> None:
    _band(tmp_path / "d_B04.tif", 4)
    _band(tmp_path / "d_B03.tif", 3, dtype="int16")
    _band(tmp_path / "d_B02.tif", 2)
    write_geotiff(tmp_path / "m_B04.tif", np.ones((2, 20, 30), np.uint16), *UTM)
    _band(tmp_path / "m_B03.tif", 3)
    _band(tmp_path / "m_B02.tif", 2)
    got = {f.scene_id: f.reason for f in catalog(str(tmp_path), **BANDS).failures}
    assert "different dtypes" in got["d"] and "d_B03.tif int16" in got["d"]
    assert "m_B04.tif has 2" in got["m"]
