"""Storage options and URLs; catalog, reads and OME-Zarr writes against a real S3 server."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import zarr

from pipeline.catalog import Georef, catalog
from pipeline.errors import ConfigError, OutputError, SceneReadError, StorageError
from pipeline.io.omezarr import SceneWriter
from pipeline.io.readers import open_scene
from pipeline.storage import (
    S3Options,
    StorageOptions,
    get_fs,
    redact,
    resolve_url,
    storage_options_from,
)

AWS_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
            "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS")
# botocore's own retries for every S3 client the pipeline makes (pipeline.retries)
ADAPTIVE = {"retries": {"mode": "adaptive", "total_max_attempts": 5}}


@pytest.fixture
def clean_env(monkeypatch):
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- no server


@pytest.mark.parametrize(("url", "want"), [
    ("s3://bucket/a/b/", "s3://bucket/a/b"),
    ("s3://bucket", "s3://bucket"),
    ("S3://bucket//a//b", "s3://bucket/a/b"),
    ("file:///data/x/", "/data/x"),
    ("/data/x/../y", "/data/y"),
])
def test_resolve_url(url: str, want: str) -> None:
    assert resolve_url(url) == want


def test_resolve_url_relative_and_refusals(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_url("archive") == str(tmp_path / "archive")
    for bad, needle in (("", "empty"), ("gs://b/x", "scheme 'gs'"), ("s3:///x", "no bucket"),
                        ("file://host/x", "absolute path"),
                        ("s3://AKIA:topsecret@bucket/x", "must not carry credentials")):
        with pytest.raises(ConfigError, match=needle) as info:
            resolve_url(bad)
        assert "topsecret" not in str(info.value)


def test_options_from_config_take_precedence_over_env(clean_env) -> None:
    clean_env.setenv("AWS_ACCESS_KEY_ID", "env-key")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    clean_env.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    clean_env.setenv("AWS_REGION", "eu-west-1")
    assert storage_options_from(None) == {
        "key": "env-key", "secret": "env-secret",
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:2", "region_name": "eu-west-1"},
        "config_kwargs": ADAPTIVE,
    }
    cfg = S3Options(endpoint_url="http://127.0.0.1:3", key="cfg-key", secret="cfg-secret")
    opts = storage_options_from(cfg)
    assert (opts["key"], opts["secret"]) == ("cfg-key", "cfg-secret")
    assert opts["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:3",
                                     "region_name": "eu-west-1"}
    anon = storage_options_from(S3Options(anon=True))
    assert anon["anon"] is True and "key" not in anon


def test_no_region_unless_asked(clean_env) -> None:
    opts = storage_options_from(S3Options(endpoint_url="http://127.0.0.1:9"))
    assert opts == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
                    "config_kwargs": ADAPTIVE}


def test_credentials_never_in_reprs(clean_env) -> None:
    cfg = S3Options(key="AKIASECRETKEYID", secret="very-secret-value", token="tok-secret")
    opts = storage_options_from(cfg)
    for text in (repr(cfg), str(cfg), repr(opts), str(opts), str(cfg.model_dump()),
                 repr(pickle.loads(pickle.dumps(opts)))):
        for secret in ("AKIASECRETKEYID", "very-secret-value", "tok-secret"):
            assert secret not in text
    assert isinstance(opts, StorageOptions) and opts["secret"] == "very-secret-value"
    assert redact("failed for very-secret-value and AKIASECRETKEYID", opts) == (
        "failed for *** and ***")


def test_s3_options_validation() -> None:
    with pytest.raises(ValueError, match=r"s3\.key is set but s3\.secret is not"):
        S3Options(key="k")
    with pytest.raises(ValueError, match="endpoint_url"):
        S3Options(endpoint_url="127.0.0.1:8333")
    with pytest.raises(ValueError, match="extra"):
        S3Options(endpoint="http://x")


def test_local_fs_ignores_options(tmp_path) -> None:
    fs = get_fs(str(tmp_path), {"key": "ignored"})
    assert fs.protocol[0] == "file"


# --------------------------------------------------------------------------- real S3


@pytest.fixture(scope="module")
def s3_archive(s3_server, archive) -> str:
    """The mixed archive uploaded to its own bucket; returns its s3:// URL."""
    url = s3_server.make_bucket("hgn-archive") + "/prefix"
    fs = s3_server.filesystem()
    fs.put(str(archive.root) + "/", "hgn-archive/prefix/", recursive=True)
    fs.put(str(archive.hwc_root) + "/", "hgn-archive/hwc/", recursive=True)
    return url


@pytest.fixture(scope="module")
def s3_cat(s3_server, s3_archive):
    return catalog(s3_archive, s3_server.storage_options)


@pytest.mark.s3
def test_catalog_over_s3_matches_local(s3_server, s3_archive, s3_cat, archive) -> None:
    opts = s3_server.storage_options
    remote = s3_cat
    local = catalog(str(archive.root))
    assert [(s.scene_id, s.kind, s.shape, s.dtype, s.layout, s.array_path, s.georef)
            for s in remote.scenes] == [
        (s.scene_id, s.kind, s.shape, s.dtype, s.layout, s.array_path, s.georef)
        for s in local.scenes]
    assert remote.get("synth/s1").url == "s3://hgn-archive/prefix/synth/s1.zarr"
    assert {f.scene_id for f in remote.failures} == set(archive.failures)
    cut = next(f for f in remote.failures if f.scene_id == "bad/cut")
    assert "truncated" in cut.reason
    again = catalog(s3_archive + "/", opts)
    assert [s.fingerprint for s in again.scenes] == [s.fingerprint for s in remote.scenes]
    whole_bucket = catalog("s3://hgn-archive", opts)
    assert {s.scene_id.split("/", 1)[0] for s in whole_bucket.scenes} == {"prefix", "hwc"}
    assert "prefix/synth/s1" in {s.scene_id for s in whole_bucket.scenes}
    with pytest.raises(StorageError, match="does not exist"):
        catalog("s3://hgn-archive/no-such-prefix", opts)


@pytest.mark.s3
def test_window_reads_over_s3_equal_numpy(s3_server, s3_archive, s3_cat, archive) -> None:
    opts = s3_server.storage_options
    cat = s3_cat
    rng = np.random.default_rng(1)
    for scene in cat.scenes:
        reader = open_scene(scene, opts)
        want = archive.expected[scene.scene_id]
        y0, x0 = int(rng.integers(0, scene.height)), int(rng.integers(0, scene.width))
        y1 = int(rng.integers(y0 + 1, scene.height + 1))
        x1 = int(rng.integers(x0 + 1, scene.width + 1))
        np.testing.assert_array_equal(reader.read(y0, y1, x0, x1), want[:, y0:y1, x0:x1],
                                      err_msg=scene.scene_id)
    hwc = catalog(s3_archive.rsplit("/", 1)[0] + "/hwc", opts, layout="HWC")
    for scene in hwc.scenes:
        np.testing.assert_array_equal(open_scene(scene, opts).read(0, 20, 0, 20),
                                      archive.hwc_expected[scene.scene_id][:, :20, :20])
    dask_arr = pickle.loads(pickle.dumps(open_scene(cat.get("tiff/geo_rgb"), opts))).to_dask(64)
    np.testing.assert_array_equal(dask_arr.compute(), archive.expected["tiff/geo_rgb"])


@pytest.mark.s3
def test_catalog_from_aws_env_variables(s3_server, s3_archive, clean_env) -> None:
    for name, value in s3_server.env.items():
        clean_env.setenv(name, value)
    cat = catalog(s3_archive + "/synth", storage_options_from(None))
    assert [s.scene_id for s in cat.scenes] == ["s1", "s2"]


@pytest.mark.s3
def test_write_ome_zarr_to_another_bucket(s3_server) -> None:
    from ome_zarr_models import open_ome_zarr

    opts = s3_server.storage_options
    out = s3_server.make_bucket("hgn-output") + "/run1"
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, (100, 70), dtype=np.uint8)
    conf = rng.integers(0, 256, (100, 70), dtype=np.uint8)
    georef = Georef("EPSG:3857", (0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    writer = SceneWriter.create(out, "area/s1", 100, 70, 32, [("a", (0, 0, 0, 255)),
                                ("b", (255, 0, 0, 255)), ("c", (0, 255, 0, 255))],
                                {"arch": "hgn"}, georef=georef, storage_options=opts)
    for y in range(0, 100, 32):
        for x in range(0, 70, 64):
            writer.write_block(y, x, labels[y:y + 32, x:x + 64], conf[y:y + 32, x:x + 64])
    writer.finalize()
    reopened = SceneWriter.open(out, "area/s1", storage_options=opts)
    assert reopened.complete and reopened.url == "s3://hgn-output/run1/area/s1.ome.zarr"
    np.testing.assert_array_equal(reopened.read_level(0), labels)
    assert reopened.read_level(2).shape == (25, 18)
    group = zarr.open_group(reopened.url, mode="r", storage_options=dict(opts))
    model = open_ome_zarr(group)
    assert model.labels is not None
    assert group.attrs["hgn"]["georeference"]["crs"] == "EPSG:3857"


@pytest.mark.s3
def test_wrong_credentials_fail_without_leaking_them(s3_server, s3_archive, s3_cat) -> None:
    wrong = "wrong-secret-" + "x" * 20
    bad = {**s3_server.storage_options, "secret": wrong}
    secrets = (wrong, s3_server.secret)
    with pytest.raises(StorageError) as info:
        catalog(s3_archive, bad)
    assert "hgn-archive/prefix" in str(info.value)
    assert not any(s in str(info.value) for s in secrets)

    scene = s3_cat.get("plain_v3")
    with pytest.raises(SceneReadError) as read_info:
        open_scene(scene, bad).read(0, 10, 0, 10)
    assert "plain_v3" in str(read_info.value)
    assert not any(s in str(read_info.value) for s in secrets)

    with pytest.raises(OutputError) as out_info:
        SceneWriter.create("s3://hgn-archive/out", "s", 8, 8, 8, [("a", (0, 0, 0, 0))], {},
                           storage_options=bad)
    assert not any(s in str(out_info.value) for s in secrets)
    assert not any(s in repr(open_scene(scene, bad)) for s in secrets)


@pytest.mark.s3
@pytest.mark.parametrize("case", ["Upper_Case[1]", "x" * 80])
def test_s3_bucket_fixture_makes_valid_fresh_buckets(s3_bucket: str, s3_server, case) -> None:
    fs = s3_server.filesystem()
    name = s3_bucket.removeprefix("s3://")
    assert 3 <= len(name) <= 63 and name == name.lower()
    assert fs.ls(name) == []
    fs.pipe(f"{name}/k", b"v")
    assert fs.cat(f"{name}/k") == b"v"
