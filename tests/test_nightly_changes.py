"""A nightly run over a changed scene: kept labels, change layer, matrix, updated STAC catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pystac.validation
from _standin import TinyLoader, smooth_image, write_zarr_scene
from typer.testing import CliRunner

from pipeline.change import encode
from pipeline.config import load_config
from pipeline.execute import LocalExecutor
from pipeline.io.omezarr import SceneWriter, open_change_level
from pipeline.ops.nightly import nightly
from pipeline.query import OutputStore
from pipeline.run.report import read_manifest
from pipeline.storage import get_fs, join_url, storage_options_from, strip_protocol


def _cfg(s3: dict | None, **kw):
    return load_config(overrides=dict(chunk=128, halo=8, batch_size=2,
                                      checkpoint="unused-standin", s3=s3, **kw))


def test_nightly_maps_what_changed(output: tuple[str, dict | None], tmp_path: Path) -> None:
    out, s3 = output
    cfg = _cfg(s3)
    so = storage_options_from(cfg.s3)
    archive = tmp_path / "archive"
    write_zarr_scene(archive, "a", smooth_image(0, 3, 150, 260))
    write_zarr_scene(archive, "b", smooth_image(1, 3, 140, 170))
    with LocalExecutor(TinyLoader()) as ex:
        n1 = nightly(str(archive), out, cfg, executor=ex, run_id="n1")
        before = SceneWriter.open(out, "a", so).read_level(0)
        cat = json.loads(get_fs(out, so).cat_file(join_url(strip_protocol(out), "catalog.json")))
        assert sorted(ln["href"] for ln in cat["links"] if ln["rel"] == "item") == [
            "./_hgn/stac/a.json", "./_hgn/stac/b.json"]
        assert n1.change_maps == {}

        image = smooth_image(0, 3, 150, 260)
        image[:, 40:110, 60:200] = smooth_image(9, 3, 70, 140)  # new land cover in one block
        write_zarr_scene(archive, "a", image)
        n2 = nightly(str(archive), out, cfg, executor=ex, run_id="n2")
    assert n2.changes["changed"] == ["a"] and n2.processed_ok == ["a"]
    after = SceneWriter.open(out, "a", so).read_level(0)
    assert not np.array_equal(before, after)

    # The change layer beside the labels: exactly the codes of (previous, current).
    view = OutputStore(out, so).scene("a")
    np.testing.assert_array_equal(np.asarray(open_change_level(view.url, 0, so)[...]),
                                  encode(before, after))
    # The from -> to matrix, in the manifest, in the history and from `query changes`.
    expect = np.zeros((4, 4))
    np.add.at(expect, (before.astype(int), after.astype(int)), 1)
    scene = next(s for s in read_manifest(n2.manifest, so)["scenes"] if s["scene_id"] == "a")
    assert scene["change"]["against"] == "n1"
    assert scene["change"]["matrix"]["pixels"] == expect.tolist()
    assert n2.change_maps["a"]["summary"]["pixels_changed"] == float(
        np.count_nonzero((before != after) & (before > 0) & (after > 0)))
    cli_cfg = tmp_path / "s3.yaml"
    cli_cfg.write_text(json.dumps({"s3": s3}) if s3 else "{}")
    res = CliRunner().invoke(app(), ["query", "changes", "--output", out, "--scene", "a",
                                     "--format", "json", "--config", str(cli_cfg)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["pixels"] == expect.tolist()
    # The previous labels stay readable as an output root of their own.
    kept = OutputStore(join_url(out, "_hgn", "previous", "n1"), so).scene("a")
    np.testing.assert_array_equal(kept.read(), before)

    # catalog.json now holds run n2's item for a (with a change asset) and n1's for b.
    fs = get_fs(out, so)
    items = {}
    for name in ("a", "b"):
        d = json.loads(fs.cat_file(join_url(strip_protocol(out), "_hgn", "stac", f"{name}.json")))
        pystac.validation.validate_dict(d, extensions=[])  # core schema, offline
        items[name] = d
    assert items["a"]["properties"]["hgn:run_id"] == "n2" and "change" in items["a"]["assets"]
    assert items["b"]["properties"]["hgn:run_id"] == "n1" and "change" not in items["b"]["assets"]


def test_keep_previous_zero_keeps_nothing(tmp_path: Path) -> None:
    archive, out = tmp_path / "archive", str(tmp_path / "out")
    cfg = _cfg(None, keep_previous=0)
    write_zarr_scene(archive, "a", smooth_image(0, 3, 100, 120))
    with LocalExecutor(TinyLoader()) as ex:
        nightly(str(archive), out, cfg, executor=ex, run_id="n1")
        write_zarr_scene(archive, "a", smooth_image(5, 3, 100, 120))
        n2 = nightly(str(archive), out, cfg, executor=ex, run_id="n2")
    assert n2.processed_ok == ["a"] and n2.change_maps == {}
    assert not (tmp_path / "out" / "_hgn" / "previous").exists()
    res = CliRunner().invoke(app(), ["query", "changes", "--output", out, "--scene", "a"])
    assert res.exit_code == 2 and "no change layer" in res.output


def app():
    from pipeline.cli import app as cli

    return cli
