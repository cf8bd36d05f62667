"""Parametrizations: ``nn.Module`` maps from unconstrained tensors onto constraint sets."""

from ._base import Parametrization
from .norms import SpectralNorm, WeightNorm
from .orthogonal import ORTHOGONAL_MAPS, Orthogonal, OrthogonalMap

__all__ = [
    "ORTHOGONAL_MAPS",
    "Orthogonal",
    "OrthogonalMap",
    "Parametrization",
    "SpectralNorm",
    "WeightNorm",
]
