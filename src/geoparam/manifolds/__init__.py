"""Parametrizations: ``nn.Module`` maps from unconstrained tensors onto constraint sets."""

from .norms import SpectralNorm, WeightNorm
from .orthogonal import ORTHOGONAL_MAPS, Orthogonal, OrthogonalMap

__all__ = ["ORTHOGONAL_MAPS", "Orthogonal", "OrthogonalMap", "SpectralNorm", "WeightNorm"]
