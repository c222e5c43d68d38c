"""``make demo``: a synthetic archive -> local Ray -> OME-Zarr label mosaics -> areas, IoU, PNG.

Builds three ~3000 x 3000 synthetic scenes (one not aligned to the chunk grid, one uint16;
4-band when the checkpoint takes 4 bands, else 3-band) under ``./demo_output/archive``,
starts a private Ray on 127.0.0.1, segments them with the shipped checkpoint into
``./demo_output/labels``, then prints per-scene class areas and IoU against the ground truth
stored next to each image, and writes a preview PNG. Nothing else needs to be running.

    python -m pipeline.ops.demo [--root DIR] [--num-cpus N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEMO_SCENES",
    "build_archive",
    "confusion_matrix",
    "label_arrays",
    "main",
]

# (seed, height, width, dtype): 3072 = 3 chunks of 1024; 2900 x 3100 ends mid-chunk. Seeds
# 3011-3013 are held out: the shipped checkpoints trained on seeds 0-11 (configs/shipped.yaml).
DEMO_SCENES = (
    (3011, 3072, 3072, "uint8"),
    (3012, 2900, 3100, "uint8"),
    (3013, 3072, 3072, "uint16"),
)
# Demo plan: 1024 px chunks (a 3 x 3 grid per scene, so seams are everywhere) with a 128 px
# halo; multiples of 128 keep the model's downsampling phase equal in every window.
DEMO_SETTINGS = {"chunk": 1024, "halo": 128, "batch_size": 1, "overwrite": True}


def build_archive(root: Path, in_channels: int) -> list[str]:
    """Write the demo scenes (reused when already there with the same spec).

    The spec that was written is kept beside the archive (``<root>-spec.json``), not in it:
    inside, the catalog would list it as a skipped file.
    """
    from hgn_model.data.synthetic import GENERATOR_VERSION, generate_scene, write_scene_zarr

    spec = {"scenes": DEMO_SCENES, "in_channels": in_channels, "generator": GENERATOR_VERSION}
    stamp = root.with_name(f"{root.name}-spec.json")
    if (root.exists() and stamp.exists()
            and json.loads(stamp.read_text()) == json.loads(json.dumps(spec))):
        return sorted(str(p) for p in root.glob("*.zarr"))
    if root.exists():  # a stale archive of another spec: replace it whole
        shutil.rmtree(root)
    root.mkdir(parents=True)
    paths = []
    for seed, h, w, dtype in DEMO_SCENES:
        # A 4-band checkpoint gets 4-band scenes (the uint16 one included), else RGB.
        bands = 4 if in_channels == 4 else 3
        scene = generate_scene(seed, h, w, bands=bands, dtype=dtype)
        c = DEMO_SETTINGS["chunk"]
        aligned = "aligned" if h % c == 0 and w % c == 0 else "unaligned"
        name = f"{dtype}-{aligned}-{seed}.zarr"
        paths.append(write_scene_zarr(root / name, scene, chunks=512))
        print(f"  wrote {name}", flush=True)
    stamp.write_text(json.dumps(spec))
    return paths


# ------------------------------------------------------------------ accuracy (Dask reductions)


def label_arrays(view: Any, info: Any, storage_options: dict[str, Any] | None = None
                 ) -> tuple[Any, Any]:
    """Lazy Dask arrays (prediction, ground truth) of a scene; truth needs ``info.ground_truth``.

    ``view`` is the scene's :class:`pipeline.query.SceneView`: the labels are read where the
    query layer says they are.
    """
    import dask.array as da
    import zarr

    from pipeline.io.omezarr import LABELS_LAYER, read_array
    from pipeline.storage import open_kwargs

    if info.ground_truth is None:
        raise ValueError(f"scene {view.scene_id!r} has no ground-truth labels array next to "
                         "its image")
    pred = read_array(view.url, view.array_path(LABELS_LAYER, 0), storage_options)
    truth = zarr.open_array(info.url, path=info.ground_truth, mode="r",
                            **open_kwargs(info.url, storage_options))
    return da.from_zarr(pred), da.from_zarr(truth)


def confusion_matrix(pred: Any, truth: Any, num_classes: int) -> np.ndarray:
    """K x K pixel counts (rows: truth, columns: prediction), reduced chunk by chunk by Dask.

    Memory stays at a few chunks whatever the scene size; ids >= K are ignored.
    """
    import dask.array as da

    k = int(num_classes)
    pred, truth = da.asarray(pred), da.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    truth = truth.rechunk(pred.chunks)
    p, t = pred.astype("int64"), truth.astype("int64")
    idx = da.where((p < k) & (t < k), t * k + p, k * k)  # k*k: out-of-range bin, dropped
    counts = da.bincount(idx.ravel(), minlength=k * k + 1)
    return np.asarray(counts.compute()[: k * k]).reshape(k, k)


# ------------------------------------------------------------------ preview


def _rgb8(img: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) uint8 with a per-band 1-99 % stretch (uint16 scenes too)."""
    rgb = img[:3].astype(np.float32)
    lo = np.percentile(rgb, 1, axis=(1, 2), keepdims=True)
    hi = np.percentile(rgb, 99, axis=(1, 2), keepdims=True)
    out = np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1) * 255
    return np.moveaxis(out.astype(np.uint8), 0, -1)


def write_preview(
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], lut: np.ndarray, path: Path
) -> Path:
    """One row per scene: image | ground truth | prediction (same downsampled grid)."""
    from PIL import Image, ImageDraw

    gap, tiles = 8, []
    for name, img, truth, pred in rows:
        parts = [_rgb8(img), lut[truth], lut[pred]]
        h = min(p.shape[0] for p in parts)
        w = min(p.shape[1] for p in parts)
        row = np.full((h + 18, 3 * w + 2 * gap, 3), 255, np.uint8)
        for k, p in enumerate(parts):
            row[18:, k * (w + gap) : k * (w + gap) + w] = p[:h, :w]
        tile = Image.fromarray(row)
        ImageDraw.Draw(tile).text((2, 2), f"{name}: image | ground truth | HGN", fill=(0, 0, 0))
        tiles.append(tile)
    width = max(t.width for t in tiles)
    canvas = Image.new("RGB", (width, sum(t.height + gap for t in tiles)), (255, 255, 255))
    y = 0
    for t in tiles:
        canvas.paste(t, (0, y))
        y += t.height + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


# ------------------------------------------------------------------ the demo


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.ops.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--root",
        type=Path,
        default=Path("demo_output"),
        help="demo folder: archive/, labels/ and preview.png go here",
    )
    ap.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all cores)"
    )
    ap.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint to use (default: the one shipped with hgn_model)",
    )
    return ap.parse_args(argv)


def _settings(args: argparse.Namespace, console: Any) -> tuple[Any, Any] | None:
    """(run config, checkpoint config), or None after saying why the demo cannot run."""
    from hgn_model.checkpoint import read_config
    from pipeline.config import load_config
    from pipeline.errors import PipelineError

    try:
        cfg = load_config(overrides={**DEMO_SETTINGS, "checkpoint": args.checkpoint})
    except PipelineError as e:
        console.print(f"[red]cannot run the demo:[/] {e}", soft_wrap=True)
        return None
    ckpt = read_config(cfg.checkpoint)
    if ckpt.in_channels not in (3, 4):
        console.print(
            f"[red]cannot run the demo:[/] the checkpoint takes {ckpt.in_channels} "
            "bands; the synthetic generator draws 3 or 4",
            soft_wrap=True,
        )
        return None
    return cfg, ckpt


def _score(rep: Any, info: Any, output: Path, names: list[str], console: Any
           ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Print one scene's IoU and areas; its preview row (image, truth, prediction)."""
    from hgn_model.evaluate import ConfusionMatrix
    from pipeline.io.readers import open_scene
    from pipeline.query import OutputStore

    view = OutputStore(str(output)).scene(rep.scene_id)
    scores = ConfusionMatrix(len(names))
    scores.matrix += confusion_matrix(*label_arrays(view, info), len(names))
    report = scores.report(names)
    cm, iou = scores.matrix, report.iou
    fg = [i for i in range(1, len(names)) if cm[i].sum() > 0]
    miou = float(np.nanmean(iou[fg])) if fg else float("nan")
    areas = ", ".join(
        f"{n} {100 * rep.class_pixels.get(n, 0) / rep.pixels:.1f}%"
        for n in names
        if rep.class_pixels.get(n, 0)
    )
    console.print(
        f"  [bold]{rep.scene_id}[/] ({info.height}x{info.width}, {info.dtype}, "
        f"{info.bands} bands): mIoU {miou:.3f}, pixel acc {report.pixel_accuracy:.3f}",
        highlight=False,
    )
    console.print(f"    areas: {areas}", highlight=False, soft_wrap=True)
    console.print(
        "    IoU: " + ", ".join(f"{names[i]} {iou[i]:.2f}" for i in fg),
        highlight=False,
        soft_wrap=True,
    )
    level = min(2, view.levels - 1)
    f = 2**level
    reader = open_scene(info)
    img = reader.read(0, info.height, 0, info.width)[:, ::f, ::f]
    truth = reader.read_ground_truth()[::f, ::f]
    return rep.scene_id, img, truth, view.read(level=level)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    from rich.console import Console

    from pipeline.catalog import catalog
    from pipeline.execute import ray_session
    from pipeline.ops.stac import update_catalog
    from pipeline.run import run_pipeline

    console = Console()
    t0 = time.perf_counter()
    settings = _settings(args, console)
    if settings is None:
        return 2
    cfg, ckpt = settings
    archive, output = (args.root / "archive").resolve(), (args.root / "labels").resolve()
    console.print(f"[bold]1/3[/] synthetic archive in {archive}")
    build_archive(archive, ckpt.in_channels)

    console.print(
        f"[bold]2/3[/] segmenting with {ckpt.arch} ({Path(cfg.checkpoint).name}) on a local Ray"
    )
    with ray_session(None, num_cpus=args.num_cpus):
        result = run_pipeline(
            str(archive), str(output), cfg, progress=True, console=console, summary=True
        )

    console.print("[bold]3/3[/] class areas and IoU against the ground truth")
    names = [c.name for c in ckpt.classes]
    # 256 entries: ids the checkpoint does not name (e.g. ground truth of another class set)
    # show grey instead of failing the preview.
    lut = np.full((256, 3), 128, np.uint8)
    lut[: len(ckpt.classes)] = [c.color[:3] for c in ckpt.classes]
    cat = catalog(str(archive))
    rows = [_score(rep, cat.get(rep.scene_id), output, names, console)
            for rep in result.manifest.scenes if rep.status == "ok"]
    preview = write_preview(rows, lut, args.root.resolve() / "preview.png") if rows else None
    console.print(
        f"\noutputs: {output} (one <scene>.ome.zarr each)", highlight=False, soft_wrap=True
    )
    console.print(f"manifest: {result.manifest_url}", highlight=False, soft_wrap=True)
    if preview:
        console.print(f"preview: {preview}", highlight=False, soft_wrap=True)
    console.print(f"STAC catalog: {update_catalog(str(output))}\nsee them on a map: "
                  f"hgn-pipeline serve --output {args.root / 'labels'}", highlight=False,
                  soft_wrap=True)
    console.print(f"demo took {time.perf_counter() - t0:.0f} s")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
