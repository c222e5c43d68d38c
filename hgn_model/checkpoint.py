"""Checkpoints: safetensors weights + a JSON config. Nothing is ever unpickled.

A checkpoint is a pair ``<stem>.safetensors`` + ``<stem>.json``. The JSON records the
architecture and its settings, the classes (names, RGBA colours, mask ids, ignore flags), the
input bands and their per-dtype normalisation in raw units (``hgn_model.input_spec``, contract
C1), the training data fingerprint, evaluation metrics and the sha256 of the weights file, which
``load_checkpoint`` verifies before anything is built.

Format ``hgn-checkpoint/2`` is written; ``hgn-checkpoint/1`` files (one mean/std in [0, 1]
units) still load and are converted in memory (see ``InputSpec``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from hgn_model._version import __version__
from hgn_model.errors import CheckpointError
from hgn_model.input_spec import InputSpec, Normalization
from hgn_model.registry import create_model, format1_settings, list_models

__all__ = [
    "CheckpointConfig",
    "ClassInfo",
    "InputSpec",
    "Normalization",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "shipped_checkpoint",
]

FORMAT = "hgn-checkpoint/2"
READABLE_FORMATS = ("hgn-checkpoint/1", FORMAT)  # /1 is converted on load
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
# Files that would need unpickling; refused by name and by content (pickle/zip magic bytes).
_PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".tar"}


class ClassInfo(BaseModel):
    """One output class: the label written for it = its index in ``CheckpointConfig.classes``.

    ``id`` is the value the class had in the training masks (None: same as the index);
    ``ignore`` classes were left out of the loss and the metrics.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    color: tuple[int, int, int, int] = Field(description="RGBA, 0-255")
    id: int | None = Field(None, description="value of this class in the training masks")
    ignore: bool = Field(False, description="left out of the loss and the metrics")


class CheckpointConfig(BaseModel):
    """The JSON half of a checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())
    format: str = FORMAT
    arch: str
    model_cfg: dict[str, Any] = Field(default_factory=dict)
    classes: list[ClassInfo]
    input: InputSpec
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    weights_dtype: str = "float32"
    sha256: str = ""
    created: str = ""
    package_version: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.input.bands


def shipped_checkpoint(name: str = "hgn") -> Path:
    """Path of a checkpoint shipped inside the package (``hgn``, ``isdnet_like``, ...)."""
    path = SHIPPED_DIR / f"{name}.safetensors"
    if not path.exists():
        shipped = sorted(p.stem for p in SHIPPED_DIR.glob("*.safetensors"))
        raise CheckpointError(
            f"no shipped checkpoint named {name!r} in {SHIPPED_DIR}; shipped: {shipped or 'none'}"
        )
    return path


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(weights, json) paths for a checkpoint given as its .safetensors, its .json or its stem."""
    p = Path(path).expanduser()
    if p.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"checkpoint {str(p)!r} looks like a pickle file ({p.suffix}); pickle checkpoints are "
            "refused because loading them can run code. Use a .safetensors + .json pair."
        )
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    weights, cfg = p.with_suffix(".safetensors"), p.with_suffix(".json")
    for f in (weights, cfg):
        if not f.is_file():
            raise CheckpointError(
                f"checkpoint file {str(f)!r} not found; a checkpoint is a "
                f"<stem>.safetensors + <stem>.json pair (got {str(path)!r})"
            )
    return weights, cfg


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(
    model: nn.Module, config: CheckpointConfig, stem: str | Path, weights_dtype: str = "float32"
) -> CheckpointConfig:
    """Write ``<stem>.safetensors`` + ``<stem>.json``; returns the config with sha256 filled.

    ``weights_dtype="float16"`` halves the file (the shipped models use it); floating tensors
    are cast back to float32 on load.
    """
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    dtype = {"float32": torch.float32, "float16": torch.float16}[weights_dtype]
    tensors = {
        k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    weights = stem.with_suffix(".safetensors")
    save_file(tensors, str(weights), metadata={"format": FORMAT, "arch": config.arch})
    final = config.model_copy(update={
        "sha256": _sha256(weights),
        "weights_dtype": weights_dtype,
        "created": config.created or datetime.now(UTC).isoformat(timespec="seconds"),
        "package_version": __version__,
    })
    stem.with_suffix(".json").write_text(json.dumps(final.model_dump(mode="json"), indent=2) + "\n")
    return final


def read_config(path: str | Path) -> CheckpointConfig:
    """Parse and validate a checkpoint's JSON (no weights read)."""
    _, cfg_path = resolve_checkpoint(path)
    try:
        raw = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint config {str(cfg_path)!r} is not valid JSON: {exc}"
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") not in READABLE_FORMATS:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"checkpoint config {str(cfg_path)!r}: unknown format {got!r}; expected one of "
            f"{list(READABLE_FORMATS)}"
        )
    if raw["format"] == "hgn-checkpoint/1" and raw.get("arch") in list_models():
        # the architecture defaults changed with format 2: rebuild the one it was saved from
        raw = {**raw, "model_cfg": {**format1_settings(raw["arch"]), **raw.get("model_cfg", {})}}
    raw = {**raw, "format": FORMAT}  # a /1 input spec is converted by InputSpec's validator
    try:
        return CheckpointConfig.model_validate(raw)
    except ValidationError as exc:
        raise CheckpointError(f"checkpoint config {str(cfg_path)!r} is invalid: {exc}") from exc


def _looks_pickled(path: Path) -> bool:
    """Pickle (protocol 2+: 0x80 then the protocol byte) or zip (torch.save) bytes.

    A safetensors file starts with its header length (8 bytes, little endian) and then the
    JSON header's "{": that shape is checked first, since a header length whose low byte is
    0x80 would otherwise look like a pickle opcode.
    """
    with path.open("rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return False
    return (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")) \
        or head[:2] == b"PK"


def load_checkpoint(path: str | Path) -> tuple[nn.Module, CheckpointConfig]:
    """Verify and load a checkpoint; returns (model in eval mode on CPU, config).

    Raises CheckpointError on a missing file, a pickle file, an unknown format, a sha256
    mismatch (tampered or truncated weights), an unknown arch, or tensors that do not fit.
    """
    weights, cfg_path = resolve_checkpoint(path)
    if _looks_pickled(weights):
        raise CheckpointError(
            f"{str(weights)!r} holds pickle/zip data, not safetensors; refusing to load it"
        )
    config = read_config(cfg_path)
    digest = _sha256(weights)
    if digest != config.sha256:
        raise CheckpointError(
            f"checkpoint {str(weights)!r}: sha256 {digest[:16]}... does not match the "
            f"{config.sha256[:16] or '<empty>'}... recorded in {cfg_path.name}; the weights were "
            "modified or truncated. Re-download or re-export the checkpoint."
        )
    if config.arch not in list_models():
        raise CheckpointError(
            f"checkpoint arch {config.arch!r} is not registered; known: {list_models()}"
        )
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"{str(weights)!r} is not a readable safetensors file: {exc}"
        ) from exc
    model = create_model(config.arch, config.num_classes, in_channels=config.in_channels,
                         **config.model_cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {str(weights)!r} does not fit arch {config.arch!r}: "
            f"missing tensors {missing[:5]}, unexpected tensors {unexpected[:5]}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"checkpoint {str(weights)!r}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"arch {config.arch!r} with {config.model_cfg} expects {tuple(expected[key].shape)}"
            )
        if tensor.is_floating_point():
            state[key] = tensor.to(expected[key].dtype)
    model.load_state_dict(state)
    return model.eval(), config
