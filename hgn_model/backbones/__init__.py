"""Hand-written backbones: a ResNet-18-style deep branch and an STDC-style shallow branch."""

from hgn_model.backbones.resnet import ResNet18
from hgn_model.backbones.stdc import ShallowSTDC, laplacian_residuals

__all__ = ["ResNet18", "ShallowSTDC", "laplacian_residuals"]
