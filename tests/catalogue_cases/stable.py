"""Catalogue cases of alpha_stable (oracle: the eigenvalues' real parts, torch.linalg.eigvals)."""

from __future__ import annotations

import torch
from torch import Tensor

import geoparam
from constraint_testing import BadCall, Case, double


def _stable(alpha: float):
    """Oracle: every eigenvalue has real part <= -alpha (up to atol times the spectral norm)."""

    def satisfies(W: Tensor, atol: float) -> str | None:
        W = W.to(double(W.dtype))
        rightmost = float(torch.linalg.eigvals(W).real.max())
        scale = max(1.0, float(torch.linalg.matrix_norm(W, ord=2).max()))
        if rightmost > -alpha + atol * scale:
            return f"an eigenvalue has real part {rightmost:.4g} > -alpha = {-alpha}"
        return None

    return satisfies


def _shifted(G: Tensor, shift: float) -> Tensor:
    """``G + (shift ∓ ‖G‖₂) I``: eigenvalues' real parts below ``shift`` (``-``) or above it."""
    norm = torch.linalg.matrix_norm(G, ord=2)[..., None, None]
    return G + (shift - norm) * torch.eye(G.size(-1), dtype=G.dtype)


def _case(id_: str, shape: tuple[int, ...], alpha: float, dtype=torch.float32) -> Case:
    return Case(
        id_,
        lambda m: geoparam.alpha_stable(m, alpha=alpha),
        shape,
        _stable(alpha),
        lambda G: _shifted(G, -alpha - 0.5),
        # a positive real part for sure: G + (‖G‖₂ + 0.5) I
        lambda G: (
            G
            + (torch.linalg.matrix_norm(G, ord=2)[..., None, None] + 0.5)
            * torch.eye(G.size(-1), dtype=G.dtype)
        ),
        dtype,
    )


CASES = [
    _case("alpha_stable", (5, 5), 0.5),
    _case("alpha_stable-batched", (2, 4, 4), 0.1),
    _case("alpha_stable-complex", (3, 3), 0.2, torch.complex64),
    _case("alpha_stable-alpha-0", (4, 4), 0.0),
]

BAD_CALLS = [
    BadCall(
        "alpha_stable-wide",
        geoparam.alpha_stable,
        (4, 6),
        ValueError,
        r"Holder\.weight of shape \(4, 6\): an alpha-stable matrix must be a square matrix",
    ),
    BadCall(
        "alpha_stable-vector",
        geoparam.alpha_stable,
        (5,),
        ValueError,
        r"Holder\.weight of shape \(5,\): an alpha-stable matrix must be a square matrix",
    ),
    BadCall(
        "alpha_stable-negative-alpha",
        lambda m: geoparam.alpha_stable(m, alpha=-1.0),
        (3, 3),
        ValueError,
        r"Holder\.weight of shape \(3, 3\): alpha must be finite and >= 0, got -1\.0",
    ),
    BadCall(
        "alpha_stable-nan-alpha",
        lambda m: geoparam.alpha_stable(m, alpha=float("nan")),
        (3, 3),
        ValueError,
        r"alpha must be finite and >= 0, got nan",
    ),
    BadCall(
        "alpha_stable-string-alpha",
        lambda m: geoparam.alpha_stable(m, alpha="0.1"),
        (3, 3),
        TypeError,
        r"alpha must be a real number, got '0\.1'",
    ),
]
