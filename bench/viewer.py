"""Viewer tiles and change maps on one large label store, side by side.

Builds a ``--size`` x ``--size`` georeferenced label store (1024 px chunks, noisy classes)
written by SceneWriter, and times

- map tiles at every zoom as the viewer renders them (``render_tile``: the window of pyramid
  level k) against the naive alternative a viewer without a pyramid has (read the level-0
  window the tile covers, take every 2^k-th pixel), on the same tiles; both must give the same
  pixels at zoom 0;
- a change map of the whole scene against a second version (``compute_change``), in Mpx/s.

Prints JSON and writes ``bench/results/viewer.json``. Usage:
``python bench/viewer.py [--size 8192] [--tiles 12]``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

CLASSES = [("unknown", (0, 0, 0, 0)), ("water", (0, 0, 255, 255)),
           ("forest", (0, 128, 0, 255)), ("urban", (200, 50, 50, 255))]


def _labels(seed: int, n: int) -> np.ndarray:
    """64 px class blocks with 15% salt: compresses about like real label mosaics."""
    rng = np.random.default_rng(seed)
    small = rng.integers(1, 4, (n // 64 + 1, n // 64 + 1)).astype(np.uint8)
    lab = np.kron(small, np.ones((64, 64), np.uint8))[:n, :n]
    salt = rng.random((n, n)) < 0.15
    lab[salt] = rng.integers(1, 4, int(salt.sum()), dtype=np.uint8)
    return lab


def _store(root: str, n: int, seed: int, run_id: str) -> None:
    from pipeline.io.omezarr import SceneWriter
    from pipeline.scene import Georef

    geo = Georef("EPSG:32633", (500_000.0, 0.5, 0.0, 4_000_000.0, 0.0, -0.5))
    w = SceneWriter.create(root, "big", n, n, 1024, CLASSES, {"run_id": run_id}, georef=geo,
                           confidence=False, overwrite=True)
    lab = _labels(seed, n)
    for y in range(0, n, 1024):
        w.write_block(y, 0, lab[y:y + 1024])
    w.finalize({"run_id": run_id})


def _naive(view: Any, lut: np.ndarray, z: int, tx: int, ty: int) -> bytes:
    from PIL import Image

    f = 2 ** -z
    span = 256 * f
    y0, x0 = ty * span, tx * span
    box = (y0, min(y0 + span, view.height), x0, min(x0 + span, view.width))
    rgba = lut[view.read(box, level=0)[::f, ::f]]
    tile = np.zeros((256, 256, 4), np.uint8)
    tile[:rgba.shape[0], :rgba.shape[1]] = rgba
    buf = io.BytesIO()
    Image.fromarray(tile, "RGBA").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _time(fn: Any, jobs: list[tuple[int, int, int]]) -> float:
    t = time.perf_counter()
    for job in jobs:
        fn(*job)
    return (time.perf_counter() - t) / len(jobs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--tiles", type=int, default=12, help="tiles per zoom (seeded positions)")
    args = ap.parse_args()
    from pipeline.ops.diff import compute_change
    from pipeline.ops.previous import keep_previous, previous_root
    from pipeline.query import OutputStore
    from pipeline.serve.scenes import SceneRegistry
    from pipeline.serve.tiles import render_tile

    with tempfile.TemporaryDirectory() as tmp:
        root = f"{tmp}/out"
        _store(root, args.size, 1, "r1")
        keep_previous(root, ["big"])
        _store(root, args.size, 2, "r2")
        scene = SceneRegistry(root, {}).get("big")
        view = scene.view
        lut = np.zeros((256, 4), np.uint8)
        for i, (_, c) in enumerate(CLASSES):
            lut[i] = c
        rng = np.random.default_rng(0)
        zooms: dict[str, Any] = {}
        for k in range(view.levels):
            n_tiles = -(-view.level_shape(k)[0] // 256)
            jobs = [(-k, int(rng.integers(n_tiles)), int(rng.integers(n_tiles)))
                    for _ in range(args.tiles)]
            if k == 0:
                same = all(render_tile(scene, "segmentation", *j) == _naive(view, lut, *j)
                           for j in jobs[:3])
                assert same, "pyramid and naive tiles differ at zoom 0"
            pyramid = _time(lambda z, x, y: render_tile(scene, "segmentation", z, x, y), jobs)
            naive = _time(lambda z, x, y: _naive(view, lut, z, x, y), jobs)
            zooms[str(-k)] = {"level": k, "pyramid_ms": round(pyramid * 1e3, 2),
                              "naive_ms": round(naive * 1e3, 2),
                              "naive_over_pyramid": round(naive / pyramid, 2)}
        t = time.perf_counter()
        previous = OutputStore(previous_root(root, "r1")).scene("big")
        m = compute_change(OutputStore(root).scene("big"), previous, "run r1")
        seconds = time.perf_counter() - t
    result = {
        "scene_px": [args.size, args.size], "levels": view.levels, "chunk": 1024,
        "tiles_per_zoom": args.tiles, "tile_ms_by_zoom": zooms,
        "change_map": {"seconds": round(seconds, 2),
                       "mpx_per_s": round(args.size**2 / 1e6 / seconds, 2),
                       "changed_fraction": round(m.summary()["changed_fraction"], 4)},
    }
    out = ROOT / "bench" / "results" / "viewer.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
