"""Tests of the procedural UHR benchmark (hgn_model.data.synthetic).

The class-property tests run on three default-size (2448 x 2448) scenes. Labels do not depend on
the nuisances, so the label tests use the nuisance-free scenes and the texture test checks both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull

from hgn_model.data.synthetic import (
    AGRICULTURE,
    BUILDING,
    CLASSES,
    CONTEXT_CLASSES,
    FOREST,
    NUM_CLASSES,
    PLANTATION,
    RANGELAND,
    RIVER,
    ROAD,
    THIN_CLASSES,
    UNKNOWN,
    URBAN,
    WATER,
    Scene,
    generate_scene,
    main,
    make_archive,
    preview_png,
    read_scene_zarr,
    write_scene_zarr,
)

SEEDS = (0, 1, 2)
REGION_CLASSES = (URBAN, AGRICULTURE, RANGELAND, FOREST, PLANTATION, WATER)


@pytest.fixture(scope="module")
def clean_scenes() -> list[Scene]:
    return [generate_scene(s, nuisances=False) for s in SEEDS]


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [generate_scene(s) for s in SEEDS]


# --- API and arguments -------------------------------------------------------------------------


def test_class_table_matches_contract() -> None:
    assert len(CLASSES) == NUM_CLASSES == 10
    assert CLASSES[UNKNOWN].name == "unknown"
    assert len({c.name for c in CLASSES}) == NUM_CLASSES
    for c in CLASSES:
        assert len(c.color) == 4 and all(isinstance(v, int) and 0 <= v <= 255 for v in c.color)
    assert len({c.color for c in CLASSES}) == NUM_CLASSES, "label colours must be distinct"
    assert set(THIN_CLASSES) == {ROAD, RIVER, BUILDING}
    assert set(CONTEXT_CLASSES) == {FOREST, PLANTATION}


def test_same_seed_same_scene_other_seed_differs() -> None:
    a, b = generate_scene(7, 300, 420), generate_scene(7, 300, 420)
    c = generate_scene(8, 300, 420)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.params == b.params and a.seed == 7
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("shape", [(77, 3001), (1000, 1333), (16, 16), (1, 5)])
def test_odd_sizes(shape: tuple[int, int]) -> None:
    scene = generate_scene(3, *shape)
    assert scene.image.shape == (3, *shape) and scene.image.dtype == np.uint8
    assert scene.labels.shape == shape and scene.labels.dtype == np.uint8
    assert scene.labels.max() < NUM_CLASSES
    assert scene.image.flags.c_contiguous and scene.labels.flags.c_contiguous


def test_nuisances_change_pixels_not_labels() -> None:
    noisy, clean = generate_scene(5, 256, 300), generate_scene(5, 256, 300, nuisances=False)
    assert np.array_equal(noisy.labels, clean.labels)
    diff = np.abs(noisy.image.astype(np.int16) - clean.image.astype(np.int16))
    assert diff.mean() > 2.0, f"nuisances changed the image by only {diff.mean():.2f} DN"


def test_uint16_and_nir_band_are_the_same_scene() -> None:
    base = generate_scene(11, 400, 500)
    full = generate_scene(11, 400, 500, bands=4, dtype="uint16")
    twelve = generate_scene(11, 400, 500, bands=4, dtype="uint16", bit_depth=12)
    assert full.image.shape == (4, 400, 500) and full.image.dtype == np.uint16
    assert np.array_equal(full.labels, base.labels) and np.array_equal(twelve.labels, base.labels)
    assert full.params["value_max"] == 65535 and twelve.params["value_max"] == 4095
    assert 255 * 40 < int(full.image.max()) <= 65535
    assert 255 < int(twelve.image.max()) <= 4095
    # same radiometry at a finer quantisation: RGB agrees with the uint8 scene within one DN
    rgb = full.image[:3].astype(np.float64) / 257.0
    assert np.abs(rgb - base.image).max() <= 1.0
    assert np.unique(full.image[:3] % 257).size > 100, "uint16 values are not just uint8 * 257"


def test_nir_band_is_high_for_vegetation_low_for_water() -> None:
    scene = generate_scene(0, 1200, 1200, bands=4, nuisances=False)
    nir = scene.image[3].astype(np.float64)
    trees = np.isin(scene.labels, CONTEXT_CLASSES)
    water = scene.labels == WATER
    assert trees.sum() > 1000 and water.sum() > 1000, "seed 0 should hold trees and water"
    assert nir[trees].mean() > 4 * nir[water].mean()
    assert nir[trees].mean() > 1.5 * nir[scene.labels == URBAN].mean()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bands": 5}, "bands=5"),
        ({"dtype": "float32"}, "dtype='float32'"),
        ({"height": 0}, "height=0"),
        ({"seed": -1}, "seed=-1"),
        ({"dtype": "uint16", "bit_depth": 8}, "bit_depth=8"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    args = {"seed": 0, "height": 8, "width": 8} | kwargs
    with pytest.raises(ValueError, match=field.replace("(", r"\(")):
        generate_scene(**args)


# --- class properties (default size) -----------------------------------------------------------


def test_every_class_appears(clean_scenes: list[Scene]) -> None:
    seen = set()
    for scene in clean_scenes:
        present = set(np.unique(scene.labels).tolist())
        assert len(present) >= NUM_CLASSES - 1, f"seed {scene.seed}: only {sorted(present)}"
        seen |= present
    assert seen == set(range(NUM_CLASSES))


def test_class_shares_are_trainable(clean_scenes: list[Scene]) -> None:
    shares = np.mean(
        [
            np.bincount(s.labels.ravel(), minlength=NUM_CLASSES) / s.labels.size
            for s in clean_scenes
        ],
        axis=0,
    )
    named = {CLASSES[i].name: round(float(v), 4) for i, v in enumerate(shares)}
    for cls in range(1, NUM_CLASSES):
        floor = 0.002 if cls == BUILDING else 0.005
        assert shares[cls] >= floor, f"class {CLASSES[cls].name} too rare: {named}"
    assert 0.003 <= shares[UNKNOWN] <= 0.08, f"class 0 should be a small share: {named}"


def _local_width(mask: np.ndarray) -> np.ndarray:
    """Local width of every mask pixel: twice its Euclidean distance to the nearest non-mask px.

    On a straight stroke of width w the centre pixels read w or w + 1 (pixel-centre
    distances), so widths up to 6 px read at most 7.
    """
    return 2.0 * ndi.distance_transform_edt(mask)[mask]


@pytest.mark.parametrize("cls", [ROAD, RIVER])
def test_roads_and_rivers_are_at_most_6px_wide(clean_scenes: list[Scene], cls: int) -> None:
    # Where two strokes cross, their union holds a wider disc (a right-angle crossing of two
    # 6 px roads holds an 8.5 px one); crossings are a tiny share of the pixels, so the test
    # bounds the 99th percentile and the share of pixels wider than 7 px.
    for scene in clean_scenes:
        width = _local_width(scene.labels == cls)
        name = f"seed {scene.seed} {CLASSES[cls].name}"
        assert width.size > 5000, f"{name}: only {width.size} px"
        assert np.percentile(width, 99) <= 7.0, f"{name}: p99 width {np.percentile(width, 99)}"
        assert np.mean(width > 7.0) < 0.02, f"{name}: {np.mean(width > 7.0):.3%} px over 7 px"
        assert np.percentile(width, 50) >= 2.0, f"{name}: median width under 2 px"


def test_buildings_are_small(clean_scenes: list[Scene]) -> None:
    for scene in clean_scenes:
        mask = scene.labels == BUILDING
        assert _local_width(mask).max() <= 10.0  # sides <= 8 px, +1 px of rasterisation each way
        lab, n = ndi.label(mask)
        sides = [max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndi.find_objects(lab)]
        assert n > 100 and max(sides) <= 14, f"seed {scene.seed}: {n} buildings, max {max(sides)}"


def _block_mode(labels: np.ndarray, factor: int) -> np.ndarray:
    """Majority class of each ``factor`` x ``factor`` block (the best map at 1/factor)."""
    h, w = labels.shape[0] // factor, labels.shape[1] // factor
    block = (np.arange(h)[:, None] * w + np.arange(w)[None, :]).repeat(factor, 0).repeat(factor, 1)
    key = block * NUM_CLASSES + labels[: h * factor, : w * factor]
    counts = np.bincount(key.ravel(), minlength=h * w * NUM_CLASSES)
    return counts.reshape(h, w, NUM_CLASSES).argmax(-1)


def _oracle_iou(labels: np.ndarray, mode: np.ndarray, cls: int) -> float:
    """IoU of ``cls`` between the labels and the block-majority map upsampled by nearest."""
    factor = labels.shape[0] // mode.shape[0]
    up = np.kron(mode == cls, np.ones((factor, factor), dtype=bool))
    truth = labels[: up.shape[0], : up.shape[1]] == cls
    return float((up & truth).sum() / max((up | truth).sum(), 1))


def _pure_share(labels: np.ndarray, cls: int, factor: int = 4) -> float:
    """Share of ``cls`` pixels lying in 4x4 blocks the class fills (area average == 1)."""
    h, w = (labels.shape[0] // factor) * factor, (labels.shape[1] // factor) * factor
    mask = labels[:h, :w] == cls
    cover = mask.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    return float((cover == 1.0).sum() * factor * factor / max(mask.sum(), 1))


def test_thin_classes_vanish_at_quarter_resolution(clean_scenes: list[Scene]) -> None:
    # At 1/4 (the deep branch's input) even a perfect classifier loses much of a thin class,
    # and at 1/16 (its first stage) nothing is left; region classes barely notice.
    for scene in clean_scenes:
        lab = scene.labels
        mode4, mode16 = _block_mode(lab, 4), _block_mode(lab, 16)
        for cls in THIN_CLASSES:
            name = f"seed {scene.seed} {CLASSES[cls].name}"
            pure, iou4, iou16 = (
                _pure_share(lab, cls),
                _oracle_iou(lab, mode4, cls),
                _oracle_iou(lab, mode16, cls),
            )
            assert pure <= 0.35 and iou4 <= 0.75 and iou16 <= 0.1, (name, pure, iou4, iou16)
        for cls in REGION_CLASSES:
            if (lab == cls).sum() > 50_000:
                name = f"seed {scene.seed} {CLASSES[cls].name}"
                # (urban is the lowest: streets and buildings cut into it)
                pure, iou4 = _pure_share(lab, cls), _oracle_iou(lab, mode4, cls)
                assert pure >= 0.75 and iou4 >= 0.85, (name, pure, iou4)


_INTERIOR_MARGIN = 12  # px from any other class: keeps region borders out of the statistics


def _interiors(labels: np.ndarray) -> np.ndarray:
    """Pixels whose whole 25 x 25 neighbourhood, inside the scene, has their own label."""
    size = 2 * _INTERIOR_MARGIN + 1
    # constant padding 0 / 255 makes the scene edge count as another class
    low = ndi.minimum_filter(labels, size, mode="constant", cval=0)
    return low == ndi.maximum_filter(labels, size, mode="constant", cval=255)


def _contrast(image: np.ndarray) -> np.ndarray:
    """Per band, r = value / (15 px local mean) - 1: texture with illumination divided out."""
    x = image.astype(np.float32) + 1.0
    return np.stack([band / ndi.uniform_filter(band, 15) - 1.0 for band in x])


def _class_stats(scene_list: list[Scene]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per class, pooled over scenes: raw (mean, std) per band and texture statistics per band
    (contrast std, mean |contrast step| at lags 1 and 4), weighted by interior pixel count.

    Evaluated on interior pixels of a 3 px lattice: ample samples, a ninth of the work.
    """
    sums: dict[int, list] = {}
    for scene in scene_list:
        inside = _interiors(scene.labels)
        x = scene.image.astype(np.float32)
        r = _contrast(scene.image)
        for cls in (FOREST, PLANTATION, URBAN, AGRICULTURE, RANGELAND):
            ys, xs = np.nonzero((inside & (scene.labels == cls))[::3, ::3])
            ys, xs = ys * 3, xs * 3  # interior pixels are >= 12 px from the image edge
            if ys.size == 0:
                continue
            raw = np.array([[b[ys, xs].mean(), b[ys, xs].std()] for b in x])
            tex = np.array(
                [
                    (
                        b[ys, xs].std(),
                        np.abs(b[ys, xs + 1] - b[ys, xs]).mean(),
                        np.abs(b[ys, xs + 4] - b[ys, xs]).mean(),
                    )
                    for b in r
                ]
            )
            acc = sums.setdefault(cls, [0, 0.0, 0.0])
            acc[0] += ys.size
            acc[1] = acc[1] + raw * ys.size
            acc[2] = acc[2] + tex * ys.size
    for cls, (n, _, _) in sums.items():
        assert n > 2_000, f"class {CLASSES[cls].name}: only {n} interior samples"
    return {cls: (raw / n, tex / n) for cls, (n, raw, tex) in sums.items()}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a - b) / np.abs(a)).max())


def test_context_pair_shares_local_texture(clean_scenes: list[Scene], scenes: list[Scene]) -> None:
    # Same generator for both: only sampling differences remain (bounded by the tolerances).
    # Without nuisances raw values must match too; with them, illumination varies by place,
    # so the illumination-free contrast statistics carry the claim.
    for scene_list, raw_tol, tex_tol in ((clean_scenes, 0.08, 0.06), (scenes, 0.10, 0.12)):
        stats = _class_stats(scene_list)
        (f_raw, f_tex), (p_raw, p_tex) = stats[FOREST], stats[PLANTATION]
        assert _rel(f_raw, p_raw) <= raw_tol, (f_raw, p_raw)
        assert _rel(f_tex, p_tex) <= tex_tol, (f_tex, p_tex)
        # the statistics can tell textures apart: other classes differ by far more
        for other in (URBAN, AGRICULTURE, RANGELAND):
            o_raw, o_tex = stats[other]
            assert _rel(f_raw, o_raw) >= 0.3 and _rel(f_tex, o_tex) >= 0.3, CLASSES[other].name


def _rectangularity(mask: np.ndarray) -> float:
    """Area / area of the smallest rotated bounding rectangle (1 for a rectangle)."""
    ys, xs = np.nonzero(mask ^ ndi.binary_erosion(mask))
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    hull = pts[ConvexHull(pts).vertices]
    best = np.inf
    for angle in np.deg2rad(np.arange(0.0, 90.0, 0.5)):
        c, s = np.cos(angle), np.sin(angle)
        u, v = hull @ np.array([c, s]), hull @ np.array([-s, c])
        best = min(best, (np.ptp(u) + 1) * (np.ptp(v) + 1))
    return float(mask.sum() / best)


def _components(labels: np.ndarray, cls: int) -> list[np.ndarray]:
    """Large components of ``cls`` with thin-class gaps closed, away from clouds and edges.

    Roads and rivers crossing a region cut it; a 9 x 9 closing over the class plus the thin
    pixels touching it restores the region's outline.
    """
    mask = labels == cls
    thin = np.isin(labels, THIN_CLASSES) & ndi.maximum_filter(mask, 9)
    grown = mask | thin
    closed = ndi.minimum_filter(ndi.maximum_filter(grown, 9), 9) & grown
    lab, _ = ndi.label(closed)
    unknown_near = ndi.maximum_filter(labels == UNKNOWN, 7)
    out = []
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        comp = lab[sl] == i
        touches_edge = sl[0].start == 0 or sl[1].start == 0
        touches_edge |= sl[0].stop == labels.shape[0] or sl[1].stop == labels.shape[1]
        if comp.sum() >= 20_000 and not touches_edge and not (comp & unknown_near[sl]).any():
            out.append(np.pad(comp, 1))  # cropped to its box, with a 1 px empty margin
    return out


def test_context_pair_differs_by_layout(clean_scenes: list[Scene]) -> None:
    # Documented cue: plantations are straight-edged (rotated) rectangles of the field grid,
    # forests irregular blobs. Rectangularity ~1 for the first, well below for the second.
    plantation, forest = [], []
    for scene in clean_scenes:
        comps = _components(scene.labels, PLANTATION)
        plantation += [_rectangularity(c) for c in comps]
        forest += [_rectangularity(c) for c in _components(scene.labels, FOREST)]
        # regions hundreds of px across: only a wide receptive field sees the outline
        assert all(ndi.distance_transform_edt(c).max() >= 50 for c in comps)
    assert len(plantation) >= 2 and len(forest) >= 3, (plantation, forest)
    assert min(plantation) >= 0.85, plantation
    assert np.median(forest) <= 0.7, forest
    assert max(forest) < min(plantation), (forest, plantation)


def test_plantations_keep_away_from_forest(clean_scenes: list[Scene]) -> None:
    for scene in clean_scenes:
        # square window: stricter than the documented Euclidean gap
        near_forest = ndi.maximum_filter(scene.labels == FOREST, 63)
        assert not (near_forest & (scene.labels == PLANTATION)).any(), f"seed {scene.seed}"


# --- zarr, archive, preview, CLI ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("zarr_format", "layout"), [(3, "CHW"), (2, "CHW"), (3, "HWC"), (2, "HWC")]
)
def test_zarr_round_trip(tmp_path: Path, zarr_format: int, layout: str) -> None:
    import zarr

    scene = generate_scene(21, 130, 170, bands=4, dtype="uint16")
    path = tmp_path / "scene.zarr"
    write_scene_zarr(path, scene, chunks=64, zarr_format=zarr_format, layout=layout)
    meta = "zarr.json" if zarr_format == 3 else ".zgroup"
    assert (path / meta).is_file()
    group = zarr.open_group(str(path), mode="r")
    stored = group["image"]
    assert stored.shape == ((4, 130, 170) if layout == "CHW" else (130, 170, 4))
    assert stored.chunks == ((4, 64, 64) if layout == "CHW" else (64, 64, 4))
    assert group["labels"].dtype == np.uint8
    record = group.attrs["hgn_synthetic"]
    assert record["seed"] == 21 and record["params"]["bands"] == 4
    assert [c["name"] for c in record["classes"]] == [c.name for c in CLASSES]
    if zarr_format == 3:
        assert stored.metadata.dimension_names == (
            ("c", "y", "x") if layout == "CHW" else ("y", "x", "c")
        )
    back = read_scene_zarr(path)
    assert np.array_equal(back.image, scene.image) and back.image.dtype == np.uint16
    assert np.array_equal(back.labels, scene.labels)
    assert back.seed == 21 and back.params == scene.params


def test_zarr_bad_arguments(tmp_path: Path) -> None:
    scene = generate_scene(0, 8, 8)
    with pytest.raises(ValueError, match="layout='WHC'"):
        write_scene_zarr(tmp_path / "a.zarr", scene, layout="WHC")
    with pytest.raises(ValueError, match="zarr_format=4"):
        write_scene_zarr(tmp_path / "a.zarr", scene, zarr_format=4)
    with pytest.raises(ValueError, match="lacks array"):
        import zarr

        zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
        read_scene_zarr(tmp_path / "empty.zarr")


def test_make_archive(tmp_path: Path) -> None:
    paths = make_archive(tmp_path / "arch", [4, 9], [(60, 90), (75, 50)], zarr_format=2)
    assert [Path(p).name for p in paths] == ["scene-4.zarr", "scene-9.zarr"]
    for p, seed, shape in zip(paths, (4, 9), ((60, 90), (75, 50)), strict=True):
        back = read_scene_zarr(p)
        assert back.labels.shape == shape
        assert np.array_equal(back.image, generate_scene(seed, *shape).image)
    same = make_archive(tmp_path / "one", [1, 2], (40, 30))
    assert all(read_scene_zarr(p).labels.shape == (40, 30) for p in same)
    with pytest.raises(ValueError, match="3 entries for 2 seeds"):
        make_archive(tmp_path / "bad", [1, 2], [(8, 8), (8, 8), (8, 8)])


def test_preview_png(tmp_path: Path) -> None:
    scene = generate_scene(2, 100, 150, bands=4, dtype="uint16")
    path = preview_png(scene, tmp_path / "p.png")
    with Image.open(path) as im:
        assert im.size == (2 * 150 + 8, 100) and im.mode == "RGB"
        right = np.asarray(im)[:, 158:]
    lut = np.array([c.color[:3] for c in CLASSES], dtype=np.uint8)
    assert np.array_equal(right, lut[scene.labels])
    with Image.open(preview_png(scene, tmp_path / "s.png", max_width=154)) as im:
        assert im.size[0] <= 154


def test_cli_writes_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = main(
        [
            str(out),
            "--seeds",
            "3",
            "4",
            "--sizes",
            "50x60",
            "--bands",
            "4",
            "--dtype",
            "uint16",
            "--bit-depth",
            "12",
            "--preview",
            str(tmp_path / "png"),
        ]
    )
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["seed"] for x in lines] == [3, 4]
    back = read_scene_zarr(lines[0]["path"])
    assert back.image.shape == (4, 50, 60) and int(back.image.max()) <= 4095
    assert Path(lines[1]["preview"]).is_file()


def test_cli_help_runs_as_module() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "hgn_model.data.synthetic", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "--seeds" in res.stdout and "--zarr-format" in res.stdout
    assert "RuntimeWarning" not in res.stderr, res.stderr  # the module must run only once


def test_file_url_round_trip(tmp_path: Path) -> None:
    scene = generate_scene(6, 40, 50)
    url = (tmp_path / "u.zarr").as_uri()
    assert write_scene_zarr(url, scene, storage_options={}) == url
    back = read_scene_zarr(url)
    assert np.array_equal(back.image, scene.image) and np.array_equal(back.labels, scene.labels)


@pytest.mark.s3
def test_archive_on_s3(s3_server, s3_bucket: str) -> None:
    opts = s3_server.storage_options
    paths = make_archive(
        f"{s3_bucket}/bench/", [5, 6], (70, 90), bands=4, dtype="uint16", storage_options=opts
    )
    assert paths == [f"{s3_bucket}/bench/scene-5.zarr", f"{s3_bucket}/bench/scene-6.zarr"]
    back = read_scene_zarr(paths[1], storage_options=opts)
    assert np.array_equal(back.image, generate_scene(6, 70, 90, bands=4, dtype="uint16").image)
    assert back.seed == 6 and back.params["value_max"] == 65535
