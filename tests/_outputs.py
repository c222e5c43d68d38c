"""Test-only output roots: small label stores written by SceneWriter (no model, no run)."""

from __future__ import annotations

import numpy as np

from pipeline.io.omezarr import SceneWriter
from pipeline.scene import Georef

CLASSES = [("unknown", (0, 0, 0, 0)), ("water", (0, 0, 255, 255)),
           ("forest", (0, 128, 0, 255)), ("urban", (200, 50, 50, 255))]
GEO = Georef("EPSG:32633", (500_000.0, 10.0, 0.0, 4_000_000.0, 0.0, -10.0))
H, W, CHUNK = 150, 230, 64  # not multiples of the chunk: edge chunks are short


def labels(seed: int) -> np.ndarray:
    """H x W blocky class regions (9 px blocks, classes 0..3) from a seed."""
    rng = np.random.default_rng(seed)
    blocks = np.kron(rng.integers(0, 4, (H // 9 + 1, W // 9 + 1)), np.ones((9, 9), np.int64))
    return blocks[:H, :W].astype(np.uint8)


def write_scene(root: str, so: dict, lab: np.ndarray, run_id: str, scene: str = "t/s1",
                georef: Georef | None = GEO, overwrite: bool = False) -> None:
    """A complete store of ``lab`` (confidence 200 everywhere) finished by run ``run_id``."""
    h, w = lab.shape
    wr = SceneWriter.create(root, scene, h, w, CHUNK, CLASSES, {"run_id": run_id},
                            georef=georef, confidence=True, levels=3, storage_options=so,
                            overwrite=overwrite)
    for y in range(0, h, CHUNK):
        for x in range(0, w, CHUNK):
            block = lab[y:y + CHUNK, x:x + CHUNK]
            wr.write_block(y, x, block, np.full_like(block, 200))
    wr.finalize({"run_id": run_id, "finished": f"2026-12-0{run_id[-1]}T00:00:00+00:00"})
