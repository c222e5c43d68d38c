"""Window reads of one COG, side by side: the rasterio reader against the alternatives.

The pipeline reads GDAL rasters through rasterio (``pipeline/io/formats/raster.py``): locally
by path, on S3 with GDAL's own ``/vsis3/`` client. This script times the same random windows
(the size of a default work unit, 2048 + 2 x 256 px halo, and smaller ones) through

- ``rasterio``: the pipeline's reader (``open_scene``), local and ``/vsis3/``;
- ``rasterio_opener``: rasterio fed by an fsspec/s3fs file object (``opener=``), S3 only;
- ``tifffile``: the former reader (tifffile's zarr store over a file or an s3fs file).

Every path must return identical pixels. Prints JSON (Mpx/s per path and the ratios) and
writes ``bench/results/readers.json``. Usage: ``python bench/readers.py [--size 4096]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

WINDOWS = 24  # per path; seeded, identical for every path


def _write_cog(path: Path, size: int) -> None:
    import rasterio

    rng = np.random.default_rng(0)
    small = rng.integers(500, 4000, (3, size // 64 + 1, size // 64 + 1)).astype(np.float32)
    data = np.kron(small, np.ones((64, 64), np.float32))[:, :size, :size]
    data += rng.normal(0, 40, data.shape).astype(np.float32)  # sensor noise: deflate works
    with rasterio.open(path, "w", driver="COG", width=size, height=size, count=3,
                       dtype="uint16", crs="EPSG:32618", compress="deflate", blocksize=512,
                       transform=rasterio.transform.from_origin(435730, 4179460, 10, 10)) as d:
        d.write(np.clip(data, 0, 65535).astype(np.uint16))


def _windows(size: int) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(WINDOWS):
        side = 2560 if i % 3 == 0 else 640
        side = min(side, size)
        y0, x0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
        out.append((y0, y0 + side, x0, x0 + side))
    return out


def _time(read: Any, windows: list) -> tuple[float, list[np.ndarray]]:
    read(*windows[0])  # open + first tiles: not part of the steady state
    t = time.perf_counter()
    got = [read(*w) for w in windows]
    return time.perf_counter() - t, got


def _tifffile(url: str, fs: Any = None) -> Any:
    import tifffile
    import zarr

    handle = fs.open(url, "rb", block_size=1 << 20, cache_type="readahead") if fs else url
    tif = tifffile.TiffFile(handle)
    arr = zarr.open_array(store=tif.aszarr(series=0, level=0), mode="r")  # (y, x, band)
    return lambda y0, y1, x0, x1: np.moveaxis(np.asarray(arr[y0:y1, x0:x1]), -1, 0)


def _opener(url: str, fs: Any) -> Any:
    import rasterio
    from rasterio.windows import Window

    ds = rasterio.open(url, opener=fs, sharing=False)
    return lambda y0, y1, x0, x1: ds.read(window=Window(x0, y0, x1 - x0, y1 - y0))


def _reader(url: str, so: dict[str, Any]) -> Any:
    from pipeline.catalog import catalog
    from pipeline.io.readers import open_scene

    (info,) = catalog(url.rsplit("/", 1)[0], so).scenes
    reader = open_scene(info, so)
    return lambda y0, y1, x0, x1: reader.read(y0, y1, x0, x1)


def bench(size: int, work: Path) -> dict[str, Any]:
    from bench.faults import Weed

    cog = work / "archive" / "scene.tif"
    cog.parent.mkdir(parents=True)
    _write_cog(cog, size)
    windows = _windows(size)
    mpx = sum((w[1] - w[0]) * (w[3] - w[2]) for w in windows) / 1e6
    paths: dict[str, Any] = {"local/rasterio": lambda: _reader(str(cog), {}),
                             "local/tifffile": lambda: _tifffile(str(cog))}
    weed = Weed(work / "weed")
    try:
        weed.wait_ready()
        fs = weed.fs()
        fs.mkdir("bench-readers")
        fs.put(str(cog), "bench-readers/archive/scene.tif")
        s3fs_sync = fs
        paths["s3/rasterio"] = lambda: _reader("s3://bench-readers/archive/scene.tif",
                                               weed.options)
        paths["s3/rasterio_opener"] = lambda: _opener("bench-readers/archive/scene.tif",
                                                      s3fs_sync)
        paths["s3/tifffile"] = lambda: _tifffile("bench-readers/archive/scene.tif", s3fs_sync)
        seconds, results = {}, {}
        for name, make in paths.items():
            seconds[name], results[name] = _time(make(), windows)
    finally:
        weed.stop()
    ref = results["local/tifffile"]
    identical = all(all(np.array_equal(a, b) for a, b in zip(got, ref, strict=True))
                    for got in results.values())
    rate = {k: round(mpx / v, 2) for k, v in seconds.items()}
    return {
        "cog": f"{size}x{size}x3 uint16, deflate, 512 px tiles", "windows": len(windows),
        "mpx": round(mpx, 1), "mpx_per_s": rate, "identical": identical,
        "ratios": {
            "local rasterio / tifffile": round(rate["local/rasterio"] / rate["local/tifffile"], 3),
            "s3 rasterio (/vsis3) / tifffile (s3fs)":
                round(rate["s3/rasterio"] / rate["s3/tifffile"], 3),
            "s3 rasterio (/vsis3) / rasterio (fsspec opener)":
                round(rate["s3/rasterio"] / rate["s3/rasterio_opener"], 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="COG side in pixels")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hgn-bench-readers-") as tmp:
        result = bench(args.size, Path(tmp))
    text = json.dumps(result, indent=1)
    print(text)
    out = ROOT / "bench/results/readers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
