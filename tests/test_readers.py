"""Window reads over every scene kind equal numpy slicing; errors name scene and window."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline.catalog import catalog
from pipeline.errors import SceneReadError, WindowError
from pipeline.io.readers import SceneReader, clear_handle_cache, open_scene


@pytest.fixture(scope="module")
def cat(archive):
    return catalog(str(archive.root))


def _windows(h: int, w: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    out = [(0, h, 0, w), (0, 1, 0, 1), (h - 1, h, w - 1, w), (h // 3, h, 0, max(1, w // 2))]
    for _ in range(4):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        out.append((y0, int(rng.integers(y0 + 1, h + 1)), x0, int(rng.integers(x0 + 1, w + 1))))
    return out


def test_windows_equal_numpy_slicing_for_every_scene(cat, archive) -> None:
    rng = np.random.default_rng(0)
    for scene in cat.scenes:
        reader = open_scene(scene)
        want = archive.expected[scene.scene_id]
        for y0, y1, x0, x1 in _windows(scene.height, scene.width, rng):
            got = reader.read(y0, y1, x0, x1)
            assert got.dtype == want.dtype, scene.scene_id
            np.testing.assert_array_equal(got, want[:, y0:y1, x0:x1], err_msg=scene.scene_id)
            assert got.flags.c_contiguous and got.flags.writeable


def test_band_selection_and_order(cat, archive) -> None:
    for scene_id, bands in (("nested/deeper/old_v2", [3, 0, 2]), ("tiff/planar16", [1]),
                            ("tiff/geo_rgb", [2, 1, 0]), ("ome/img04", [2, 2])):
        got = open_scene(cat.get(scene_id)).read(5, 40, 7, 33, bands=bands)
        np.testing.assert_array_equal(got, archive.expected[scene_id][bands, 5:40, 7:33])


def test_hwc_archive_reads_as_chw(archive) -> None:
    hwc = catalog(str(archive.hwc_root), layout="HWC")
    for scene in hwc.scenes:
        want = archive.hwc_expected[scene.scene_id]
        np.testing.assert_array_equal(open_scene(scene).read(3, 17, 2, 19),
                                      want[:, 3:17, 2:19])


def test_ground_truth(cat, archive) -> None:
    reader = open_scene(cat.get("synth/s1"))
    np.testing.assert_array_equal(reader.read_ground_truth(), archive.ground_truth["synth/s1"])
    np.testing.assert_array_equal(reader.read_ground_truth(10, 20, 30, 45),
                                  archive.ground_truth["synth/s1"][10:20, 30:45])
    with pytest.raises(SceneReadError, match="no ground-truth"):
        open_scene(cat.get("synth/s2")).read_ground_truth()


def test_to_dask_matches_and_carries_no_pixels(cat, archive) -> None:
    for scene_id, chunks in (("plain_v3", 100), ("tiff/geo_rgb", (50, 64)),
                             ("ome/img04", (1, 20, 20)), ("nested/gray2d", None)):
        arr = open_scene(cat.get(scene_id)).to_dask(chunks)
        assert arr.shape == archive.expected[scene_id].shape
        np.testing.assert_array_equal(arr.compute(scheduler="threads"),
                                      archive.expected[scene_id])
        graph_bytes = len(pickle.dumps(dict(arr.__dask_graph__())))
        assert graph_bytes < 20_000, (scene_id, graph_bytes)  # references, not pixels


def test_getitem_basic_slicing(cat, archive) -> None:
    reader = open_scene(cat.get("plain_v3"))
    want = archive.expected["plain_v3"]
    np.testing.assert_array_equal(reader[1, 10:20, -5:], want[1, 10:20, -5:])
    np.testing.assert_array_equal(reader[:, 300:, :3], want[:, 300:, :3])
    assert reader[:, 5:5, :].shape == (3, 0, 257)


def test_reader_pickles_without_handles(cat) -> None:
    reader = open_scene(cat.get("tiff/geo_rgb"))
    first = reader.read(0, 10, 0, 10)  # opens and caches a TiffFile in this process
    blob = pickle.dumps(reader)
    assert len(blob) < 5_000
    np.testing.assert_array_equal(pickle.loads(blob).read(0, 10, 0, 10), first)


def _read_in_child(reader: SceneReader) -> np.ndarray:
    return reader.read(40, 90, 10, 60, bands=[1])


def test_reads_in_a_spawned_worker_process(cat, archive) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        got = pool.submit(_read_in_child, open_scene(cat.get("tiff/planar16"))).result(timeout=60)
    np.testing.assert_array_equal(got, archive.expected["tiff/planar16"][[1], 40:90, 10:60])


def test_out_of_bounds_windows_and_bands_are_refused(cat) -> None:
    reader = open_scene(cat.get("synth/s2"))  # 3 x 65 x 67
    for window in ((0, 66, 0, 10), (5, 5, 0, 10), (-1, 3, 0, 3), (0, 3, 60, 68)):
        with pytest.raises(WindowError, match="synth/s2"):
            reader.read(*window)
    with pytest.raises(WindowError, match=r"bands=\[3\]"):
        reader.read(0, 5, 0, 5, bands=[3])


def test_corrupt_zarr_chunk_names_scene_and_window(tmp_path: Path, archive) -> None:
    shutil.copytree(archive.root / "plain_v3.zarr", tmp_path / "plain_v3.zarr")
    chunk = tmp_path / "plain_v3.zarr/c/0/1/2"  # bands 0-2, rows 64-127, cols 128-191
    assert chunk.is_file()
    chunk.write_bytes(b"\x00corrupted" * 10)
    reader = open_scene(catalog(str(tmp_path)).get("plain_v3"))
    np.testing.assert_array_equal(reader.read(0, 64, 0, 257),
                                  archive.expected["plain_v3"][:, 0:64])
    with pytest.raises(SceneReadError) as info:
        reader.read(70, 90, 130, 150)
    message = str(info.value)
    assert "plain_v3" in message and "y=70:90, x=130:150" in message
    assert info.value.scene_id == "plain_v3"
    assert pickle.loads(pickle.dumps(info.value)).reason == info.value.reason


def test_corrupt_and_truncated_tiff_data(tmp_path: Path, archive) -> None:
    shutil.copy(archive.root / "tiff/geo_rgb.tif", tmp_path / "geo.tif")
    scene = catalog(str(tmp_path)).get("geo")
    import tifffile

    with tifffile.TiffFile(tmp_path / "geo.tif") as tif:
        page = tif.pages.first
        offset, count = page.dataoffsets[2], page.databytecounts[2]  # tile row 0, col 2
    raw = bytearray((tmp_path / "geo.tif").read_bytes())
    raw[offset:offset + count] = b"\xff" * count
    (tmp_path / "geo.tif").write_bytes(bytes(raw))
    clear_handle_cache()
    reader = open_scene(scene)
    np.testing.assert_array_equal(reader.read(0, 64, 0, 64),
                                  archive.expected["tiff/geo_rgb"][:, :64, :64])
    with pytest.raises(SceneReadError, match=r"'geo'.*y=0:10, x=160:170"):
        reader.read(0, 10, 160, 170)

    # truncated after cataloguing: the catalog said fine, the read must say why not
    shutil.copy(archive.root / "tiff/planar16.tiff", tmp_path / "p.tiff")
    scene = catalog(str(tmp_path)).get("p")
    data = (tmp_path / "p.tiff").read_bytes()
    (tmp_path / "p.tiff").write_bytes(data[: len(data) // 2])
    clear_handle_cache()
    with pytest.raises(SceneReadError, match=r"'p'"):
        open_scene(scene).read(0, 201, 0, 150)


def test_handle_cache_is_bounded(cat, monkeypatch) -> None:
    import pipeline.io.readers as readers

    clear_handle_cache()
    monkeypatch.setattr(readers, "MAX_OPEN_HANDLES", 3)
    for scene in cat.scenes:
        open_scene(scene).read(0, 1, 0, 1)
    assert len(readers._HANDLES) == 3
    clear_handle_cache()
    assert not readers._HANDLES


def test_scene_info_without_axes_falls_back_to_layout(cat, archive) -> None:
    # SceneInfo built by hand (tests, other tools) may omit ``axes``
    for scene_id in ("plain_v3", "nested/gray2d", "tiff/geo_rgb"):
        info = replace(cat.get(scene_id), axes="")
        np.testing.assert_array_equal(open_scene(info).read(1, 9, 2, 11),
                                      archive.expected[scene_id][:, 1:9, 2:11])
