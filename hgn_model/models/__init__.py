"""Architectures, one file each: HGN, the ISDNet-like baseline and the deep-only baseline."""

from hgn_model.models.deep_only import DeepOnly
from hgn_model.models.hgn import HGN
from hgn_model.models.isdnet import ISDNetLike

__all__ = ["HGN", "DeepOnly", "ISDNetLike"]
