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


def assert_vmap_and_compile_agree(
    kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    B: torch.Tensor,
    X: torch.Tensor,
    G: torch.Tensor,
    backend: str,
) -> None:
    """``kernel(B, X)``'s gradient with respect to ``X`` for the cotangent ``G``, as eager
    autograd gives it, equals the one from ``vmap(grad(...))`` over the batch and the one of
    ``torch.compile(fullgraph=True)`` with ``backend``."""

    def loss(base: torch.Tensor, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
        return (kernel(base, x) * cotangent).sum()

    per_matrix = torch.func.vmap(torch.func.grad(loss, argnums=1))(B, X, G)
    _, expected = value_and_grad(lambda x: kernel(B, x), X, G)
    torch.testing.assert_close(per_matrix, expected)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: kernel(B, x), fullgraph=True, backend=backend)
    _, grad = value_and_grad(compiled, X, G)
    torch.testing.assert_close(grad, expected)
