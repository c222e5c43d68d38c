"""Change maps: encoding, kept previous labels, the change layer and its from -> to matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from _outputs import CLASSES
from _outputs import labels as _labels
from _outputs import write_scene as _write
from typer.testing import CliRunner

from pipeline.change import BASE, decode, encode
from pipeline.errors import ChangeError
from pipeline.io.omezarr import mode_downsample, open_change_level
from pipeline.ops.diff import diff_scene, read_changes
from pipeline.ops.previous import keep_previous, previous_versions
from pipeline.query import OutputStore


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def out(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict]:
    if request.param == "local":
        return str(tmp_path / "out"), {}
    server = request.getfixturevalue("s3_server")
    return f"{request.getfixturevalue('s3_bucket')}/labels", server.storage_options


def test_encoding_keeps_nodata_and_both_classes() -> None:
    before = np.array([[0, 1, 2, 3], [3, 3, 0, 1]], np.uint8)
    after = np.array([[2, 1, 0, 1], [3, 2, 0, 255]], np.uint8)
    codes = encode(before, after)
    assert codes.dtype == np.uint16
    assert codes.tolist() == [[0, 1 * BASE + 1, 0, 3 * BASE + 1], [3 * BASE + 3, 3 * BASE + 2,
                                                                   0, 1 * BASE + 255]]
    d = decode(codes)
    assert d["valid"].tolist() == [[False, True, False, True], [True, True, False, True]]
    assert d["changed"].tolist() == [[False, False, False, True], [False, True, False, True]]
    assert d["from"][d["valid"]].tolist() == before[d["valid"]].tolist()
    assert d["to"][d["valid"]].tolist() == after[d["valid"]].tolist()


def test_nightly_style_change_layer_and_matrix(out: tuple[str, dict]) -> None:
    root, so = out
    v1, v2 = _labels(1), _labels(2)
    v2[:20, :30] = 0  # a cloud arrives: nodata in the new labels
    _write(root, so, v1, "r1")
    assert keep_previous(root, ["t/s1", "missing"], keep=1, storage_options=so) == {"t/s1": "r1"}
    _write(root, so, v2, "r2", overwrite=True)  # the re-segmentation replaces the store

    kept = previous_versions(root, "t/s1", so)
    assert [v.run_id for v in kept] == ["r1"]
    np.testing.assert_array_equal(OutputStore(kept[0].root, so).scene("t/s1").read(), v1)

    m = diff_scene(root, "t/s1", "r1", so)
    view = OutputStore(root, so).scene("t/s1")
    level0 = np.asarray(open_change_level(view.url, 0, so)[...])
    np.testing.assert_array_equal(level0, encode(v1, v2))
    np.testing.assert_array_equal(np.asarray(open_change_level(view.url, 1, so)[...]),
                                  mode_downsample(level0))

    # Pixels: a plain 2-D histogram of (before, after); rows = previous classes.
    expect = np.zeros((4, 4))
    np.add.at(expect, (v1.astype(int), v2.astype(int)), 1)
    np.testing.assert_array_equal(m.pixels, expect)
    assert m.classes_from == m.classes_to == tuple(n for n, _ in CLASSES)
    # Areas: row sums are the previous class areas, column sums the current ones (geodesic).
    now = {r.label: r.area for r in view.class_stats().rows}
    np.testing.assert_allclose(m.area.sum(0), [now[i] for i in range(4)], rtol=1e-9)
    valid = (v1 > 0) & (v2 > 0)
    s = m.summary()
    assert s["pixels_changed"] == np.count_nonzero(valid & (v1 != v2))
    assert s["changed_fraction"] == pytest.approx(s["pixels_changed"] / valid.sum())
    assert read_changes(view, so).to_dict() == m.to_dict()


def test_change_layer_is_valid_ome_zarr(tmp_path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader
    from ome_zarr_models import open_ome_zarr

    root = str(tmp_path / "out")
    _write(root, {}, _labels(1), "r1")
    keep_previous(root, ["t/s1"])
    _write(root, {}, _labels(3), "r2", overwrite=True)
    diff_scene(root, "t/s1", "r1")
    url = OutputStore(root).scene("t/s1").url

    model = open_ome_zarr(zarr.open_group(url, mode="r"))
    assert model.labels.attributes.ome.labels == ["segmentation", "change"]
    change = model.labels.get_image_labels_group("change")
    props = {p.label_value: p for p in change.attributes.ome.image_label.properties}
    assert props[2 * BASE + 3].model_extra["name"] == "forest -> urban"
    names = [n.metadata["name"] for n in Reader(parse_url(url))() if n.load(Label) is not None]
    assert sorted(names) == ["change", "segmentation"]
    g = zarr.open_group(url, path="labels/change", mode="r")
    assert g.attrs["proj:code"] == "EPSG:32633"  # the labels' georeference, every level
    assert zarr.open_array(url, path="labels/change/2", mode="r").attrs["spatial:shape"] == [
        38, 58]


def test_refusals_name_the_way_out(tmp_path: Path) -> None:
    root, other = str(tmp_path / "out"), str(tmp_path / "other")
    _write(root, {}, _labels(1), "r1")
    with pytest.raises(ChangeError, match=r"kept runs: none kept yet"):
        diff_scene(root, "t/s1", "r0")
    with pytest.raises(ChangeError, match="no change layer"):
        read_changes(OutputStore(root).scene("t/s1"))
    small = _labels(1)[:100]
    _write(other, {}, small, "r9")
    with pytest.raises(ChangeError, match=r"100 x 230 px, the current ones 150 x 230"):
        diff_scene(root, "t/s1", other)


def test_keep_prunes_and_cli_against_other_output(tmp_path: Path) -> None:
    from pipeline.cli import app

    root, other = str(tmp_path / "out"), str(tmp_path / "other")
    for k, seed in enumerate((1, 2, 3), start=1):
        keep_previous(root, ["t/s1"], keep=2)
        _write(root, {}, _labels(seed), f"r{k}", overwrite=k > 1)
    assert [v.run_id for v in previous_versions(root, "t/s1")] == ["r1", "r2"]
    keep_previous(root, ["t/s1"], keep=2)
    assert [v.run_id for v in previous_versions(root, "t/s1")] == ["r2", "r3"]

    _write(other, {}, _labels(7), "x1")
    res = CliRunner().invoke(app, ["diff", "--output", root, "--scene", "t/s1",
                                   "--against", other])
    assert res.exit_code == 0, res.output
    assert "changed" in res.output
    res = CliRunner().invoke(app, ["query", "changes", "--output", root, "--scene", "t/s1",
                                   "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["against"] == other and d["area_unit"] == "m2"
    expect = np.zeros((4, 4))
    np.add.at(expect, (_labels(7).astype(int), _labels(3).astype(int)), 1)
    assert d["pixels"] == expect.tolist()
    bad = CliRunner().invoke(app, ["diff", "--output", root, "--scene", "t/s1",
                                   "--against", "nope"])
    assert bad.exit_code == 2 and "'r2', 'r3'" in bad.output
