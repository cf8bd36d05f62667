"""Power iteration for the largest singular value of a matrix."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["power_iteration_"]


def _matvec(W: Tensor, x: Tensor) -> Tensor:
    # One matrix: torch.mv, as torch's spectral_norm (same rounding). A batch: batched GEMV.
    return torch.mv(W, x) if W.ndim == 2 else (W @ x.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def power_iteration_(W: Tensor, u: Tensor, v: Tensor, n_iterations: int, eps: float) -> None:
    """Refine, in place, the estimates ``u``, ``v`` of ``W``'s top singular vectors.

    Each iteration sets ``u ← normalize(W v)`` then ``v ← normalize(Wᴴ u)``, after which
    ``σ ≈ uᴴ W v`` (Miyato et al., "Spectral Normalization for Generative Adversarial
    Networks", ICLR 2018). Where ``W v`` (or ``Wᴴ u``) is zero, the vector keeps its value. The
    vectors are written in place so that replicas made by ``DataParallel``, which share the
    buffers' storage, update the original module.

    Args:
        W: matrix of shape ``(h, w)``, or a batch ``(..., h, w)``.
        u: unit vector(s) of shape ``(..., h)``, updated in place.
        v: unit vector(s) of shape ``(..., w)``, updated in place.
        n_iterations: number of iterations (``>= 0``).
        eps: floor on the norms, to avoid dividing by zero.

    Example:
        >>> W = torch.diag(torch.tensor([3.0, 1.0]))
        >>> u, v = torch.tensor([0.6, 0.8]), torch.tensor([0.8, 0.6])
        >>> power_iteration_(W, u, v, 20, 1e-12)
        >>> round(float(u @ W @ v), 4)
        3.0
    """
    for _ in range(n_iterations):
        _normalize_or_keep_(_matvec(W, v), eps, u)
        _normalize_or_keep_(_matvec(W.mH, u), eps, v)


def _normalize_or_keep_(x: Tensor, eps: float, out: Tensor) -> None:
    # x / max(‖x‖, eps), as F.normalize; but where ‖x‖ ≤ eps (a zero weight maps every vector
    # to zero) the estimate keeps its previous value instead of collapsing to zero for good: the
    # iteration then resumes from it once the weight moves away from zero.
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    normalized = x / norm.clamp_min(eps)
    # (An out= variant, not copy_: torch.func's transforms let the former write into a buffer
    # the transformed function captures.)
    torch.where(norm > eps, normalized, out, out=out)
