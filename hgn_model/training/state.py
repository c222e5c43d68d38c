"""Training checkpoints: safetensors + JSON (no pickle), local or s3://, keep-last-k, best.

Layout of a run's state folder (``<output>_train/``)::

    step_00000500.safetensors + .json   # an inference checkpoint (loads with Segmenter)
    step_00000500.state.safetensors     # optimizer moments
    step_00000500.state.json            # step, optimizer/scheduler settings, per-rank RNGs
                                        # and EMA bank, best val so far, training wall
                                        # time; written last: the commit marker
    best.safetensors + .json            # the best by val mIoU
    metrics.jsonl                       # one line per logged step / evaluation

A step counts as saved once its ``.state.json`` exists; ``latest`` ignores half-written steps.
Remote folders are written through a local staging folder and uploaded with fsspec.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hgn_model.checkpoint import CheckpointConfig, save_checkpoint
from hgn_model.errors import CheckpointError

__all__ = ["RunStore", "flatten_optimizer", "unflatten_optimizer"]

# What a resumable state records (an earlier layout lacks the per-rank RNG and EMA bank).
_STATE_KEYS = ("optimizer", "scheduler", "best", "step", "ranks")

_STEP = re.compile(r"step_(\d{8})\.state\.json$")


def flatten_optimizer(sd: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict as (tensors, JSON-ready metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
                        ) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": meta["param_groups"]}


class RunStore:
    """A run's state folder, local or remote (fsspec URL)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self.remote = "://" in url and not url.startswith("file://")
        self._options = dict(storage_options or {})
        self._local = Path(tempfile.mkdtemp(prefix="hgn-run-")) if self.remote \
            else Path(url.removeprefix("file://"))
        self._local.mkdir(parents=True, exist_ok=True)

    @property
    def _fs(self):
        import fsspec

        return fsspec.core.url_to_fs(self.url, **self._options)[0]

    def _push(self, *names: str) -> None:
        if self.remote:
            fs = self._fs
            for name in names:
                fs.put_file(str(self._local / name), f"{self.url}/{name}")

    def _pull(self, name: str) -> Path:
        if self.remote:
            self._fs.get_file(f"{self.url}/{name}", str(self._local / name))
        return self._local / name

    def _listing(self) -> list[str]:
        if self.remote:
            fs = self._fs
            return [p.rsplit("/", 1)[-1] for p in fs.ls(self.url, detail=False)] \
                if fs.exists(self.url) else []
        return [p.name for p in self._local.iterdir()]

    def steps(self) -> list[int]:
        return sorted(int(m.group(1)) for n in self._listing() if (m := _STEP.match(n)))

    def latest(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def token(self, step: int) -> str | None:
        """The run token a saved step was written with (None for runs without one)."""
        meta = json.loads(self._pull(f"step_{step:08d}.state.json").read_text())
        return meta.get("run")

    def save(self, step: int, model: torch.nn.Module, config: CheckpointConfig,
             tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], keep_last: int,
             weights_dtype: str = "float32") -> None:
        """Write one step (weights fp32 by default: resuming must not round them)."""
        stem = f"step_{step:08d}"
        save_file({k: v.contiguous() for k, v in tensors.items()},
                  str(self._local / f"{stem}.state.safetensors"))
        save_checkpoint(model, config, self._local / stem, weights_dtype)
        (self._local / f"{stem}.state.json").write_text(json.dumps({"step": step, **meta}))
        self._push(f"{stem}.state.safetensors", f"{stem}.safetensors", f"{stem}.json",
                   f"{stem}.state.json")
        for old in self.steps()[:-keep_last]:
            self._remove(f"step_{old:08d}")

    def save_best(self, model: torch.nn.Module, config: CheckpointConfig,
                  weights_dtype: str = "float32") -> None:
        save_checkpoint(model, config, self._local / "best", weights_dtype)
        self._push("best.safetensors", "best.json")

    def save_final(self, stem: str, model: torch.nn.Module, config: CheckpointConfig,
                   weights_dtype: str) -> CheckpointConfig:
        """The run's result at ``<stem>.safetensors`` + ``.json`` (local path or URL)."""
        if "://" not in stem or stem.startswith("file://"):
            return save_checkpoint(model, config, Path(stem.removeprefix("file://")),
                                   weights_dtype)
        final = save_checkpoint(model, config, self._local / "final", weights_dtype)
        fs = self._fs
        for ext in (".safetensors", ".json"):
            fs.put_file(str(self._local / f"final{ext}"), f"{stem}{ext}")
        return final

    def _remove(self, stem: str) -> None:
        names = [f"{stem}.state.json", f"{stem}.safetensors", f"{stem}.json",
                 f"{stem}.state.safetensors"]  # the commit marker first
        for name in names:
            (self._local / name).unlink(missing_ok=True)
            if self.remote:
                fs = self._fs
                if fs.exists(f"{self.url}/{name}"):
                    fs.rm_file(f"{self.url}/{name}")

    def load(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                       dict[str, Any]]:
        """(model state, state tensors, state JSON) of a saved step."""
        stem = f"step_{step:08d}"
        meta = json.loads(self._pull(f"{stem}.state.json").read_text())
        missing = [k for k in _STATE_KEYS if k not in meta]
        if missing:  # written by an earlier layout (before per-rank RNG and the EMA bank)
            raise CheckpointError(
                f"training state {self.url}/{stem}.state.json has no {', '.join(missing)}: it "
                "was written by an earlier version of hgn_model and cannot be resumed exactly; "
                "start over without --resume (or with another state_dir), or resume it with "
                "that version")
        tensors = load_file(str(self._pull(f"{stem}.state.safetensors")))
        self._pull(f"{stem}.json")
        weights = load_file(str(self._pull(f"{stem}.safetensors")))
        return weights, tensors, meta

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        with (self._local / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def flush_metrics(self) -> None:
        if (self._local / "metrics.jsonl").exists():
            self._push("metrics.jsonl")

    def close(self) -> None:
        if self.remote:
            shutil.rmtree(self._local, ignore_errors=True)
