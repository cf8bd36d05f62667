"""Catalogue cases of linear subspaces: skew-symmetric, symmetric and Hermitian weights."""

from __future__ import annotations

import torch

import geoparam
from constraint_testing import BadCall, Case, double


def _mirror(W: torch.Tensor, conjugate: bool) -> torch.Tensor:
    return W.mH if conjugate else W.mT


def _mirrored(sign: int, conjugate: bool):
    """The oracle: ``W = sign · mirror(W)`` up to ``atol`` relative to the largest entry."""

    def satisfies(W: torch.Tensor, atol: float) -> str | None:
        W = W.to(double(W.dtype))
        error = float((W - sign * _mirror(W, conjugate)).abs().max())
        scale = float(W.abs().max().clamp_min(1e-300))
        return None if error <= atol * scale else f"W - {sign}·mirror(W) reaches {error:.3g}"

    return satisfies


def _case(kind, register, sign, conjugate, shape, dtype=torch.float32, suffix=""):
    return Case(
        id=f"{kind}-{suffix}",
        register=register,
        shape=shape,
        satisfies=_mirrored(sign, conjugate),
        on_set=lambda G: (G + sign * _mirror(G, conjugate)) / 2,
        dtype=dtype,
    )


def _skew(shape, dtype=torch.float32, lower=True, suffix=""):
    register = lambda m: geoparam.skew(m, lower=lower)  # noqa: E731
    return _case("skew", register, -1, True, shape, dtype, suffix)


def _symmetric(shape, dtype=torch.float32, lower=True, suffix=""):
    register = lambda m: geoparam.symmetric(m, lower=lower)  # noqa: E731
    return _case("symmetric", register, 1, False, shape, dtype, suffix)


def _hermitian(shape, dtype=torch.complex64, lower=True, suffix=""):
    register = lambda m: geoparam.hermitian(m, lower=lower)  # noqa: E731
    return _case("hermitian", register, 1, True, shape, dtype, suffix)


CASES = [
    _skew((4, 4), suffix="square"),
    _skew((5, 5), lower=False, suffix="upper"),
    _skew((2, 3, 3), suffix="batched"),
    _skew((3, 3), dtype=torch.complex64, suffix="complex"),
    _symmetric((4, 4), suffix="square"),
    _symmetric((3, 3), lower=False, suffix="upper"),
    _symmetric((2, 4, 4), suffix="batched"),
    _symmetric((3, 3), dtype=torch.complex64, suffix="complex"),
    _hermitian((4, 4), suffix="complex"),
    _hermitian((2, 3, 3), lower=False, suffix="batched-upper"),
    _hermitian((3, 3), dtype=torch.float32, suffix="real"),
]

BAD_CALLS = [
    BadCall(
        "skew-non-square",
        geoparam.skew,
        (3, 4),
        ValueError,
        r"Holder\.weight of shape \(3, 4\): skew-symmetric needs square matrices, got 3 x 4",
    ),
    BadCall(
        "skew-vector",
        geoparam.skew,
        (4,),
        ValueError,
        r"of shape \(4,\): skew-symmetric needs a matrix or a batch of matrices",
    ),
    BadCall(
        "skew-lower-not-bool",
        lambda m: geoparam.skew(m, lower="yes"),
        (3, 3),
        TypeError,
        "lower must be a bool, got 'yes'",
    ),
    BadCall(
        "symmetric-non-square",
        geoparam.symmetric,
        (2, 4, 3),
        ValueError,
        "symmetric needs square matrices, got 4 x 3",
    ),
    BadCall(
        "hermitian-vector",
        geoparam.hermitian,
        (3,),
        ValueError,
        "Hermitian needs a matrix or a batch of matrices",
        dtype=torch.complex64,
    ),
]
