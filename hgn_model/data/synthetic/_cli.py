"""``python -m hgn_model.data.synthetic``: write a synthetic archive from the command line."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from ._preview import preview_png
from ._store import _LAYOUTS, make_archive, read_scene_zarr


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size {text!r}: expected HEIGHTxWIDTH, e.g. 2448x2448"
        ) from None
    return h, w


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hgn_model.data.synthetic OUT --seeds 0 1 2``: write a synthetic archive."""
    parser = argparse.ArgumentParser(
        prog="python -m hgn_model.data.synthetic",
        description="Write a procedural UHR aerial benchmark archive: one zarr group "
        "(arrays 'image' and 'labels') per seed, named scene-<seed>.zarr.",
    )
    parser.add_argument("root", help="output folder or fsspec URL (s3://bucket/prefix)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one scene per seed")
    parser.add_argument(
        "--sizes",
        type=_size,
        nargs="+",
        default=[(2448, 2448)],
        metavar="HxW",
        help="one size for all scenes, or one per seed",
    )
    parser.add_argument(
        "--bands", type=int, choices=(3, 4), default=3, help="3 = RGB, 4 = RGB + NIR-like"
    )
    parser.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8")
    parser.add_argument(
        "--bit-depth",
        type=int,
        default=None,
        help="uint16 value range: 16 (default, 0-65535) or e.g. 12 (0-4095)",
    )
    parser.add_argument("--zarr-format", type=int, choices=(2, 3), default=3)
    parser.add_argument("--layout", choices=sorted(_LAYOUTS), default="CHW")
    parser.add_argument("--chunks", type=int, default=512, help="chunk side in px")
    parser.add_argument(
        "--preview",
        type=Path,
        default=None,
        metavar="DIR",
        help="also save a scene-<seed>.png preview per scene in DIR",
    )
    args = parser.parse_args(argv)
    try:
        paths = make_archive(
            args.root,
            args.seeds,
            args.sizes,
            bands=args.bands,
            dtype=args.dtype,
            zarr_format=args.zarr_format,
            layout=args.layout,
            chunks=args.chunks,
            bit_depth=args.bit_depth,
        )
    except ValueError as exc:
        parser.error(str(exc))
    for seed, path in zip(args.seeds, paths, strict=True):
        line = {"seed": seed, "path": path}
        if args.preview is not None:
            t0 = time.perf_counter()
            scene = read_scene_zarr(path)
            line["preview"] = str(
                preview_png(scene, args.preview / f"scene-{seed}.png", max_width=2048)
            )
            line["preview_s"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(line))
    return 0
