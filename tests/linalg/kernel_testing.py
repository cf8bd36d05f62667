"""Helpers shared by the kernel tests."""

from __future__ import annotations

from collections.abc import Callable

import torch


def randn(*shape: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """A seeded standard normal tensor that leaves the global generator alone."""
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """``‖x - reference‖ / ‖reference‖`` in the Frobenius norm."""
    return (torch.linalg.norm(x - reference) / torch.linalg.norm(reference)).item()


def value_and_grad(
    f: Callable[[torch.Tensor], torch.Tensor], A: torch.Tensor, G: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(A)`` and the gradient of ``⟨G, f(A)⟩`` with respect to ``A``."""
    leaf = A.detach().clone().requires_grad_(True)
    Q = f(leaf)
    (grad,) = torch.autograd.grad(Q, leaf, G)
    return Q.detach(), grad
