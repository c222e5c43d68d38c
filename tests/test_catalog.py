"""Catalog over a mixed local archive: kinds, shapes, dtypes, georef, failures, fingerprints."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

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


def test_layouts_as_stored(cat) -> None:
    assert cat.get("tiff/geo_rgb").layout == "HWC"  # interleaved RGB: (H, W, S) on disk
    assert cat.get("tiff/planar16").layout == "CHW"
    assert cat.get("nested/gray2d").shape[0] == 1


def test_hwc_layout_from_config(archive) -> None:
    hwc = catalog(str(archive.hwc_root), layout="HWC")
    assert not hwc.failures
    assert {s.scene_id: s.shape for s in hwc.scenes} == {
        k: v.shape for k, v in archive.hwc_expected.items()
    }
    assert hwc.get("hwc_v3").layout == "HWC"
    assert hwc.get("planar").layout == "CHW"  # TIFF declares its own axes
    assert hwc.get("hwc_group").ground_truth == "labels"


def test_georeference_from_geotiff_tags(cat, archive) -> None:
    for scene_id, (crs, transform) in archive.georefs.items():
        georef = cat.get(scene_id).georef
        assert georef is not None, scene_id
        assert georef.crs == crs
        np.testing.assert_allclose(georef.transform, transform, rtol=0, atol=1e-9)
    assert cat.get("tiff/planar16").georef is None
    assert cat.get("plain_v3").georef is None


def test_pixel_is_point_shifts_origin_by_half_a_pixel(tmp_path: Path) -> None:
    import tifffile

    from pipeline.io.geotiff import geotiff_extratags

    tags = geotiff_extratags("EPSG:32633", (1000.0, 2.0, 0.0, 5000.0, 0.0, -2.0))
    tags = [t if t[0] != 34735 else (34735, "H", 8, (1, 1, 0, 1, 1025, 0, 1, 2), True)
            for t in tags]
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((4, 4), np.uint8), extratags=tags)
    georef = catalog(str(tmp_path)).get("p").georef
    assert georef == Georef(None, (999.0, 2.0, 0.0, 5001.0, 0.0, -2.0))


def test_corrupt_scenes_fail_alone_with_named_reasons(cat, archive) -> None:
    got = {f.scene_id: f for f in cat.failures}
    assert set(got) == set(archive.failures)
    for scene_id, needle in archive.failures.items():
        assert needle in got[scene_id].reason, (scene_id, got[scene_id].reason)
        assert got[scene_id].url.startswith(str(archive.root))


def test_hidden_bookkeeping_and_other_files_are_ignored(cat) -> None:
    ids = {s.scene_id for s in cat.scenes} | {f.scene_id for f in cat.failures}
    assert not any(i.startswith((".cache", "_hgn")) or "README" in i for i in ids)


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


def test_duplicate_ids_are_reported(tmp_path: Path, archive) -> None:
    shutil.copytree(archive.root / "synth/s2.zarr", tmp_path / "x.zarr")
    shutil.copy(archive.root / "tiff/planar16.tiff", tmp_path / "x.tif")
    cat = catalog(str(tmp_path))
    assert len(cat.scenes) == 1
    assert [f.scene_id for f in cat.failures] == ["x"]
    assert "duplicate scene id 'x'" in cat.failures[0].reason


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="layout='WHC'"):
        catalog(str(tmp_path), layout="WHC")
    with pytest.raises(StorageError, match="does not exist"):
        catalog(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="scheme 'gs'"):
        catalog("gs://bucket/x")


def test_scene_info_round_trips_through_json(cat) -> None:
    for scene in cat.scenes:
        again = SceneInfo.from_dict(json.loads(json.dumps(scene.to_dict())))
        assert again == scene


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
