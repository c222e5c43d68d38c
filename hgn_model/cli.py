"""Model commands of ``hgn-pipeline``: ``train`` and ``evaluate`` (mounted by pipeline.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hgn_model.errors import HGNError

__all__ = ["evaluate_cmd", "train_cmd"]

_SPLITS = ("val", "train", "test", "all")


class _Progress:
    """A rich progress bar with loss, lr and step time (terminals only; logs otherwise)."""

    def __init__(self, console: Console, total: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                            TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                            console=console, transient=False)
        self.task = self.bar.add_task("train", total=total, info="")

    def __call__(self, record: dict[str, Any]) -> None:
        self.bar.update(self.task, completed=record["step"],
                        info=f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                             f"{record['step_time']:.2f} s/step")


def train_cmd(
    config: Annotated[Path, typer.Option("--config", "-c", help="Training config YAML (fields: "
                                          "hgn_model/training/config.py TrainConfig).")],
    workers: Annotated[int, typer.Option(help="Data-parallel workers; > 1 runs Ray Train "
                                              "(gloo on CPU, NCCL on GPUs).")] = 1,
    gpus_per_worker: Annotated[float, typer.Option(help="GPUs per Ray Train worker.")] = 0.0,
    address: Annotated[str | None, typer.Option(help="Ray cluster to join (auto, HOST:PORT, "
                                                     "ray://...); default a private "
                                                     "local Ray.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest training "
                                                          "checkpoint in the state folder.")]
    = False,
    steps: Annotated[int | None, typer.Option(help="Override the number of steps.")] = None,
    model: Annotated[str | None, typer.Option(help="Override the config's model name.")] = None,
    output: Annotated[str | None, typer.Option(help="Override the checkpoint stem.")] = None,
) -> None:
    """Train a model on your labelled imagery (pairs, zarr) or the benchmark; save a checkpoint.

    Writes <output>.safetensors + .json (use it with `run --set checkpoint=<output>`) and the
    training state (checkpoints, metrics.jsonl) under <output>_train/.
    """
    from hgn_model.train import load_train_config, train

    console = Console(stderr=True)
    try:
        cfg = load_train_config(config, model=model, steps=steps, output=output)
        def log(message: str) -> None:
            console.print(message, highlight=False)

        if workers > 1:
            from hgn_model.training.distributed import train_distributed

            path, final = train_distributed(cfg, workers, gpus_per_worker, address, resume, log)
        elif console.is_terminal:
            bar = _Progress(console, cfg.steps)
            with bar.bar:
                path, final = train(cfg, log=bar.bar.console.print, resume=resume, progress=bar)
        else:
            path, final = train(cfg, log=log, resume=resume)
    except (HGNError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"checkpoint": str(path), "metrics": _brief(final.metrics)},
                          indent=2))


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in ("confusion_matrix", "val")}


def evaluate_cmd(
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Checkpoint (.safetensors, "
                                            ".json or stem), or a shipped name like 'hgn'.")],
    data: Annotated[str, typer.Option("--data", help="A training YAML (its data: section), a "
                                      "folder of zarr scene groups with image + labels, or "
                                      "benchmark seeds (1000,1001 or 1000-1003).")],
    split: Annotated[str, typer.Option(help="With a training YAML: val (default), train, test "
                                            "(benchmark seeds) or all.")] = "val",
    size: Annotated[int, typer.Option(help="Scene size for seeds.")] = 2448,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
) -> None:
    """Score a checkpoint: miou, pixel_accuracy, per_class_iou and the confusion matrix."""
    console = Console(stderr=True)  # the table for people; stdout is the JSON
    try:
        if split not in _SPLITS:
            raise typer.BadParameter(f"--split {split!r}: expected one of {list(_SPLITS)}")
        result = _evaluate(checkpoint, data, split, size)
    except (HGNError, ValueError) as exc:
        if isinstance(exc, typer.BadParameter):
            raise
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    report = result.pop("_report")
    console.print(report.to_table(f"{result['arch']} on {data} ({result['split']})"))
    text = json.dumps(result, indent=2)
    typer.echo(text)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")


def _evaluate(checkpoint: str, data: str, split: str, size: int) -> dict[str, Any]:
    from hgn_model.checkpoint import SHIPPED_DIR
    from hgn_model.segmenter import Segmenter
    from hgn_model.training.evaluation import evaluate_regions, metrics_of

    ckpt = SHIPPED_DIR / checkpoint if (SHIPPED_DIR / f"{checkpoint}.json").exists() \
        else Path(checkpoint)
    seg = Segmenter.from_checkpoint(ckpt, device="auto")
    source, regions = _regions(data, split, size, seg)
    if not regions:
        raise ValueError(f"--data {data!r} --split {split}: nothing to score (the split is "
                         "empty)")
    names = [c.name for c in seg.config.classes]
    if len(source.classes) != len(names) or source.classes.names != names:
        raise ValueError(f"the data's classes {source.classes.names} are not the checkpoint's "
                         f"{names}; evaluate on data with the checkpoint's class table")
    report = evaluate_regions(seg, source, regions)
    return {"checkpoint": str(ckpt), "arch": seg.config.arch, "data": data, "split": split,
            "regions": len(regions), **metrics_of(report, source), "_report": report}


def _regions(data: str, split: str, size: int, seg: Any) -> tuple[Any, list]:
    from hgn_model.data.source import SyntheticSource

    path = Path(data)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _yaml_regions(path, split)
    if path.is_dir():
        from hgn_model.data.rasters import ZarrSource
        from hgn_model.training.config import ZarrData

        src = ZarrSource(ZarrData(root=str(path)))
        return src, [(s.id, (0, s.height, 0, s.width)) for s in src.scenes]
    seeds = _parse_seeds(data)
    src = SyntheticSource(seeds, size, seg.in_channels, "uint8")
    return src, [(s.id, (0, s.height, 0, s.width)) for s in src.scenes]


def _yaml_regions(path: Path, split: str) -> tuple[Any, list]:
    from hgn_model.train import load_train_config
    from hgn_model.training.setup import plan_data

    plan = plan_data(load_train_config(path))
    whole = [(s.id, (0, s.height, 0, s.width)) for s in plan.train]
    if split == "val":
        return plan.val_source(), plan.val
    if split == "test":
        if plan.test is None:
            raise ValueError(f"{path}: --split test needs benchmark test_seeds")
        return plan.test()
    if split == "train":
        if plan.forbidden:
            raise ValueError("--split train with a block split: the train area is not a set "
                             "of whole scenes; use --split val or all")
        return plan.source, whole
    return plan.source, [(s.id, (0, s.height, 0, s.width)) for s in plan.source.scenes]


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
            f"--data {text!r}: expected a training YAML, a folder, or seeds like 1000,1001 or "
            "1000-1003") from None
    return seeds
