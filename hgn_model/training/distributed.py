"""Data-parallel training on Ray: ``hgn-pipeline train --workers N`` (Ray Train TorchTrainer).

Each worker runs the same loop (``hgn_model.training.loop``) on its own crops (its data RNG
is seeded with its rank), gradients are averaged by DistributedDataParallel: gloo on CPU,
NCCL on GPUs (``--gpus-per-worker``). Rank 0 evaluates and writes checkpoints; at the end
every rank's weights are hashed and must agree.

Without ``--address`` a private local Ray on 127.0.0.1 is started (no dashboard) and stopped
at the end; ``--address auto`` / ``HOST:PORT`` / ``ray://...`` joins a running cluster (the
state folder then must be on storage every node reaches, e.g. s3://). A killed worker or node
restarts the worker group (``FailureConfig(max_failures)``), and the loop resumes from the last
training checkpoint it reported.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hgn_model.checkpoint import CheckpointConfig, read_config
from hgn_model.errors import ConfigError
from hgn_model.training.config import TrainConfig

__all__ = ["MAX_FAILURES", "train_distributed"]

MAX_FAILURES = 3  # worker-group restarts before the run gives up


@contextlib.contextmanager
def _ray(address: str | None, num_cpus: int | None, num_gpus: int | None) -> Iterator[None]:
    address = address or os.environ.get("RAY_ADDRESS") or None
    import ray

    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=True, configure_logging=False)
    else:
        try:
            ray.init(address=address, configure_logging=False)
        except ConnectionError as exc:
            raise ConfigError(f"--address {address!r}: no Ray cluster answers there ({exc}); "
                              "start one with `ray start --head --node-ip-address=127.0.0.1` "
                              "or omit --address for a local Ray") from None
    try:
        yield
    finally:
        ray.shutdown()


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import warnings

    import ray.train

    # channels-last 1x1 parameters (the graft gates) have ambiguous strides; DDP's bucket
    # copy is correct and the warning says so ("not an error")
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    from hgn_model.training.loop import Rank, run_training

    ctx = ray.train.get_context()
    rank = Rank(ctx.get_world_rank(), ctx.get_world_size())
    cfg = TrainConfig.model_validate(config["cfg"])
    log: Callable[[str], None] = (lambda m: print(m, flush=True)) if rank.main \
        else (lambda m: None)

    def on_save(step: int) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank.main:
                Path(tmp, "step.txt").write_text(str(step))
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({"step": step}, checkpoint=checkpoint)

    # a worker group restarted after a failure finds this run's own checkpoints (its token)
    run_training(cfg, log=log, resume=config["resume"], rank=rank, on_save=on_save,
                 run_token=config["token"])
    ray.train.report({"step": cfg.steps, "done": 1})


def train_distributed(cfg: TrainConfig, workers: int, gpus_per_worker: float = 0.0,
                      address: str | None = None, resume: bool = False,
                      log: Callable[[str], None] = print) -> tuple[Path, CheckpointConfig]:
    """Train on ``workers`` Ray Train workers; returns (final weights path, its config)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if workers < 2:
        raise ConfigError(f"--workers {workers}: use the plain process for one worker")
    use_gpu = gpus_per_worker > 0
    threads = cfg.threads or 1
    resources = {"CPU": threads, **({"GPU": gpus_per_worker} if use_gpu else {})}
    state = Path(cfg.state_dir or f"{cfg.output}_train")
    storage = str((state / "ray").resolve()) if "://" not in str(state) else f"{state}/ray"
    cfg = cfg.model_copy(update={"threads": threads})
    local_cpus = workers * threads if address is None else None
    with _ray(address, local_cpus, None if use_gpu else 0):
        log(f"Ray Train: {workers} workers x {threads} CPU"
            + (f" + {gpus_per_worker} GPU" if use_gpu else "")
            + f", backend {'nccl' if use_gpu else 'gloo'}")
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"cfg": cfg.model_dump(mode="json"), "resume": resume,
                               "token": uuid.uuid4().hex},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker=resources),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(name="hgn-train", storage_path=storage,
                                 failure_config=FailureConfig(max_failures=MAX_FAILURES)),
        )
        result = trainer.fit()
        if result.error is not None:
            raise RuntimeError(f"distributed training failed: {result.error}")
    path = Path(cfg.output).with_suffix(".safetensors")
    if "://" in cfg.output and not cfg.output.startswith("file://"):
        import json

        import fsspec

        with fsspec.open(f"{cfg.output}.json", "r", **cfg.output_storage_options) as fh:
            return path, CheckpointConfig.model_validate(json.load(fh))
    return path, read_config(path)
