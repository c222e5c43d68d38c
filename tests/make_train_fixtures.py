"""Seeded training fixtures, written the way users' data comes (run it to look at them).

    python tests/make_train_fixtures.py OUT_DIR

- ``inria/``: Inria-style pairs, ``images/{id}.tif`` (4-band uint16 GeoTIFF, UTM 33N, 1 m,
  tiled, nodata 0 in a border wedge) + ``gt/{id}.tif`` (uint8 class ids of a WorldCover-like
  table: 10, 20, ... 90, and 255 = unlabelled, ignored);
- ``deepglobe/``: DeepGlobe-style ``{id}_sat.jpg`` (RGB JPEG) + ``{id}_mask.png`` (RGB-coded
  classes, the benchmark's colours);
- ``zarr/``: benchmark zarr groups (``image`` + ``labels``, the generator's class table);
- ``zarr5/``: the same with 5 uint16 bands (RGB, NIR and a red-edge-like blend).

Scenes come from the procedural benchmark (``hgn_model.data.synthetic``), so the classes are
learnable; every file is a pure function of its seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hgn_model.data.synthetic import CLASSES, generate_scene, write_scene_zarr

INRIA_IDS = {"tyrol1": 11, "tyrol2": 12, "vienna1": 13}
DEEPGLOBE_IDS = {"104": 21, "208": 22, "315": 23}
ZARR_SEEDS = (31, 32)
SIZE = 384
# WorldCover-like ids for the benchmark classes; benchmark class 0 (clouds, no-data) -> 255
WORLDCOVER_IDS = [255, 50, 40, 30, 10, 15, 80, 60, 85, 55]


def inria_classes() -> list[dict]:
    table = [{"id": 255, "name": "unlabelled", "ignore": True}]
    for k, ident in enumerate(WORLDCOVER_IDS[1:], start=1):
        table.append({"id": ident, "name": CLASSES[k].name})
    return table


def deepglobe_classes() -> list[dict]:
    return [{"id": k, "name": c.name, "color": list(c.color[:3])} for k, c in enumerate(CLASSES)]


def _geotiff(path: Path, data: np.ndarray, nodata: int | None, x0: float, y0: float) -> None:
    import tifffile

    tags = [
        (33550, "d", 3, (1.0, 1.0, 0.0), False),  # ModelPixelScale: 1 m pixels
        (33922, "d", 6, (0.0, 0.0, 0.0, x0, y0, 0.0), False),  # ModelTiepoint
        # GeoKeyDirectory: projected, pixel-is-area, EPSG:32633 (WGS 84 / UTM 33N)
        (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), False),
    ]
    if nodata is not None:
        tags.append((42113, "s", 0, str(nodata), False))  # GDAL_NODATA
    kw = {"planarconfig": "separate"} if data.ndim == 3 else {}
    tifffile.imwrite(path, data, photometric="minisblack", tile=(128, 128), extratags=tags,
                     compression="zlib", **kw)


def write_inria(root: Path) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    lut = np.array(WORLDCOVER_IDS, np.uint8)
    for n, (sid, seed) in enumerate(INRIA_IDS.items()):
        scene = generate_scene(seed, SIZE, SIZE, bands=4, dtype="uint16")
        image = scene.image.copy()
        image[image == 0] = 1  # 0 is the nodata value: keep real pixels off it
        yy, xx = np.mgrid[:SIZE, :SIZE]
        wedge = xx + yy < SIZE // 3 if n != 1 else np.zeros((SIZE, SIZE), bool)
        image[:, wedge] = 0
        _geotiff(root / "images" / f"{sid}.tif", image, 0, 500_000.0 + 1000 * n, 5_200_000.0)
        _geotiff(root / "gt" / f"{sid}.tif", lut[scene.labels], None, 500_000.0 + 1000 * n,
                 5_200_000.0)
    return root


def write_deepglobe(root: Path) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    colours = np.array([c.color[:3] for c in CLASSES], np.uint8)
    for sid, seed in DEEPGLOBE_IDS.items():
        scene = generate_scene(seed, SIZE, SIZE, bands=3, dtype="uint8")
        Image.fromarray(np.moveaxis(scene.image, 0, -1)).save(root / f"{sid}_sat.jpg", quality=95)
        Image.fromarray(colours[scene.labels]).save(root / f"{sid}_mask.png")
    return root


def write_zarr(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for seed in ZARR_SEEDS:
        write_scene_zarr(root / f"scene{seed}.zarr", generate_scene(seed, SIZE, SIZE), chunks=128)
    return root


def write_zarr5(root: Path) -> Path:
    from dataclasses import replace

    root.mkdir(parents=True, exist_ok=True)
    for seed in ZARR_SEEDS:
        scene = generate_scene(seed, SIZE, SIZE, bands=4, dtype="uint16")
        blend = ((scene.image[0].astype(np.uint32) + scene.image[3]) // 2).astype(np.uint16)
        five = replace(scene, image=np.concatenate([scene.image, blend[None]]))
        write_scene_zarr(root / f"scene{seed}.zarr", five, chunks=128)
    return root


def write_all(out: Path) -> dict[str, Path]:
    return {"inria": write_inria(out / "inria"), "deepglobe": write_deepglobe(out / "deepglobe"),
            "zarr": write_zarr(out / "zarr"), "zarr5": write_zarr5(out / "zarr5")}


if __name__ == "__main__":
    for name, path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures")).items():
        print(name, path)
