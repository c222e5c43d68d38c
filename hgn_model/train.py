"""Training on the procedural UHR benchmark: seeded, random crops, AdamW or SGD-poly.

``hgn-pipeline train --config train.yaml`` calls :func:`train`. Everything that changes the
result is in :class:`TrainConfig`, and the same config + seed reproduces the same checkpoint
on the same machine (torch CPU kernels are deterministic for a fixed thread count).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hgn_model.checkpoint import CheckpointConfig, ClassInfo, InputSpec, save_checkpoint
from hgn_model.errors import ConfigError
from hgn_model.evaluate import IoUReport, evaluate_scenes
from hgn_model.losses import LossWeights, SegLoss
from hgn_model.registry import create_model, uses_contrastive
from hgn_model.segmenter import Segmenter

__all__ = ["DataConfig", "TrainConfig", "load_train_config", "train"]


class DataConfig(BaseModel):
    """Which synthetic scenes to train and evaluate on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    train_seeds: list[int] = Field(default_factory=lambda: list(range(12)),
                                   description="benchmark seeds used for training crops")
    val_seeds: list[int] = Field(default_factory=lambda: [500, 501],
                                 description="seeds for periodic evaluation (never trained on)")
    test_seeds: list[int] = Field(default_factory=lambda: [1000, 1001, 1002, 1003],
                                  description="held-out seeds scored into the checkpoint metrics")
    scene_size: int = Field(2448, ge=64, description="scene height and width in px")
    bands: Literal[3, 4] = Field(3, description="3 = RGB, 4 = RGB + NIR")
    dtype: Literal["uint8", "uint16"] = "uint8"


class TrainConfig(BaseModel):
    """A training run. Unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    model: str = Field("hgn", description="registered model name (hgn_model.list_models())")
    model_cfg: dict[str, Any] = Field(default_factory=dict, description="overrides, e.g. width")
    data: DataConfig = Field(default_factory=DataConfig)
    crop: int = Field(768, ge=128, description="square training crop size (px, full resolution)")
    batch_size: int = Field(2, ge=1)
    steps: int = Field(600, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    momentum: float = Field(0.9, ge=0, description="SGD only")
    poly_power: float = Field(0.9, ge=0, description="lr *= (1 - step/steps) ** power")
    warmup_steps: int = Field(30, ge=0)
    loss: dict[str, float] = Field(default_factory=dict,
                                   description="LossWeights overrides: ce, aux, contrast, tau")
    class_weighting: Literal["none", "sqrt_inv"] = Field(
        "sqrt_inv", description="per-class CE weights from training label frequencies")
    eval_every: int = Field(0, ge=0, description="steps between validation runs (0 = end only)")
    seed: int = 0
    threads: int | None = Field(None, description="torch threads (None = torch default)")
    output: str = Field("checkpoints/model", description="checkpoint stem to write")
    weights_dtype: Literal["float32", "float16"] = "float32"


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML training config; unknown or mistyped fields raise ConfigError naming them."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read training config {str(path)!r}: {exc}") from exc
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"training config {str(path)!r}: field {field!r} ({first.get('input')!r}): "
            f"{first['msg']}"
        ) from exc


def _scenes(seeds: list[int], data: DataConfig) -> list:
    from hgn_model.data.synthetic import generate_scene

    return [generate_scene(s, data.scene_size, data.scene_size, data.bands, data.dtype)
            for s in seeds]


def _fingerprint(cfg: TrainConfig) -> str:
    from hgn_model.data.synthetic import GENERATOR_VERSION

    blob = json.dumps({"data": cfg.data.model_dump(), "generator": GENERATOR_VERSION},
                      sort_keys=True)
    return f"synthetic-v{GENERATOR_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


class _Crops:
    """Random augmented crops from in-memory scenes, as normalised float tensors."""

    def __init__(self, scenes: list, crop: int, scale: float, mean: np.ndarray, std: np.ndarray,
                 rng: np.random.Generator) -> None:
        self.scenes, self.crop, self.scale, self.rng = scenes, crop, scale, rng
        self.mean = mean.reshape(-1, 1, 1).astype(np.float32)
        self.std = std.reshape(-1, 1, 1).astype(np.float32)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(n):
            scene = self.scenes[self.rng.integers(len(self.scenes))]
            _, h, w = scene.image.shape
            c = min(self.crop, h, w)
            y0, x0 = self.rng.integers(0, h - c + 1), self.rng.integers(0, w - c + 1)
            img = scene.image[:, y0:y0 + c, x0:x0 + c].astype(np.float32) / self.scale
            lab = scene.labels[y0:y0 + c, x0:x0 + c]
            k = int(self.rng.integers(4))  # 90-degree rotations and flips: aerial views
            img, lab = np.rot90(img, k, axes=(1, 2)), np.rot90(lab, k)
            if self.rng.random() < 0.5:
                img, lab = img[:, :, ::-1], lab[:, ::-1]
            gain = self.rng.uniform(0.85, 1.15)  # photometric jitter: exposure and band offsets
            offset = self.rng.uniform(-0.04, 0.04, size=(img.shape[0], 1, 1)).astype(np.float32)
            img = np.clip(img * gain + offset, 0.0, 1.0)
            xs.append((img - self.mean) / self.std)
            ys.append(lab.astype(np.int64))
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * (1.0 - step / cfg.steps) ** cfg.poly_power


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> tuple[Path, CheckpointConfig]:
    """Train, evaluate on held-out seeds, save the checkpoint; returns (weights path, config)."""
    from hgn_model.data.synthetic import CLASSES, CONTEXT_CLASSES, THIN_CLASSES

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    scenes = _scenes(cfg.data.train_seeds, cfg.data)
    scale = 255.0 if cfg.data.dtype == "uint8" else 65535.0
    pixels = np.concatenate([s.image.reshape(s.image.shape[0], -1)[:, ::97] for s in scenes], 1)
    mean = (pixels / scale).mean(1)
    std = (pixels / scale).std(1) + 1e-6
    num_classes = len(CLASSES)
    counts = sum(np.bincount(s.labels.ravel(), minlength=num_classes) for s in scenes)
    class_weights = None
    if cfg.class_weighting == "sqrt_inv":
        freq = counts / counts.sum()
        wts = 1.0 / np.sqrt(np.maximum(freq, 1e-4))
        class_weights = torch.tensor(wts / wts.mean(), dtype=torch.float32)
    log(f"generated {len(scenes)} training scenes in {time.perf_counter() - t0:.1f}s")

    model = create_model(cfg.model, num_classes, in_channels=cfg.data.bands, **cfg.model_cfg)
    model = model.to(memory_format=torch.channels_last)
    weights = LossWeights(**{**LossWeights().__dict__, **cfg.loss})
    if not uses_contrastive(cfg.model):
        weights = LossWeights(**{**weights.__dict__, "contrast": 0.0})
    criterion = SegLoss(num_classes, weights, class_weights)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
    crops = _Crops(scenes, cfg.crop, scale, mean, std, rng)
    band_names = ["red", "green", "blue", "nir"][: cfg.data.bands]
    ckpt_cfg = CheckpointConfig(
        arch=cfg.model,
        model_cfg=cfg.model_cfg,
        classes=[ClassInfo(name=c.name, color=tuple(c.color)) for c in CLASSES],
        input=InputSpec(bands=cfg.data.bands, band_names=band_names,
                        mean=[float(v) for v in mean], std=[float(v) for v in std],
                        uint16_max=scale if cfg.data.dtype == "uint16" else 65535.0),
    )
    history: list[dict[str, float]] = []
    model.train()
    t_train = time.perf_counter()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(cfg, step)
        x, y = crops.batch(cfg.batch_size)
        # NHWC: oneDNN's CPU convolutions run markedly faster on channels-last tensors.
        x = x.contiguous(memory_format=torch.channels_last)
        total, parts = criterion(model.forward_train(x), y)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if not math.isfinite(float(total.detach())):
            raise FloatingPointError(
                f"loss became {float(total.detach())} at step {step}; lower the lr"
            )
        history.append({"step": step, "loss": float(total.detach()), **parts})
        if step % 25 == 0 or step == cfg.steps - 1:
            rate = (step + 1) / (time.perf_counter() - t_train)
            log(f"step {step:5d}/{cfg.steps} loss {float(total.detach()):.4f} "
                + " ".join(f"{k} {v:.3f}" for k, v in parts.items()) + f"  ({rate:.2f} it/s)")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            rep = _score(model, ckpt_cfg, cfg.data.val_seeds, cfg.data)
            log(f"val @ {step + 1}: mIoU {rep.miou * 100:.2f}  "
                f"mIoU excl. 0 {rep.miou_fg * 100:.2f}")
            model.train()
    train_seconds = time.perf_counter() - t_train
    report = _score(model, ckpt_cfg, cfg.data.test_seeds, cfg.data)
    metrics = {
        "test_seeds": cfg.data.test_seeds,
        **report.to_dict(),
        "thin_miou": round(report.mean_of(THIN_CLASSES) * 100, 2),
        "context_miou": round(report.mean_of(CONTEXT_CLASSES) * 100, 2),
    }
    final = ckpt_cfg.model_copy(update={
        "metrics": metrics,
        "training": {
            "config": cfg.model_dump(mode="json"),
            "data_fingerprint": _fingerprint(cfg),
            "train_seconds": round(train_seconds, 1),
            "final_loss": round(float(np.mean([h["loss"] for h in history[-20:]])), 4),
            "torch_threads": torch.get_num_threads(),
        },
    })
    final = save_checkpoint(model.eval(), final, cfg.output, cfg.weights_dtype)
    log(f"saved {cfg.output}.safetensors: mIoU {metrics['miou']} (excl. 0: "
        f"{metrics['miou_excl_0']}), thin {metrics['thin_miou']}, "
        f"context {metrics['context_miou']}")
    return Path(cfg.output).with_suffix(".safetensors"), final


def _score(model: torch.nn.Module, ckpt_cfg: CheckpointConfig, seeds: list[int],
           data: DataConfig) -> IoUReport:
    """Evaluate a copy of the in-training model through the real inference path."""
    import copy

    seg = Segmenter(copy.deepcopy(model), ckpt_cfg, device="cpu")
    return evaluate_scenes(seg, _scenes(seeds, data))
