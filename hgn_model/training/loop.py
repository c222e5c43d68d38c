"""The training loop: one process, or one rank of a Ray Train / DDP run.

The recipe, and what each choice did (``bench/recipe.py``; "300-step" = short runs of HGN on
4 benchmark scenes scored on val seeds 500/501, val mIoU / plantation IoU; full = the shipped
2000-step run):

- **context + detail crops.** Each sample is a ``context`` square (2048 px by default, 4 x
  the crop): the deep branch sees it whole at 1/4 resolution (a 512^2 input, a 16^2 map at its
  last stage, where a lone 512 px crop gave 4^2), and the deep-only aux head is trained on
  all of it. The shallow branch, the decoder and the main loss run on ``per_context`` detail
  crops inside it, so full-resolution work stays that of the old 512^2 recipe and the deep
  branch's extra input is the only added cost (1.7x the step time of two plain 512^2 crops).
  300-step: 36.7 / 17.9 with context vs 47.0 / 0.0 with plain 512^2 crops: the plain crops
  learn the large classes faster, only the context learns plantation at all; full: val 64.8.
- class-aware crops (half the contexts and crops around a pixel of a class drawn uniformly):
  every class is seen at least 1.3x as often as by uniform crops (test); 300-step 36.7 vs
  41.9 uniform (the large classes see fewer crops), plantation 17.9 vs 0.0.
- batch 1 works (no BatchNorm on pooled 1x1 features); sqrt-inverse class weights; AdamW with
  warm-up and poly decay; 8 flips/rotations and photometric jitter.

Everything random draws from seeded generators restored on resume (numpy for the data, torch
for initialisation and the contrastive sampling), so on CPU with the same threads and worker
count a resumed run ends with the weights an uninterrupted one has.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hgn_model.checkpoint import CheckpointConfig, ClassInfo
from hgn_model.data.sampling import ClassIndex
from hgn_model.errors import ConfigError
from hgn_model.input_spec import InputSpec
from hgn_model.losses import LossWeights, SegLoss
from hgn_model.models._base import Detail
from hgn_model.registry import create_model, uses_contrastive
from hgn_model.training import setup
from hgn_model.training.config import TrainConfig
from hgn_model.training.feed import Feed
from hgn_model.training.state import RunStore, flatten_optimizer, unflatten_optimizer

__all__ = ["Rank", "run_training"]


@dataclass(frozen=True)
class Rank:
    """This process's place in a data-parallel run (rank 0 of 1 for a plain process)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class _TrainView(torch.nn.Module):
    """``forward`` = ``forward_train``, so DDP's hooks see the training forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, detail: Detail | None) -> dict[str, torch.Tensor]:
        return self.model.forward_train(x, detail)


def _lr_factor(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        return max(0.0, 1.0 - step / cfg.steps) ** cfg.poly_power
    return factor


def _build_model(cfg: TrainConfig, num_classes: int, bands: int, log: Callable[[str], None],
                 class_names: list[str] | None = None) -> torch.nn.Module:
    model = create_model(cfg.model, num_classes, in_channels=bands, **cfg.model_cfg)
    if cfg.init_from:
        from hgn_model.checkpoint import load_checkpoint

        src, src_cfg = load_checkpoint(cfg.init_from)
        if src_cfg.arch != cfg.model:
            raise ConfigError(f"init_from {cfg.init_from!r} is a {src_cfg.arch!r} checkpoint; "
                              f"the config trains {cfg.model!r}")
        same_classes = class_names == [c.name for c in src_cfg.classes]
        reinit = set() if same_classes else setup.classifier_tensors(model, num_classes)
        state, adapted, fresh = setup.adapt_state(model, src.state_dict(), src.band_convs(),
                                                  src_cfg.in_channels, bands, reinit)
        model.load_state_dict(state)
        log(f"init_from {cfg.init_from}: {len(state) - len(fresh)} tensors loaded")
        for line in adapted:
            log(f"  stem adapted to {bands} bands (from {src_cfg.in_channels}): {line}")
        if fresh:
            log(f"  re-initialised (new class table or shape): {', '.join(fresh[:8])}"
                + (" ..." if len(fresh) > 8 else ""))
    return model


class _Run:
    """State of one run; ``step()`` does one optimisation step."""

    def __init__(self, cfg: TrainConfig, rank: Rank, log: Callable[[str], None]) -> None:
        self.cfg, self.rank, self.log = cfg, rank, log
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if want_cuda else "cpu")
        torch.manual_seed(cfg.seed)
        self.plan = setup.plan_data(cfg)
        self.size = setup.context_size(cfg, self.plan.train)
        self.classes = self.plan.classes
        k = len(self.classes)
        self.index = ClassIndex.build(self.plan.source, self.plan.train, k, self.plan.forbidden)
        self.norms = {n.dtype: n for n in setup.normalization_entries(cfg, self.plan)}
        self.train_dtype = self.plan.train[0].dtype
        bands = self.plan.train[0].bands
        model = _build_model(cfg, k, bands, log, self.classes.names).to(self.device)
        self.model = model.to(memory_format=torch.channels_last)
        weights = LossWeights(**{**LossWeights().__dict__, **cfg.loss})
        if not uses_contrastive(cfg.model):
            weights = LossWeights(**{**weights.__dict__, "contrast": 0.0})
        cw = setup.class_weights(self.index.counts, cfg.class_weighting)
        self.criterion = SegLoss(k, weights, cw, embed_dim=getattr(model, "contrast_dim", 0)
                                 or 64).to(self.device)
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "adamw":
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_factor(cfg))
        top = self.norms[self.train_dtype].top
        self.net: torch.nn.Module = _TrainView(self.model)
        if rank.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.amp = _amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.step_no, self.best, self.history = 0, -math.inf, []
        self.token: str | None = None
        # training wall time of earlier processes of this run (resumed) and this one's start
        self.seconds_before, self.t_train = 0.0, time.perf_counter()
        # decoupled: batch_size detail crops from batch_size / per_context contexts; else
        # (context = crop) batch_size plain crops
        contexts = cfg.contexts_per_step if self.size > cfg.crop else cfg.batch_size
        threads = cfg.data_threads or (min(8, os.cpu_count() or 1)
                                       if self.device.type == "cuda" else 1)
        self.feed = Feed(self.plan, self.index, self.size, cfg, [cfg.seed, rank.rank],
                         self.norms, self.train_dtype, top, contexts, self.device, threads)

    # -- one step -------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        x, y, detail = self.feed.next()
        self.model.train()
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.net(x, detail)
            target = y if detail is None else detail.crop_labels(y)
            total, parts = self.criterion({k: v.float() for k, v in out.items()}, target, y)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            total.backward()
            self.opt.step()
        loss = float(total.detach())
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at step {self.step_no}; lower the lr")
        lr = self.opt.param_groups[0]["lr"]
        self.sched.step()
        self.step_no += 1
        return {"loss": loss, "lr": lr, **parts}

    # -- the checkpoint the run would ship now --------------------------------------------
    def checkpoint_config(self, metrics: dict[str, Any], extra: dict[str, Any] | None = None
                          ) -> CheckpointConfig:
        src = self.plan.source
        ordered = [self.norms[self.train_dtype]] + [
            n for d, n in self.norms.items() if d != self.train_dtype]
        return CheckpointConfig(
            arch=self.cfg.model, model_cfg=self.cfg.model_cfg,
            classes=[ClassInfo(**c) for c in self.classes.to_checkpoint()],
            input=InputSpec(bands=self.plan.train[0].bands, band_names=src.band_names,
                            normalization=ordered),
            metrics=metrics,
            training={"config": _public(self.cfg.model_dump(mode="json")),
                      "data_fingerprint": self.plan.fingerprint, "steps_done": self.step_no,
                      "context": self.size, "torch_threads": torch.get_num_threads(),
                      "machine": f"{platform.machine()}, {torch.__version__}, "
                                 f"{self.device.type}, {self.rank.world} worker(s)",
                      **(extra or {})},
        )

    # -- state ------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON) to resume from; collective on every rank of a data-parallel run.

        Optimizer and scheduler are the same on every rank; the data RNG, torch RNG and the
        prototype bank are per rank, gathered into ``ranks``.
        """
        tensors, meta = flatten_optimizer(self.opt.state_dict())
        bank = self.criterion.bank
        mine = json.dumps({"numpy_rng": self.feed.rng_states(),
                           "torch_rng": torch.get_rng_state().tolist(),
                           "bank_protos": bank.protos.detach().cpu().tolist(),
                           "bank_seen": bank.seen.detach().cpu().tolist()})
        ranks = [mine]
        if self.rank.world > 1:
            ranks = [None] * self.rank.world
            torch.distributed.all_gather_object(ranks, mine)
        sched = {k: v for k, v in self.sched.state_dict().items() if k != "lr_lambdas"}
        return tensors, {"optimizer": meta, "scheduler": sched, "best": self.best,
                         "train_seconds": round(self.train_seconds(), 1),
                         "world": self.rank.world, "ranks": [json.loads(r) for r in ranks],
                         "run": self.token}

    def restore(self, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                meta: dict[str, Any]) -> None:
        if int(meta.get("world", 1)) != self.rank.world:
            self.log(f"resuming a {meta.get('world')}-worker run on {self.rank.world}: the "
                     "data streams restart from their saved states where they exist")
        self.model.load_state_dict(weights)
        self.opt.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
        self.sched.load_state_dict({**meta["scheduler"], "lr_lambdas": [None]})
        mine = meta["ranks"][min(self.rank.rank, len(meta["ranks"]) - 1)]
        bank = self.criterion.bank
        bank.protos.copy_(torch.tensor(mine["bank_protos"], dtype=bank.protos.dtype))
        bank.seen.copy_(torch.tensor(mine["bank_seen"], dtype=torch.bool))
        torch.set_rng_state(torch.tensor(mine["torch_rng"], dtype=torch.uint8))
        self.feed.set_rng_states(mine["numpy_rng"])
        self.best, self.step_no = float(meta["best"]), int(meta["step"])
        self.seconds_before = float(meta.get("train_seconds", 0.0))

    def train_seconds(self) -> float:
        """Wall time of the steps that made these weights, over every resumed process."""
        return self.seconds_before + time.perf_counter() - self.t_train


_SECRET_WORDS = ("key", "secret", "token", "password")


def _public(value: Any) -> Any:
    """The config as recorded in checkpoints: credential values masked (storage options)."""
    if isinstance(value, dict):
        return {k: "***" if any(w in str(k).lower() for w in _SECRET_WORDS)
                and isinstance(v, str | bytes) else _public(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def run_training(cfg: TrainConfig, log: Callable[[str], None] = print, resume: bool = False,
                 rank: Rank | None = None, progress: Any = None,
                 on_save: Callable[[int], None] | None = None, run_token: str | None = None,
                 ) -> tuple[Path, CheckpointConfig]:
    """Train per ``cfg``; returns (final weights path, final checkpoint config).

    ``progress(record)`` is called after every step; ``on_save(step)`` on every rank after
    each training checkpoint (Ray Train reports it). ``run_token`` marks the checkpoints of
    this run: a restarted worker group resumes from them without ``resume``.
    """
    from hgn_model.training.evaluation import evaluate_plan

    rank = rank or Rank()
    t0 = time.perf_counter()
    run = _Run(cfg, rank, log)
    store = RunStore(cfg.state_dir or f"{cfg.output}_train", cfg.output_storage_options)
    last = store.latest()
    if last is not None and (resume or (run_token and store.token(last) == run_token)):
        run.restore(*store.load(last))
        log(f"resumed from step {last} ({store.url})")
    run.token = run_token
    log(f"data ready in {time.perf_counter() - t0:.1f}s: {len(run.plan.train)} training "
        f"scenes, context {run.size} px, crop {cfg.crop} px, {cfg.batch_size} crops per step")
    every = cfg.checkpoint_every or cfg.eval_every
    run.t_train = t_step = time.perf_counter()
    losses: list[float] = []
    while run.step_no < cfg.steps:
        parts = run.step()
        losses.append(parts["loss"])
        now = time.perf_counter()
        record = {"step": run.step_no, **parts, "step_time": round(now - t_step, 4)}
        t_step = now
        if progress is not None:
            progress(record)
        if rank.main and (run.step_no % cfg.log_every == 0 or run.step_no == cfg.steps
                          or run.step_no == 1):
            store.append_metrics(record)
            log(f"step {run.step_no:6d}/{cfg.steps} loss {parts['loss']:.4f} lr "
                f"{parts['lr']:.2e} " + " ".join(f"{k} {v:.3f}" for k, v in parts.items()
                                                 if k not in ("loss", "lr"))
                + f"  {record['step_time']:.2f}s/step")
        if cfg.eval_every and run.step_no % cfg.eval_every == 0 and run.step_no < cfg.steps \
                and run.plan.val:
            _validate(run, store, evaluate_plan)
        if every and run.step_no % every == 0 and run.step_no < cfg.steps:
            _save_state(run, store)
            if on_save is not None:
                on_save(run.step_no)
    train_seconds = run.train_seconds()
    if every and store.latest() != run.step_no:  # the end state too: --resume --steps extends
        _save_state(run, store)
    metrics = _validate(run, store, evaluate_plan) if run.plan.val else {}
    if run.plan.test is not None and rank.main:  # the benchmark: held-out seeds, val beside
        test_src, regions = run.plan.test()
        metrics = {"test_seeds": [int(r) for r, _ in regions],
                   **evaluate_plan(run.model, run.checkpoint_config({}), test_src, regions),
                   "val": metrics}
    final = run.checkpoint_config(metrics, {
        "train_seconds": round(train_seconds, 1),
        "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
        **_rank_digests(run)})
    path = Path(cfg.output).with_suffix(".safetensors")
    if rank.main:
        final = store.save_final(cfg.output, run.model.eval(), final, cfg.weights_dtype)
        store.append_metrics({"step": run.step_no, "final": metrics})
        store.flush_metrics()
        log(f"saved {cfg.output}.safetensors: " + ", ".join(
            f"{k} {v}" for k, v in metrics.items() if isinstance(v, int | float)))
    store.close()
    run.feed.close()
    return path, final


def _save_state(run: _Run, store: RunStore) -> None:
    """A training checkpoint (collective: every rank gathers, rank 0 writes)."""
    state = run.state()
    if run.rank.main:
        store.save(run.step_no, run.model, run.checkpoint_config({}), *state,
                   keep_last=run.cfg.keep_last)
        store.flush_metrics()
    if run.rank.world > 1:
        torch.distributed.barrier()


def _rank_digests(run: _Run) -> dict[str, Any]:
    """sha256 of every rank's final weights and buffers: data-parallel ranks must agree."""
    import hashlib

    if run.rank.world > 1:  # BN running stats last moved on each rank's own batch: take rank 0's
        for buf in run.model.buffers():
            torch.distributed.broadcast(buf, 0)
    h = hashlib.sha256()
    for k, v in run.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()
    digests = [digest]
    if run.rank.world > 1:
        digests = [None] * run.rank.world
        torch.distributed.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")
        run.log(f"all {run.rank.world} ranks hold identical weights (sha256 {digest[:16]})")
    return {"weights_sha256_by_rank": digests}


def _validate(run: _Run, store: RunStore, evaluate_plan: Callable[..., dict]) -> dict[str, Any]:
    """Val metrics (rank 0 computes, others wait); keeps ``best`` by val mIoU."""
    metrics: dict[str, Any] = {}
    if run.rank.main:
        metrics = evaluate_plan(run.model, run.checkpoint_config({}), run.plan.val_source(),
                                run.plan.val)
        store.append_metrics({"step": run.step_no, "val": metrics})
        run.log(f"val @ {run.step_no}: mIoU {metrics['miou']} pixel accuracy "
                f"{metrics['pixel_accuracy']}")
        if metrics["miou"] > run.best:
            run.best = metrics["miou"]
            store.save_best(run.model, run.checkpoint_config({**metrics, "step": run.step_no}))
    if run.rank.world > 1:
        torch.distributed.barrier()
    return metrics
