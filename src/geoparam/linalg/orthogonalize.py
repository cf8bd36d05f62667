"""Projections onto orthogonal matrices and the inverse of the Householder map."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["householder_reflectors", "is_orthogonal", "polar", "qr_positive"]


def is_orthogonal(Q: Tensor) -> bool:
    """Whether ``Q`` (shape ``(..., n, k)``, ``n >= k``) has orthonormal columns.

    The test that ``torch.nn.utils.parametrizations.orthogonal`` uses to decide whether to keep a
    weight, so that both libraries keep the same weights: ``torch.allclose(QᴴQ, I, atol)`` with
    ``atol = 10 · n · eps`` of ``Q``'s dtype. ``allclose`` adds its default relative tolerance,
    ``1e-5``, on the diagonal.

    Example:
        >>> is_orthogonal(torch.eye(3))
        True
        >>> is_orthogonal(2 * torch.eye(3))
        False
    """
    n, k = Q.size(-2), Q.size(-1)
    eye = torch.eye(k, dtype=Q.dtype, device=Q.device)
    atol = 10.0 * n * torch.finfo(Q.dtype).eps
    return torch.allclose(Q.mH @ Q, eye, atol=atol)


def qr_positive(A: Tensor) -> Tensor:
    """The ``Q`` factor of ``A = QR`` with ``diag(R)`` real and non-negative.

    This normalisation makes the factor unique for a full-rank ``A``, so an orthogonal
    ``A`` maps to itself. Where a diagonal entry of ``R`` is exactly zero (a rank-deficient
    ``A``) its column keeps LAPACK's sign instead of being zeroed.

    Args:
        A: tensor of shape ``(..., n, k)`` with ``n >= k``, real or complex.

    Returns:
        Tensor of shape ``(..., n, k)`` with orthonormal columns.

    Example:
        >>> A = torch.randn(5, 3, dtype=torch.float64)
        >>> Q = qr_positive(A)
        >>> bool((Q.mT @ A).diagonal().min() > 0)
        True
    """
    reflectors, tau = torch.geqrf(A)
    Q = torch.linalg.householder_product(reflectors, tau)
    signs = reflectors.diagonal(dim1=-2, dim2=-1).sgn()
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return Q * signs.unsqueeze(-2)


def householder_reflectors(Q: Tensor) -> Tensor:
    """Reflectors ``X`` with ``householder(X) · diag(sign(diag X)) = qr_positive(Q)``.

    The inverse of the Householder orthogonal map: the strictly lower part of the result holds
    the reflector tails (unit diagonal implied, ``tau = 2/‖v‖²``) and its diagonal holds the
    column signs (``±1``); the upper part keeps LAPACK's ``R`` entries, which the map ignores
    (they are kept so that the stored tensor matches torch's bit for bit). Columns where LAPACK
    applies no reflection (``tau = 0``) get a ``-1`` sign, since an identity reflector is read as
    a reflection by the forward map.

    Args:
        Q: real tensor of shape ``(..., n, k)`` with ``n >= k``.

    Returns:
        Tensor of the same shape.

    Example:
        >>> Q = qr_positive(torch.randn(4, 4, dtype=torch.float64))
        >>> X = householder_reflectors(Q)
        >>> sorted(X.diagonal().abs().tolist())
        [1.0, 1.0, 1.0, 1.0]
    """
    X, tau = torch.geqrf(Q)
    diagonal = X.diagonal(dim1=-2, dim2=-1)
    diagonal.sign_()
    # A zero of R (rank-deficient Q) keeps LAPACK's sign, as in qr_positive; left at 0 it
    # would read as +1 below and, with tau = 0, flip the column.
    diagonal[diagonal == 0.0] = 1.0
    diagonal[tau == 0.0] *= -1
    return X


def polar(A: Tensor) -> Tensor:
    """The orthogonal (unitary) factor ``U`` of the polar decomposition ``A = U P``.

    ``U = W Vᴴ`` from the SVD ``A = W Σ Vᴴ``: the matrix with orthonormal columns nearest to
    ``A`` in every unitarily invariant norm. Used to remove the rounding drift that products of
    many orthogonal factors accumulate.

    Args:
        A: tensor of shape ``(..., n, k)`` with ``n >= k``, real or complex.

    Returns:
        Tensor of shape ``(..., n, k)`` with orthonormal columns.

    Example:
        >>> U = polar(torch.tensor([[2.0, 0.0], [0.0, -3.0]]))
        >>> U
        tensor([[ 1.,  0.],
                [ 0., -1.]])
    """
    W, _, Vh = torch.linalg.svd(A, full_matrices=False)
    return W @ Vh
