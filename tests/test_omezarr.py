"""OME-Zarr writer: spec validation, readers (ome-zarr-py, xarray), pyramid, georef, refusals."""

from __future__ import annotations

import multiprocessing
import pickle
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.catalog import Georef, catalog
from pipeline.errors import ConfigError, OutputError, WindowError
from pipeline.io.omezarr import (
    SceneWriter,
    mean_downsample,
    mode_downsample,
    scene_store_url,
)

CLASSES = [("background", (0, 0, 0, 0)), ("water", (0, 90, 200, 255)),
           ("road", (128, 128, 128, 255)), ("tree", (20, 160, 40, 255))]
PROVENANCE = {"arch": "hgn", "checkpoint_sha256": "ab" * 32, "config": {"chunk": 64},
              "input_url": "s3://archive/scene", "input_fingerprint": "f00d",
              "started": "2026-11-25T12:00:00+00:00"}
GEO = Georef("EPSG:32633", (500000.0, 10.0, 0.0, 4600000.0, 0.0, -10.0))
H, W, CHUNK = 333, 250, 64  # not multiples of the chunk: short edge chunks


def _mode_reference(a: np.ndarray) -> np.ndarray:
    """2x2 mode by counting, ties to the first value in row-major block order."""
    out = np.empty(((a.shape[0] + 1) // 2, (a.shape[1] + 1) // 2), a.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = a[2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel().tolist()
            counts = Counter(block)
            best = max(counts.values())
            out[i, j] = next(v for v in block if counts[v] == best)
    return out


def _mean_reference(a: np.ndarray) -> np.ndarray:
    out = np.empty(((a.shape[0] + 1) // 2, (a.shape[1] + 1) // 2), np.uint8)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = a[2 * i:2 * i + 2, 2 * j:2 * j + 2].astype(float)
            out[i, j] = int(np.floor(block.mean() + 0.5))
    return out


def _labels(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # blocky classes (so modes are meaningful) plus noise (so ties happen)
    coarse = rng.integers(0, 4, (H // 7 + 1, W // 7 + 1), dtype=np.uint8)
    labels = np.kron(coarse, np.ones((7, 7), np.uint8))[:H, :W]
    noise = rng.random((H, W)) < 0.3
    labels[noise] = rng.integers(0, 4, int(noise.sum()), dtype=np.uint8)
    return labels, rng.integers(0, 256, (H, W), dtype=np.uint8)


def _write(out: Path, scene_id: str = "tile/a", confidence: bool = True, **kw) -> SceneWriter:
    labels, conf = _labels()
    writer = SceneWriter.create(str(out), scene_id, H, W, CHUNK, CLASSES, PROVENANCE,
                                georef=GEO, confidence=confidence, **kw)
    block = 2 * CHUNK  # aligned blocks of 2x2 chunks, short at the edges
    for y in range(0, H, block):
        for x in range(0, W, block):
            writer.write_block(y, x, labels[y:y + block, x:x + block],
                               conf[y:y + block, x:x + block] if confidence else None)
    writer.finalize({"timings": {"infer_s": 1.5}})
    return writer


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> SceneWriter:
    return _write(tmp_path_factory.mktemp("out"))


def test_store_location_and_level0(written) -> None:
    labels, conf = _labels()
    assert written.url.endswith("/tile/a.ome.zarr")
    np.testing.assert_array_equal(written.read_level(0), labels)
    np.testing.assert_array_equal(written.read_level(0, "confidence"), conf)
    seg0 = zarr.open_array(written.url, path="labels/segmentation/0", mode="r")
    assert seg0.dtype == np.uint8 and seg0.chunks == (CHUNK, CHUNK)


def test_pyramid_levels_are_2x_mode_and_mean(written) -> None:
    assert written.levels >= 3
    labels, conf = _labels()
    for level in range(1, written.levels):
        labels, conf = _mode_reference(labels), _mean_reference(conf)
        assert written.level_shape(level) == labels.shape
        np.testing.assert_array_equal(written.read_level(level), labels, err_msg=f"level {level}")
        np.testing.assert_array_equal(written.read_level(level, "confidence"), conf)


def test_mode_downsample_never_invents_ids_and_breaks_ties_in_order() -> None:
    a = np.array([[1, 2, 5], [2, 1, 5], [3, 4, 9]], np.uint8)
    # block (1,2,2,1): tie -> 1 (first); (5,5) edge column -> 5; (3,4) -> 3; corner -> 9
    np.testing.assert_array_equal(mode_downsample(a), [[1, 5], [3, 9]])
    rng = np.random.default_rng(3)
    b = rng.choice(np.array([0, 7, 200], np.uint8), size=(31, 18))
    np.testing.assert_array_equal(mode_downsample(b), _mode_reference(b))
    assert set(np.unique(mode_downsample(b))) <= {0, 7, 200}
    c = rng.integers(0, 256, (9, 14), dtype=np.uint8)
    np.testing.assert_array_equal(mean_downsample(c), _mean_reference(c))


def test_validates_with_ome_zarr_models(written) -> None:
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.image import Image

    model = open_ome_zarr(zarr.open_group(written.url, mode="r"))
    assert isinstance(model, Image)
    assert model.attributes.ome.version == "0.5"
    labels = model.labels
    assert labels is not None and labels.attributes.ome.labels == ["segmentation"]
    seg = labels.get_image_labels_group("segmentation")
    label_meta = seg.attributes.ome.image_label
    assert [c.label_value for c in label_meta.colors] == [0, 1, 2, 3]
    assert [tuple(c.rgba) for c in label_meta.colors] == [rgba for _, rgba in CLASSES]
    assert [p.model_dump()["name"] for p in label_meta.properties] == [n for n, _ in CLASSES]
    datasets = seg.attributes.ome.multiscales[0].datasets
    scales = [d.coordinateTransformations[0].scale for d in datasets]
    assert scales == [[2.0**k, 2.0**k] for k in range(written.levels)]
    assert datasets[2].coordinateTransformations[1].translation == [1.5, 1.5]


def test_reads_with_ome_zarr_py(written) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    nodes = list(Reader(parse_url(written.url))())
    root = nodes[0]
    assert root.load(Multiscales) is not None
    assert [d.shape for d in root.data] == [written.level_shape(k) for k in range(written.levels)]
    label_nodes = [n for n in nodes if n.load(Label) is not None]
    assert len(label_nodes) == 1
    seg = label_nodes[0]
    assert seg.metadata["name"] == "segmentation"
    assert seg.metadata["properties"][1] == {"name": "water"}
    assert seg.metadata["color"][1] == [0.0, 90 / 255, 200 / 255, 1.0]
    np.testing.assert_array_equal(np.asarray(seg.data[1]), written.read_level(1))


def test_opens_with_xarray_and_carries_georef(written) -> None:
    import xarray as xr

    others = [str(k) for k in range(1, written.levels)]
    ds = xr.open_zarr(written.url, group="labels/segmentation", consolidated=False,
                      drop_variables=others)
    da = ds["0"]
    assert da.dims == ("y", "x") and da.shape == (H, W)
    np.testing.assert_array_equal(da.values, _labels()[0])
    assert ds.attrs["proj:code"] == "EPSG:32633"
    # rasterio Affine order: a=dx, b=rx, c=x0, d=ry, e=dy, f=y0
    assert da.attrs["spatial:transform"] == [10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0]
    lvl2 = xr.open_zarr(written.url, group="labels/segmentation", consolidated=False,
                        drop_variables=["0", "1", *others[2:]])["2"]
    assert lvl2.attrs["spatial:transform"] == [40.0, 0.0, 500000.0, 0.0, -40.0, 4600000.0]
    assert lvl2.attrs["spatial:shape"] == list(written.level_shape(2))


def test_provenance_and_status(written) -> None:
    hgn = written.attrs["hgn"]
    for key, value in PROVENANCE.items():
        assert hgn[key] == value
    assert hgn["georeference"] == {"crs": "EPSG:32633", "transform": list(GEO.transform)}
    assert hgn["status"] == "complete" and written.complete
    assert hgn["timings"] == {"infer_s": 1.5}
    assert hgn["package_version"] and hgn["finished"] >= hgn["started"]


def test_output_is_catalogued_back_with_its_georef(written) -> None:
    # the root image (confidence) is an OME-Zarr image: the catalog reads its georef attrs
    root = written.url.rsplit("/tile/", 1)[0]
    info = catalog(root).get("tile/a")
    assert info.kind == "ome-zarr" and info.shape == (1, H, W)
    assert info.georef == GEO


def test_without_confidence_labels_still_validate(tmp_path: Path) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader
    from ome_zarr_models.v05.image_label import ImageLabel

    writer = _write(tmp_path, "plain", confidence=False, levels=3)
    root_attrs = writer.attrs
    assert root_attrs["ome"] == {"version": "0.5"}
    assert "0" not in zarr.open_group(writer.url, mode="r")
    seg_group = zarr.open_group(writer.url, path="labels/segmentation", mode="r")
    model = ImageLabel.from_zarr(seg_group)
    assert len(model.attributes.ome.multiscales[0].datasets) == 3
    assert model.attributes.ome.image_label.source is None
    nodes = list(Reader(parse_url(f"{writer.url}/labels/segmentation"))())
    assert nodes[0].load(Label) is not None
    with pytest.raises(ConfigError, match="layer='confidence'"):
        writer.read_level(0, "confidence")


def test_write_block_refuses_unaligned_or_bad_blocks(tmp_path: Path) -> None:
    writer = SceneWriter.create(str(tmp_path), "s", H, W, CHUNK, CLASSES, PROVENANCE)
    ok = np.zeros((CHUNK, CHUNK), np.uint8)
    for y0, x0, shape in ((32, 0, (64, 64)), (0, 0, (60, 64)), (320, 0, (20, 64)),
                          (0, 192, (64, 64)), (-64, 0, (64, 64))):
        with pytest.raises(WindowError, match="not chunk-aligned"):
            writer.write_block(y0, x0, np.zeros(shape, np.uint8), np.zeros(shape, np.uint8))
    writer.write_block(320, 192, np.ones((13, 58), np.uint8), np.ones((13, 58), np.uint8))
    with pytest.raises(WindowError, match="uint8"):
        writer.write_block(0, 0, ok.astype(np.int32), ok)
    with pytest.raises(WindowError, match="pass confidence"):
        writer.write_block(0, 0, ok)
    assert writer.read_level(0)[320:, 192:].min() == 1


@pytest.mark.parametrize("scene_id", ["../escape", "/abs/path", "a/../../b", "a//b", "./a", "",
                                      "a\\..\\b"])
def test_path_escapes_are_refused(tmp_path: Path, scene_id: str) -> None:
    with pytest.raises(OutputError, match=r"refused|empty"):
        scene_store_url(str(tmp_path), scene_id)
    with pytest.raises(OutputError):
        SceneWriter.create(str(tmp_path), scene_id, 8, 8, 8, CLASSES, PROVENANCE)
    assert list(tmp_path.iterdir()) == []


def test_existing_store_needs_overwrite_or_open(tmp_path: Path) -> None:
    first = SceneWriter.create(str(tmp_path), "s", 100, 90, 32, CLASSES, PROVENANCE, levels=4)
    with pytest.raises(OutputError, match="already exists"):
        SceneWriter.create(str(tmp_path), "s", 100, 90, 32, CLASSES, PROVENANCE)
    again = SceneWriter.open(str(tmp_path), "s")
    assert (again.height, again.width, again.chunk, again.levels, again.confidence) == (
        first.height, first.width, first.chunk, first.levels, first.confidence)
    assert not again.complete
    replaced = SceneWriter.create(str(tmp_path), "s", 10, 10, 8, CLASSES, PROVENANCE,
                                  overwrite=True)
    assert SceneWriter.open(str(tmp_path), "s").height == 10 == replaced.height
    with pytest.raises(OutputError, match="no output store"):
        SceneWriter.open(str(tmp_path), "missing")


def test_default_levels_reach_one_chunk(tmp_path: Path) -> None:
    writer = SceneWriter.create(str(tmp_path), "big", 5000, 300, 256, CLASSES, PROVENANCE)
    assert writer.levels == 6  # 5000 -> 2500 -> 1250 -> 625 -> 313 -> 157 <= 256
    small = SceneWriter.create(str(tmp_path), "small", 5, 3, 256, CLASSES, PROVENANCE)
    assert small.levels == 3 and small.level_shape(2) == (2, 1)


def test_bad_create_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="color"):
        SceneWriter.create(str(tmp_path), "s", 8, 8, 8, [("x", (1, 2))], PROVENANCE)
    with pytest.raises(ConfigError, match="levels=0"):
        SceneWriter.create(str(tmp_path), "s", 8, 8, 8, CLASSES, PROVENANCE, levels=0)
    with pytest.raises(ConfigError, match="height=0"):
        SceneWriter.create(str(tmp_path), "s", 0, 8, 8, CLASSES, PROVENANCE)


def _write_from_child(writer: SceneWriter, y0: int) -> None:
    writer.write_block(y0, 0, np.full((32, 40), 3, np.uint8), np.full((32, 40), 200, np.uint8))


def test_pickled_writer_writes_from_another_process(tmp_path: Path) -> None:
    writer = SceneWriter.create(str(tmp_path), "w", 64, 40, 32, CLASSES, PROVENANCE, levels=3)
    assert len(pickle.dumps(writer)) < 5_000
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_write_from_child, [writer, writer], [0, 32], timeout=60))
    writer.finalize()
    assert (writer.read_level(0) == 3).all() and (writer.read_level(2) == 3).all()
    assert (writer.read_level(1, "confidence") == 200).all()


def test_exists_and_credentials_scrubbed_from_provenance(tmp_path: Path) -> None:
    assert not SceneWriter.exists(str(tmp_path), "p")
    secret = "s3cr3t/Value+with-symbols"
    options = {"key": "AKIAEXAMPLEKEY", "secret": secret}  # ignored for local writes
    provenance = {**PROVENANCE, "config": {"s3": {"key": "AKIAEXAMPLEKEY", "secret": secret}}}
    writer = SceneWriter.create(str(tmp_path), "p", 16, 16, 8, CLASSES, provenance,
                                storage_options=options)
    assert SceneWriter.exists(str(tmp_path), "p")
    writer.finalize({"note": f"used {secret}"})
    stored = (tmp_path / "p.ome.zarr/zarr.json").read_text()
    assert secret not in stored and "AKIAEXAMPLEKEY" not in stored
    assert writer.attrs["hgn"]["config"]["s3"] == {"key": "***", "secret": "***"}
    assert secret not in repr(writer) and secret not in repr(pickle.loads(pickle.dumps(writer)))


class _Recording:
    """Wraps a zarr array; records the size of every region read and written."""

    def __init__(self, array, log: list) -> None:
        self._array, self._log = array, log
        self.shape, self.chunks = array.shape, array.chunks

    def __getitem__(self, key):
        out = self._array[key]
        self._log.append(("read", out.shape))
        return out

    def __setitem__(self, key, value) -> None:
        ys, xs = key
        chunk_aligned = ys.start % self.chunks[0] == 0 and xs.start % self.chunks[1] == 0
        self._log.append(("write", value.shape, chunk_aligned))
        self._array[key] = value


def test_pyramid_reads_bounded_regions_and_writes_whole_chunks(tmp_path: Path,
                                                                monkeypatch) -> None:
    from pipeline.io.omezarr import _pyramid, _writer

    writer = _write(tmp_path, "bounded", confidence=False, levels=4)
    log: list = []
    real_open = _writer.open_array
    monkeypatch.setattr(_pyramid, "PYRAMID_BLOCK_PIXELS", 1)  # one coarse chunk per task
    monkeypatch.setattr(_writer, "open_array",
                        lambda *a, **k: _Recording(real_open(*a, **k), log))
    writer.finalize()
    reads = [shape for kind, shape, *_ in log if kind == "read"]
    writes = [entry for entry in log if entry[0] == "write"]
    assert max(h * w for h, w in reads) <= (2 * CHUNK) ** 2  # a 2x2 block of fine chunks
    assert sum(h * w for h, w in reads) == sum(  # every finer pixel read exactly once
        int(np.prod(writer.level_shape(k))) for k in range(writer.levels - 1))
    assert all(aligned for _, _, aligned in writes)
    assert max(h * w for _, (h, w), _ in writes) <= CHUNK * CHUNK
    labels = _labels()[0]
    for level in range(1, writer.levels):
        labels = _mode_reference(labels)
        np.testing.assert_array_equal(writer.read_level(level), labels)
