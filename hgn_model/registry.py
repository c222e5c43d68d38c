"""Model registry: names map to a class plus default settings; variants are data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hgn_model.errors import ConfigError, UnknownModelError
from hgn_model.models import HGN, DeepOnly, ISDNetLike

__all__ = ["create_model", "format1_settings", "list_models", "model_defaults"]


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    contrastive: bool = False  # whether training adds the shallow-deep contrastive loss
    doc: str = ""


_REGISTRY: dict[str, _Entry] = {
    "hgn": _Entry(HGN, {}, True, "HGN: GSAG + LSAG + contrastive (the shipped model)"),
    "hgn_no_gsag": _Entry(HGN, {"gsag_stages": ()}, True, "HGN without global grafting"),
    "hgn_no_lsag": _Entry(HGN, {"lsag": False}, True, "HGN with plain upsample+sum decoder"),
    "hgn_no_contrast": _Entry(HGN, {"contrast_dim": 0}, False, "HGN trained without contrast"),
    "isdnet_like": _Entry(ISDNetLike, {}, False, "ISDNet-style dilated deep + RAF fusion"),
    "deep_only": _Entry(DeepOnly, {}, False, "ResNet-18 on the 1/4 image, FPN decoder"),
}


# Architecture settings of format-1 checkpoints (trained before the context recipe) where the
# defaults changed since; applied under a format-1 file's own model_cfg so it still loads.
_FORMAT1 = {
    HGN: {"gsag_stages": (0, 1, 2), "graft": "trunk", "finest": "lsag_head", "pool_norm": True,
          "resample": "fine", "laplacian": True},
    ISDNetLike: {"pool_norm": True},
    DeepOnly: {"pool_norm": True},
}


def format1_settings(name: str) -> dict[str, Any]:
    """Settings that rebuild the architecture a format-1 checkpoint of ``name`` was saved from."""
    entry = _entry(name)
    return {k: v for k, v in _FORMAT1.get(entry.builder, {}).items() if k not in entry.defaults}


def list_models() -> list[str]:
    """Registered model names."""
    return sorted(_REGISTRY)


def model_defaults(name: str) -> dict[str, Any]:
    """The settings a registered name adds on top of its class's defaults."""
    return dict(_entry(name).defaults)


def uses_contrastive(name: str) -> bool:
    """True when training this model adds the shallow-deep contrastive loss."""
    return _entry(name).contrastive


def create_model(name: str, num_classes: int, **cfg: Any) -> nn.Module:
    """Build a registered model: ``create_model("hgn", num_classes=10, width=0.5)``.

    ``cfg`` overrides the variant's defaults; an unknown key raises ConfigError naming it.
    """
    entry = _entry(name)
    kwargs = {**entry.defaults, **cfg}
    try:
        return entry.builder(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: bad setting in {sorted(kwargs)}: {exc}") from exc


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}"
        ) from None
