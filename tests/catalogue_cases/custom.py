"""Catalogue cases of ``custom_constraint``: user maps with an inverse, and onto matrix groups."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

import geoparam
from constraint_testing import BadCall, Case, double, singular_values

# ---- the user's side: maps, inverses and predicates, as a user would write them ----


def softplus_inverse(W: Tensor) -> Tensor:
    return W + torch.log(-torch.expm1(-W))


def is_positive(W: Tensor) -> bool:
    return bool(W.min() > 0)


def cayley_of_skew(X: Tensor) -> Tensor:
    """``(I - A/2)⁻¹ (I + A/2)`` with ``A = X - Xᴴ``: onto SO(n) (real) or U(n) (complex)."""
    A = X - X.mH
    eye = torch.eye(X.size(-1), dtype=X.dtype, device=X.device)
    return torch.linalg.solve(eye - A / 2, eye + A / 2)


def _unitary_error(W: Tensor) -> float:
    eye = torch.eye(W.size(-1), dtype=W.dtype, device=W.device)
    return float((W.mH @ W - eye).abs().max())


def is_unitary(W: Tensor) -> bool:
    return _unitary_error(W) <= 1e3 * torch.finfo(W.dtype).eps


def is_rotation(W: Tensor) -> bool:
    return is_unitary(W) and bool((torch.linalg.det(W) > 0).all())


def has_positive_det(W: Tensor) -> bool:
    return bool((torch.linalg.det(W) > 0).all())


# ---- the oracles and points on and off the sets, independent of geoparam ----


def positive(W: Tensor, atol: float) -> str | None:
    smallest = float(W.min())
    return None if smallest > 0 else f"its smallest entry is {smallest:.3g}"


def positive_det(W: Tensor, atol: float) -> str | None:
    sign, _ = torch.linalg.slogdet(W.to(double(W.dtype)))
    return None if bool((sign > 0).all()) else f"det signs {sign.tolist()}"


def unit_singular_values(W: Tensor, atol: float) -> str | None:
    error = float((singular_values(W) - 1).abs().max())
    return None if error <= atol else f"singular values off 1 by {error:.3g}"


def rotation(W: Tensor, atol: float) -> str | None:
    return unit_singular_values(W, atol) or positive_det(W, atol)


def _det_sign(Z: Tensor, sign: float) -> Tensor:
    # Flip the first row where det(Z) does not have the wanted sign.
    flip = torch.where(torch.linalg.det(Z) * sign > 0, 1.0, -1.0).to(Z.dtype)
    Z = Z.clone()
    Z[..., 0, :] *= flip[..., None]
    return Z


def _rotation(Z: Tensor, sign: float = 1.0) -> Tensor:
    return _det_sign(torch.linalg.qr(Z).Q, sign)


CASES = [
    Case(
        id="custom_constraint-positive-softplus",
        register=lambda m: geoparam.custom_constraint(
            m, "weight", F.softplus, softplus_inverse, in_manifold=is_positive
        ),
        shape=(3, 4),
        satisfies=positive,
        on_set=lambda Z: Z.abs() + 0.1,
    ),
    Case(
        id="custom_constraint-glplus-matrix_exp",
        register=lambda m: geoparam.custom_constraint(
            m, "weight", torch.linalg.matrix_exp, in_manifold=has_positive_det, group=True
        ),
        shape=(4, 4),
        satisfies=positive_det,
        on_set=lambda Z: _det_sign(Z, 1.0),
        off_set=lambda Z: _det_sign(Z, -1.0),
    ),
    Case(
        id="custom_constraint-so-cayley-batched",
        register=lambda m: geoparam.custom_constraint(
            m, "weight", cayley_of_skew, in_manifold=is_rotation, group=True
        ),
        shape=(2, 3, 3),
        satisfies=rotation,
        on_set=_rotation,
        off_set=lambda Z: _rotation(Z, -1.0),  # orthogonal, but det = -1
    ),
    Case(
        id="custom_constraint-unitary-cayley-complex64",
        register=lambda m: geoparam.custom_constraint(
            m, "weight", cayley_of_skew, in_manifold=is_unitary, group=True
        ),
        shape=(3, 3),
        satisfies=unit_singular_values,
        on_set=lambda Z: torch.linalg.qr(Z).Q,
        dtype=torch.complex64,
    ),
]

BAD_CALLS = [
    BadCall(
        "custom_constraint-f-not-callable",
        lambda m: geoparam.custom_constraint(m, "weight", 3.0),
        (3, 3),
        TypeError,
        r"Holder\.weight of shape \(3, 3\): f must be callable, got 3\.0",
    ),
    BadCall(
        "custom_constraint-inverse-not-callable",
        lambda m: geoparam.custom_constraint(m, "weight", torch.exp, "log"),
        (3, 3),
        TypeError,
        "inverse must be callable or None, got 'log'",
    ),
    BadCall(
        "custom_constraint-predicate-not-callable",
        lambda m: geoparam.custom_constraint(m, "weight", torch.exp, in_manifold=True),
        (3, 3),
        TypeError,
        "in_manifold must be callable or None, got True",
    ),
    BadCall(
        "custom_constraint-group-vector",
        lambda m: geoparam.custom_constraint(m, "weight", torch.exp, group=True),
        (3,),
        ValueError,
        r"of shape \(3,\): group=True needs a square matrix",
    ),
    BadCall(
        "custom_constraint-group-non-square",
        lambda m: geoparam.custom_constraint(m, "weight", torch.linalg.matrix_exp, group=True),
        (3, 4),
        ValueError,
        r"of shape \(3, 4\): group=True needs a square matrix",
    ),
    BadCall(
        "custom_constraint-group-not-through-identity",
        lambda m: geoparam.custom_constraint(m, "weight", torch.exp, group=True),
        (3, 3),
        ValueError,
        r"group=True needs f\(0\) = I .* max \|f\(0\) - I\| is 1",
    ),
    BadCall(
        "custom_constraint-group-with-inverse",
        lambda m: geoparam.custom_constraint(
            m, "weight", torch.linalg.matrix_exp, torch.linalg.matrix_exp, group=True
        ),
        (3, 3),
        ValueError,
        "needs no inverse",
    ),
    BadCall(
        "custom_constraint-f-wrong-shape",
        lambda m: geoparam.custom_constraint(m, "weight", lambda X: X.sum(-1)),
        (3, 4),
        ValueError,
        r"f must return a tensor of its input's shape and dtype; .* returned shape \(3,\)",
    ),
    BadCall(
        "custom_constraint-f-wrong-dtype",
        lambda m: geoparam.custom_constraint(m, "weight", lambda X: X.double()),
        (3, 4),
        ValueError,
        "returned shape \\(3, 4\\) and dtype torch.float64",
    ),
    BadCall(
        "custom_constraint-f-not-tensor",
        lambda m: geoparam.custom_constraint(m, "weight", lambda X: X.tolist()),
        (3, 4),
        TypeError,
        "f must return a tensor, got a list",
    ),
]
