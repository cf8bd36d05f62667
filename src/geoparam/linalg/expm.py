"""Exponential of skew-symmetric and skew-Hermitian matrices."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expm_skew"]


def expm_skew(A: Tensor) -> Tensor:
    """Matrix exponential of a batch of skew-symmetric (or skew-Hermitian) matrices.

    Placeholder that calls :func:`torch.matrix_exp`; the fast kernel replaces it.

    Args:
        A: tensor of shape ``(..., n, n)`` with ``A = -Aᴴ``.

    Returns:
        ``exp(A)``, orthogonal (unitary) up to rounding.

    Example:
        >>> X = torch.randn(4, 4)
        >>> Q = expm_skew(X - X.mT)
        >>> torch.allclose(Q.mT @ Q, torch.eye(4), atol=1e-5)
        True
    """
    return torch.matrix_exp(A)
