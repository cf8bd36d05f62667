"""Catalogue cases of the Grassmannian: orthonormal frames that train as their span."""

from __future__ import annotations

import torch
from torch import Tensor

import geoparam
from constraint_testing import BadCall, Case, double


def _tall(W: Tensor) -> Tensor:
    return W.mT if W.size(-2) < W.size(-1) else W


def orthonormal(W: Tensor, atol: float) -> str | None:
    """Oracle: the columns (rows, if wide) are orthonormal, ``max |QᴴQ - I| <= atol``."""
    Q = _tall(W).to(double(W.dtype))
    error = float((Q.mH @ Q - torch.eye(Q.size(-1), dtype=Q.dtype)).abs().max())
    return None if error <= atol else f"max |QᴴQ - I| = {error:.3g}"


def frame(Z: Tensor) -> Tensor:
    """An orthonormal frame (in the weight's orientation) from a standard normal tensor."""
    Q = torch.linalg.qr(_tall(Z)).Q
    return Q.mT if Z.size(-2) < Z.size(-1) else Q


def _case(id: str, shape: tuple[int, ...], dtype=torch.float32, triv=None) -> Case:
    return Case(
        id=id,
        register=lambda m: geoparam.grassmannian(m, triv=triv),
        shape=shape,
        satisfies=orthonormal,
        on_set=frame,
        dtype=dtype,
    )


CASES = [
    _case("grassmannian-tall", (5, 3)),
    _case("grassmannian-wide-matrix_exp", (2, 6), triv="matrix_exp"),
    _case("grassmannian-batched", (2, 6, 2)),
    _case("grassmannian-complex64-matrix_exp", (4, 2), dtype=torch.complex64, triv="matrix_exp"),
    _case("grassmannian-complex64-wide", (3, 5), dtype=torch.complex64),
]

BAD_CALLS = [
    BadCall(
        "grassmannian-vector",
        lambda m: geoparam.grassmannian(m),
        (5,),
        ValueError,
        r"Holder\.weight of shape \(5,\): .* got a tensor of 1 dimensions",
    ),
    BadCall(
        "grassmannian-unknown-triv",
        lambda m: geoparam.grassmannian(m, triv="expm"),
        (5, 3),
        ValueError,
        r'triv must be "matrix_exp" or "cayley", got \'expm\'',
    ),
    BadCall(
        "grassmannian-triv-type",
        lambda m: geoparam.grassmannian(m, triv=torch.linalg.matrix_exp),
        (5, 3),
        TypeError,
        "triv must be",
    ),
    BadCall(
        "grassmannian-householder",
        lambda m: geoparam.grassmannian(m, triv="householder"),
        (5, 3),
        ValueError,
        'triv="householder" is not available',
    ),
    BadCall(
        "grassmannian-householder-complex",
        lambda m: geoparam.grassmannian(m, triv="householder"),
        (5, 3),
        ValueError,
        'triv="householder" is not available',
        dtype=torch.complex64,
    ),
]
