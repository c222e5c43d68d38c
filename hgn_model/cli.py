"""Model commands of ``hgn-pipeline``: ``train`` and ``evaluate`` (mounted by pipeline.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hgn_model.errors import HGNError

__all__ = ["evaluate_cmd", "train_cmd"]


def train_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="Training config YAML "
                                          "(fields: hgn_model/train.py TrainConfig).")],
    model: Annotated[str | None, typer.Option(help="Override the config's model name.")] = None,
    steps: Annotated[int | None, typer.Option(help="Override the number of steps.")] = None,
    output: Annotated[str | None, typer.Option(help="Override the checkpoint stem.")] = None,
) -> None:
    """Train a model on the procedural UHR benchmark and save a safetensors checkpoint."""
    from hgn_model.train import load_train_config, train

    console = Console(stderr=True)
    try:
        cfg = load_train_config(config, model=model, steps=steps, output=output)
        path, final = train(cfg, log=lambda m: console.print(m, highlight=False))
    except HGNError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"checkpoint": str(path), "metrics": final.metrics}, indent=2))


def evaluate_cmd(
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Checkpoint (.safetensors, "
                                            ".json or stem), or a shipped name like 'hgn'.")],
    data: Annotated[str, typer.Option("--data", help="Comma-separated benchmark seeds "
                                      "(e.g. 1000,1001 or 1000-1003) or a folder of scene "
                                      "zarr groups with image + labels.")],
    size: Annotated[int, typer.Option(help="Scene size for seeds.")] = 2448,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
) -> None:
    """Score a checkpoint on held-out scenes: per-class IoU, mIoU, mIoU excluding class 0."""
    from hgn_model.checkpoint import SHIPPED_DIR
    from hgn_model.data.synthetic import THIN_CLASSES, generate_scene, read_scene_zarr
    from hgn_model.evaluate import evaluate_scenes
    from hgn_model.segmenter import Segmenter

    console = Console()
    try:
        ckpt = SHIPPED_DIR / checkpoint if (SHIPPED_DIR / f"{checkpoint}.json").exists() \
            else Path(checkpoint)
        seg = Segmenter.from_checkpoint(ckpt, device="auto")
        folder = Path(data)
        if folder.is_dir():
            paths = sorted(p for p in folder.iterdir() if p.suffix == ".zarr")
            if not paths:
                raise typer.BadParameter(f"--data {data!r}: no *.zarr scene groups in it")
            scenes = (read_scene_zarr(p) for p in paths)
        else:
            seeds = _parse_seeds(data)
            bands, dtype = seg.in_channels, "uint8"
            scenes = (generate_scene(s, size, size, bands, dtype) for s in seeds)
        report = evaluate_scenes(seg, scenes)
    except HGNError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    console.print(report.to_table(f"{seg.config.arch} on {data}"))
    result = {"checkpoint": str(ckpt), "arch": seg.config.arch, **report.to_dict(),
              "thin_miou": round(report.mean_of(THIN_CLASSES) * 100, 2)}
    typer.echo(json.dumps(result, indent=2))
    if json_out:
        json_out.write_text(json.dumps(result, indent=2) + "\n")


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            if sep and int(hi) < int(lo):
                raise typer.BadParameter(
                    f"--data {text!r}: the seed range {part.strip()} is empty (it ends before it "
                    f"starts); write {hi}-{lo}"
                )
            seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise typer.BadParameter(
            f"--data {text!r}: expected seeds like 1000,1001 or 1000-1003, or an existing folder"
        ) from None
    return seeds
