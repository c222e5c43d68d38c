"""The training configuration (YAML): one validated, frozen object; unknown fields are errors.

Example ``train.yaml`` for image/mask pairs (Inria-style GeoTIFFs)::

    model: hgn
    data:
      kind: pairs
      root: /data/inria            # local folder or s3://bucket/prefix
      image: "images/{id}.tif"
      mask: "gt/{id}.tif"
      classes: [{id: 0, name: background}, {id: 255, name: building}]
      train_ids: [austin1, austin2]
      val_ids: [austin3]
    crop: 512
    batch_size: 2
    steps: 2000
    seed: 0
    output: runs/inria/model      # -> runs/inria/model.safetensors + .json

``classes``, ``train_ids`` and ``val_ids`` may also be given at the top level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hgn_model.errors import ConfigError

__all__ = ["BlockSplit", "PairsData", "SyntheticData", "TrainConfig", "ZarrData",
           "load_train_config"]


class BlockSplit(BaseModel):
    """Hold out spatial blocks of every scene for validation, with a gap of one crop."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    split: Literal["block"] = "block"
    fraction: float = Field(0.2, gt=0, lt=1, description="share of blocks held out")
    block: int | None = Field(None, ge=64, description="block side in px (default: context)")


class SyntheticData(BaseModel):
    """The procedural benchmark: scenes drawn from seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["synthetic"] = "synthetic"
    train_seeds: list[int] = Field(default_factory=lambda: list(range(12)))
    val_seeds: list[int] = Field(default_factory=lambda: [500, 501])
    test_seeds: list[int] = Field(default_factory=lambda: [1000, 1001, 1002, 1003],
                                  description="held-out seeds scored into the checkpoint")
    scene_size: int = Field(2448, ge=64)
    bands: Literal[3, 4] = 3
    dtype: Literal["uint8", "uint16"] = "uint8"
    normalization_dtypes: list[Literal["uint8", "uint16"]] = Field(
        default_factory=list,
        description="also measure normalisation entries on these renderings of the training "
                    "seeds (e.g. [uint16]), so the checkpoint takes such scenes")


class _RasterData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    root: str = Field(description="folder or URL (s3://...) the patterns are relative to")
    classes: list[Any] | str | None = Field(
        None, description="class table: list of {id, name, color?, ignore?} or a YAML file")
    train_ids: list[str] | None = None
    val_ids: list[str] | None = None
    val: BlockSplit | None = Field(None, description="block split instead of val_ids")
    bands: list[int] | None = Field(None, description="0-based band selection and order")
    nodata: float | None = Field(None, description="image nodata value (overrides the file's)")
    unlisted: Literal["error", "ignore"] = Field(
        "error", description="mask values not in the class table: an error, or ignored")
    storage_options: dict[str, Any] = Field(default_factory=dict,
                                            description="fsspec/s3fs options for root")

    @model_validator(mode="after")
    def _one_split(self) -> _RasterData:
        if self.val is not None and self.val_ids is not None:
            raise ValueError("give either val_ids or val: {split: block}, not both")
        return self


class PairsData(_RasterData):
    """Image + mask rasters matched by ``{id}`` patterns (GeoTIFF/COG, PNG, JPEG, ...)."""

    kind: Literal["pairs"] = "pairs"
    image: str = Field(description='pattern with {id}, e.g. "images/{id}.tif"')
    mask: str = Field(description='pattern with {id}, e.g. "gt/{id}.tif"; RGB masks are '
                                  "mapped through the classes' colours")

    @model_validator(mode="after")
    def _patterns(self) -> PairsData:
        for name in ("image", "mask"):
            if getattr(self, name).count("{id}") != 1:
                raise ValueError(f"{name} pattern {getattr(self, name)!r} needs exactly one "
                                 "{id}")
        return self


class ZarrData(_RasterData):
    """A folder of zarr groups, each with an image array and a labels array."""

    kind: Literal["zarr"] = "zarr"
    image: str = Field("image", description="array name of the image in each group")
    labels: str = Field("labels", description="array name of the labels in each group")
    layout: Literal["CHW", "HWC"] = "CHW"


DataConfig = Annotated[SyntheticData | PairsData | ZarrData, Field(discriminator="kind")]


class TrainConfig(BaseModel):
    """A training run; every field that changes the result is here."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    model: str = Field("hgn", description="registered model name (hgn_model.list_models())")
    model_cfg: dict[str, Any] = Field(default_factory=dict, description="overrides, e.g. width")
    data: DataConfig = Field(default_factory=SyntheticData)
    crop: int = Field(512, ge=32, description="detail crop side (px): shallow branch, decoder "
                                              "and main loss; a multiple of 32")
    context: int = Field(0, ge=0, description="context crop side for the deep branch (px, a "
                         "multiple of 128); 0 = 4 x crop, capped by the smallest scene")
    per_context: int = Field(2, ge=1, description="detail crops per context crop")
    batch_size: int = Field(2, ge=1, description="detail crops per step (per worker)")
    steps: int = Field(2000, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    momentum: float = Field(0.9, ge=0, description="SGD only")
    poly_power: float = Field(0.9, ge=0, description="lr *= (1 - step/steps) ** power")
    warmup_steps: int = Field(30, ge=0)
    loss: dict[str, float | str] = Field(
        default_factory=dict, description="hgn_model.losses.LossWeights overrides: ce, aux, "
                                          "contrast, tau, ...")
    class_weighting: Literal["none", "sqrt_inv"] = "sqrt_inv"
    class_aware: float = Field(0.5, ge=0, le=1, description="share of class-aware crops")
    eval_every: int = Field(0, ge=0, description="steps between val evaluations (0: end)")
    checkpoint_every: int = Field(0, ge=0, description="steps between training checkpoints "
                                                       "(0: eval_every, else the end only)")
    keep_last: int = Field(3, ge=1, description="training checkpoints kept (plus best)")
    log_every: int = Field(25, ge=1)
    data_threads: int = Field(0, ge=0, description="threads drawing crops (0: 1 on CPU, up to "
                                                   "8 on CUDA, where augmentation runs on the "
                                                   "device)")
    init_from: str | None = Field(None, description="checkpoint to fine-tune from")
    seed: int = 0
    threads: int | None = Field(None, description="torch threads per worker (None: default)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="CUDA only; "
                                                        "auto = bf16 where supported")
    output: str = Field("checkpoints/model", description="stem of the final checkpoint; "
                        "training state goes to <output>_train/")
    state_dir: str | None = Field(None, description="training checkpoints and metrics.jsonl "
                                  "(default <output>_train; local or s3://)")
    output_storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec/s3fs options when output is s3://...")
    weights_dtype: Literal["float32", "float16"] = "float32"

    @model_validator(mode="before")
    @classmethod
    def _lift_data_fields(cls, raw: Any) -> Any:
        """Accept classes / train_ids / val_ids / val at the top level too."""
        if not isinstance(raw, dict):
            return raw
        moved = {k: raw[k] for k in ("classes", "train_ids", "val_ids", "val") if k in raw}
        if not moved:
            return raw
        data = dict(raw.get("data") or {})
        both = sorted(set(moved) & set(data))
        if both:
            raise ValueError(f"{both} given both at the top level and under data:")
        return {**{k: v for k, v in raw.items() if k not in moved}, "data": {**data, **moved}}

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict) \
                and "kind" not in raw["data"]:
            return {**raw, "data": {**raw["data"], "kind": "synthetic"}}
        return raw

    @model_validator(mode="after")
    def _sizes(self) -> TrainConfig:
        if self.crop % 32:
            raise ValueError(f"crop={self.crop} must be a multiple of 32")
        if self.context and (self.context % 128 or self.context < self.crop):
            raise ValueError(f"context={self.context} must be a multiple of 128 and >= crop")
        return self

    @property
    def contexts_per_step(self) -> int:
        return max(1, self.batch_size // self.details_per_context)

    @property
    def details_per_context(self) -> int:
        return min(self.per_context, self.batch_size)


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML training config; unknown or mistyped fields raise ConfigError naming them.

    ``overrides`` (None values skipped) replace top-level fields.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read training config {str(path)!r}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"training config {str(path)!r} must be a YAML mapping")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    _relative_to(Path(path).parent, raw)
    return validate_train_config(raw, str(path))


def _relative_to(base: Path, raw: dict[str, Any]) -> None:
    """A class-table file named relative to the config is found next to it."""
    for holder in (raw, raw.get("data") if isinstance(raw.get("data"), dict) else {}):
        spec = holder.get("classes")
        if isinstance(spec, str) and not Path(spec).is_absolute() and (base / spec).is_file():
            holder["classes"] = str(base / spec)


def validate_train_config(raw: dict[str, Any], where: str = "<config>") -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "<root>"
        value = first.get("input")
        shown = "" if isinstance(value, dict) else f" ({value!r})"
        raise ConfigError(f"training config {where!r}: field {field!r}{shown}: "
                          f"{first['msg']}") from exc
