"""geoparam: constrained weights for PyTorch.

Orthogonal, unitary and normalised weights as drop-in replacements for
:mod:`torch.nn.utils.parametrizations`, with fast structure-exploiting kernels.

Example:
    >>> import torch
    >>> import geoparam
    >>> layer = geoparam.orthogonal(torch.nn.Linear(8, 8))
    >>> torch.allclose(layer.weight.T @ layer.weight, torch.eye(8), atol=1e-5)
    True
"""

from . import constraints, conv, errors
from .constraints import *  # noqa: F403
from .conv import GroupSort, MaxMin, OrthogonalConv1d, OrthogonalConv2d
from .linalg import conv_singular_values, project_conv_operator_norm
from .training import (
    cached,
    caching,
    clear_caches,
    detect_nonfinite,
    find_nonfinite,
    freeze,
    reset_parametrizations,
    update_base,
    update_base_every,
)

__all__ = [
    "GroupSort",
    "MaxMin",
    "OrthogonalConv1d",
    "OrthogonalConv2d",
    "cached",
    "caching",
    "clear_caches",
    "conv",
    "conv_singular_values",
    "detect_nonfinite",
    "errors",
    "find_nonfinite",
    "freeze",
    "project_conv_operator_norm",
    "reset_parametrizations",
    "update_base",
    "update_base_every",
]
__all__ += constraints.__all__
__version__ = "0.1.0"
