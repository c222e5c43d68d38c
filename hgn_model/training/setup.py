"""Everything a run decides before its first step: data plan, splits, statistics, model.

Splits never leak: with ``train_ids``/``val_ids`` the scenes are disjoint; with
``val: {split: block}`` every scene is cut into square blocks, a seeded ``fraction`` of them
is held out, and training contexts may not come closer than one crop to a held-out block.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hgn_model.data.classes import ClassTable
from hgn_model.data.source import SceneRef, Source, SyntheticSource
from hgn_model.data.stats import measure_normalization, sample_pixels
from hgn_model.errors import ConfigError
from hgn_model.input_spec import Normalization
from hgn_model.training.config import SyntheticData, TrainConfig

__all__ = ["DataPlan", "adapt_state", "block_split", "context_size", "plan_data"]

Box = tuple[int, int, int, int]  # y0, y1, x0, x1


@dataclass
class DataPlan:
    """Sources, splits and the fingerprint of a run's data."""

    source: Source
    train: list[SceneRef]
    val: list[tuple[str, Box]]  # (scene id, region) scored for validation
    val_source: Callable[[], Source]  # the source the val regions are in (lazy)
    forbidden: dict[str, list[Box]] = field(default_factory=dict)
    test: Callable[[], tuple[Source, list[tuple[str, Box]]]] | None = None
    fingerprint: str = ""

    @property
    def classes(self) -> ClassTable:
        return self.source.classes


def _whole(source: Source) -> list[tuple[str, Box]]:
    return [(s.id, (0, s.height, 0, s.width)) for s in source.scenes]


def _synthetic_plan(d: SyntheticData) -> DataPlan:
    from hgn_model.data.synthetic import GENERATOR_VERSION

    source = SyntheticSource(d.train_seeds, d.scene_size, d.bands, d.dtype)
    blob = json.dumps({"data": d.model_dump(), "generator": GENERATOR_VERSION}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    cache: dict[str, Source] = {}

    def lazy(seeds: list[int], key: str) -> Source:
        if key not in cache:
            cache[key] = SyntheticSource(seeds, d.scene_size, d.bands, d.dtype)
        return cache[key]

    val = [(str(s), (0, d.scene_size, 0, d.scene_size)) for s in d.val_seeds]

    def test() -> tuple[Source, list[tuple[str, Box]]]:
        src = SyntheticSource(d.test_seeds, d.scene_size, d.bands, d.dtype)
        return src, _whole(src)

    return DataPlan(source, source.scenes, val, lambda: lazy(d.val_seeds, "val"),
                    test=test if d.test_seeds else None,
                    fingerprint=f"synthetic-v{GENERATOR_VERSION}-{digest}")


def block_split(scenes: list[SceneRef], block: int, gap: int, fraction: float, seed: int
                ) -> tuple[list[tuple[str, Box]], dict[str, list[Box]]]:
    """Held-out blocks (scene id, box) and, per scene, the boxes training must avoid.

    A grid of ``block`` px squares per scene (the last row/column takes the remainder); a
    seeded ``fraction`` of all blocks (at least one) is held out. The avoided boxes are the
    held-out blocks grown by ``gap`` px on every side.
    """
    cells = []
    for ref in scenes:
        for y0 in range(0, ref.height, block):
            for x0 in range(0, ref.width, block):
                cells.append((ref, y0, min(y0 + block, ref.height), x0, min(x0 + block, ref.width)))
    if len(cells) < 2:
        raise ConfigError(f"block split: {block} px blocks give {len(cells)} block(s); lower "
                          "`val.block` or use train_ids / val_ids")
    rng = np.random.default_rng(seed)
    n_val = min(len(cells) - 1, max(1, round(fraction * len(cells))))
    chosen = rng.choice(len(cells), size=n_val, replace=False)
    val, forbidden = [], {}
    for i in sorted(int(c) for c in chosen):
        ref, y0, y1, x0, x1 = cells[i]
        val.append((ref.id, (y0, y1, x0, x1)))
        forbidden.setdefault(ref.id, []).append(
            (max(0, y0 - gap), y1 + gap, max(0, x0 - gap), x1 + gap))
    return val, forbidden


def _raster_plan(cfg: TrainConfig) -> DataPlan:
    from hgn_model.data.rasters import open_source

    d = cfg.data
    source = open_source(d)
    by_id = {s.id: s for s in source.scenes}
    if d.train_ids is not None:
        missing = sorted(set(d.train_ids) - set(by_id))
        if missing:
            raise ConfigError(f"train_ids {missing} are not among the scenes found "
                              f"({sorted(by_id)[:8]}...)")
        train = [by_id[i] for i in d.train_ids]
    else:
        train = [s for s in source.scenes if s.id not in set(d.val_ids or ())]
    val: list[tuple[str, Box]] = []
    forbidden: dict[str, list[Box]] = {}
    if d.val_ids is not None:
        missing = sorted(set(d.val_ids) - set(by_id))
        if missing:
            raise ConfigError(f"val_ids {missing} are not among the scenes found")
        leak = sorted(set(d.val_ids) & {s.id for s in train})
        if leak:
            raise ConfigError(f"scenes {leak} are in both train_ids and val_ids")
        val = [(i, (0, by_id[i].height, 0, by_id[i].width)) for i in d.val_ids]
    elif d.val is not None:
        block = d.val.block or context_size(cfg, train)
        val, forbidden = block_split(train, block, cfg.crop, d.val.fraction, cfg.seed)
    if not train:
        raise ConfigError("no training scenes: check data.root, the patterns and train_ids")
    return DataPlan(source, train, val, lambda: source, forbidden,
                    fingerprint=getattr(source, "fingerprint", lambda ids: "")(
                        [s.id for s in train]))


def plan_data(cfg: TrainConfig) -> DataPlan:
    if isinstance(cfg.data, SyntheticData):
        return _synthetic_plan(cfg.data)
    return _raster_plan(cfg)


def context_size(cfg: TrainConfig, scenes: list[SceneRef]) -> int:
    """The context side S: ``context`` (or 4 x crop), capped by the smallest scene (128 px)."""
    want = cfg.context or 4 * cfg.crop
    smallest = min(min(s.height, s.width) for s in scenes)
    fit = max(smallest // 128 * 128, -(-cfg.crop // 128) * 128)
    return max(min(want, fit), cfg.crop)


def normalization_entries(cfg: TrainConfig, plan: DataPlan) -> list[Normalization]:
    """C1 entries measured on training pixels: one per training dtype (+ extra renderings)."""
    rng = np.random.default_rng([cfg.seed, 7])  # its own stream: never shifts the sampling
    entries: dict[str, Normalization] = {}
    for dtype in dict.fromkeys(s.dtype for s in plan.train):
        scenes = [s for s in plan.train if s.dtype == dtype]
        entries[dtype] = measure_normalization(sample_pixels(plan.source, scenes, rng), dtype)
    if isinstance(cfg.data, SyntheticData):
        d = cfg.data
        for dtype in d.normalization_dtypes:
            if dtype not in entries:
                src = SyntheticSource(d.train_seeds, d.scene_size, d.bands, dtype)
                entries[dtype] = measure_normalization(
                    sample_pixels(src, src.scenes, rng), dtype)
    return list(entries.values())


def classifier_tensors(model: torch.nn.Module, num_classes: int) -> set[str]:
    """Weights and biases of the heads' last convs (the ones that output the classes)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.out_channels == num_classes \
                and "head" in name.split(".")[0]:
            names.update(f"{name}.{p}" for p, _ in module.named_parameters())
    return names


def adapt_state(model: torch.nn.Module, state: dict[str, torch.Tensor],
                band_convs: dict[str, list[tuple[str, int]]], old_bands: int, new_bands: int,
                reinit: set[str] | frozenset[str] = frozenset(),
                ) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Fit a checkpoint's tensors to ``model``: adapt stem convs to a new band count, keep the
    fresh initialisation of tensors that do not fit (a new class table's heads).

    ``band_convs`` maps a conv weight to its input segments, ("bands", n) or ("fixed", n) at
    the old band count. Kept bands are copied; new bands get the mean of the old band
    weights; each band segment is scaled by old/new bands, so activations keep their scale.
    Tensors named in ``reinit`` (the classifiers, when the class table changed) keep their
    fresh initialisation too. Returns (state, adapted names, re-initialised names).
    """
    target = model.state_dict()
    out, adapted, fresh = {}, [], []
    for name, new in target.items():
        old = None if name in reinit else state.get(name)
        if name in reinit:
            out[name] = new
            fresh.append(name)
        elif old is not None and old.shape == new.shape:
            out[name] = old.to(new.dtype)
        elif old is not None and name in band_convs and old_bands != new_bands:
            parts, pos = [], 0
            for kind, n in band_convs[name]:
                seg = old[:, pos:pos + n]
                pos += n
                if kind == "bands":
                    extra = seg.mean(1, keepdim=True).expand(-1, max(new_bands - n, 0), -1, -1)
                    seg = torch.cat([seg[:, :new_bands], extra], 1) * (n / new_bands)
                parts.append(seg)
            out[name] = torch.cat(parts, 1).to(new.dtype)
            adapted.append(f"{name} {tuple(old.shape)} -> {tuple(new.shape)}")
        else:
            out[name] = new
            if old is not None or not name.endswith("num_batches_tracked"):
                fresh.append(name)
    return out, adapted, fresh


def class_weights(counts: np.ndarray, mode: str) -> torch.Tensor | None:
    """sqrt of inverse class frequency (classes with no pixels get the largest weight)."""
    if mode == "none" or counts.sum() == 0:
        return None
    freq = counts / counts.sum()
    wts = 1.0 / np.sqrt(np.maximum(freq, 1e-4))
    return torch.tensor(wts / wts.mean(), dtype=torch.float32)


def describe(plan: DataPlan, size: int) -> dict[str, Any]:
    return {"train_scenes": len(plan.train), "val_regions": len(plan.val), "context": size}
