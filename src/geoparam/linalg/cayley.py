"""The Cayley map of skew-symmetric and skew-Hermitian matrices."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cayley"]


def cayley(A: Tensor) -> Tensor:
    """Cayley transform ``(I - A/2)⁻¹ (I + A/2)`` of a batch of skew matrices.

    Placeholder that calls :func:`torch.linalg.solve`; the fast kernel replaces it.

    Args:
        A: tensor of shape ``(..., n, n)`` with ``A = -Aᴴ``.

    Returns:
        The orthogonal (unitary) matrix ``(I - A/2)⁻¹ (I + A/2)``.

    Example:
        >>> X = torch.randn(4, 4)
        >>> Q = cayley(X - X.mT)
        >>> torch.allclose(Q.mT @ Q, torch.eye(4), atol=1e-5)
        True
    """
    eye = torch.eye(A.size(-1), dtype=A.dtype, device=A.device)
    return torch.linalg.solve(eye - 0.5 * A, eye + 0.5 * A)
