"""One symlink policy for every format (pipeline.links): a link is followed when its real
target lies inside the archive and is not read otherwise; a link out of the archive, a
broken link, a loop or a second path to data already read is reported, never followed
silently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import rasterio
from _standin import smooth_image, write_zarr_scene

from pipeline.catalog import catalog


def _tif(path: Path, seed: int) -> None:
    img = smooth_image(seed, 3, 40, 50)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=40, width=50, count=3,
                       dtype="uint8") as dst:
        dst.write(img)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root, outside = tmp_path / "arch", tmp_path / "elsewhere"
    write_zarr_scene(root / "real", "z", smooth_image(0, 3, 30, 30))
    _tif(root / "real" / "t.tif", 1)
    write_zarr_scene(root / ".store", "hz", smooth_image(4, 3, 30, 30))  # hidden: not walked
    _tif(root / ".store" / "ht.tif", 5)
    write_zarr_scene(outside, "oz", smooth_image(2, 3, 30, 30))
    _tif(outside / "ot.tif", 3)
    links = root / "links"
    links.mkdir()
    os.symlink(root / ".store" / "hz.zarr", links / "z_in.zarr")  # zarr store inside: followed
    os.symlink(root / ".store" / "ht.tif", links / "t_in.tif")  # TIFF inside: followed
    os.symlink(root / "real" / "z.zarr", links / "z_again.zarr")  # already read: not twice
    os.symlink(root / "real" / "t.tif", links / "t_again.tif")
    os.symlink(outside / "oz.zarr", links / "z_out.zarr")  # zarr outside: not followed
    os.symlink(outside / "ot.tif", links / "t_out.tif")  # TIFF outside: not followed
    os.symlink(outside, links / "folder_out")  # a folder outside: not followed
    os.symlink(root, links / "loop")  # back to the root: not read twice
    os.symlink(tmp_path / "gone.tif", links / "broken.tif")
    return root


def test_links_inside_are_followed_alike_for_every_format(archive: Path) -> None:
    cat = catalog(str(archive))
    ids = [s.scene_id for s in cat.scenes]
    assert ids == ["links/t_in", "links/z_in", "real/t", "real/z"], ids
    by_id = {s.scene_id: s for s in cat.scenes}
    assert by_id["links/z_in"].shape == by_id["real/z"].shape == (3, 30, 30)


def test_links_out_of_the_archive_are_reported_not_followed(archive: Path) -> None:
    cat = catalog(str(archive))
    failed = {f.scene_id: f.reason for f in cat.failures}
    for sid in ("links/z_out", "links/t_out", "links/folder_out"):
        assert sid in failed, failed
        assert "outside the archive" in failed[sid] and "not followed" in failed[sid]
    skipped = {s.path: s.reason for s in cat.skipped}
    assert "already read" in skipped["links/loop/"], skipped
    assert "already read" in skipped["links/z_again.zarr/"], skipped
    assert "read under its own name" in skipped["links/t_again.tif"], skipped
    assert "broken symlink" in skipped["links/broken.tif"], skipped
    assert not any("elsewhere" in s.url for s in cat.scenes)


def test_a_symlinked_archive_root_is_read_as_the_archive(archive: Path, tmp_path) -> None:
    os.symlink(archive, tmp_path / "alias")
    cat = catalog(str(tmp_path / "alias"))
    assert [s.scene_id for s in cat.scenes] == ["links/t_in", "links/z_in", "real/t", "real/z"]
