"""Catalogue cases of entrywise constraints: positive, bounded, stochastic, doubly stochastic."""

from __future__ import annotations

import torch

import geoparam
from constraint_testing import BadCall, Case
from geoparam.errors import UnsupportedDtypeError


def _positive_satisfies(W: torch.Tensor, atol: float) -> str | None:
    smallest = float(W.min())
    return None if smallest > 0 else f"its smallest entry is {smallest:.3g}"


def _positive(shape, f="softplus", suffix=""):
    return Case(
        id=f"positive-{suffix}",
        register=lambda m: geoparam.positive(m, f=f),
        shape=shape,
        satisfies=_positive_satisfies,
        on_set=lambda G: G.exp(),
    )


def _bounded(shape, low=0.0, high=1.0, suffix=""):
    width = high - low

    def satisfies(W: torch.Tensor, atol: float) -> str | None:
        smallest, largest = float(W.min()), float(W.max())
        if smallest < low - atol * width or largest > high + atol * width:
            return f"its entries span [{smallest:.4g}, {largest:.4g}], not in [{low}, {high}]"
        return None

    return Case(
        id=f"bounded-{suffix}",
        register=lambda m: geoparam.bounded(m, low=low, high=high),
        shape=shape,
        satisfies=satisfies,
        on_set=lambda G: low + width * torch.special.ndtr(G),
        # Every entry at least twice the width away from zero, so outside the interval.
        off_set=lambda G: G + 2 * width * G.sign(),
    )


def _sums_to_one(*dims: int):
    """The oracle: non-negative entries summing to 1 along each of ``dims``."""

    def satisfies(W: torch.Tensor, atol: float) -> str | None:
        W = W.double()
        if float(W.min()) < -atol:
            return f"its smallest entry is {float(W.min()):.3g}"
        for dim in dims:
            error = float((W.sum(dim) - 1).abs().max())
            if error > atol:
                return f"its sums along dim {dim} are off 1 by {error:.3g}"
        return None

    return satisfies


def _with_zeros(G: torch.Tensor, dim: int) -> torch.Tensor:
    # Probability vectors whose smallest entry is exactly zero: the set's boundary.
    P = torch.softmax(G, dim=dim) * (G.amin(dim=dim, keepdim=True) < G)
    return P / P.sum(dim=dim, keepdim=True)


def _simplex(shape, dim=-1, zeros=False, suffix=""):
    return Case(
        id=f"simplex-{suffix}",
        register=lambda m: geoparam.simplex(m, dim=dim),
        shape=shape,
        satisfies=_sums_to_one(dim),
        on_set=(lambda G: _with_zeros(G, dim)) if zeros else (lambda G: torch.softmax(G, dim)),
    )


def _birkhoff(G: torch.Tensor) -> torch.Tensor:
    """A doubly stochastic matrix: a convex combination of permuted circulant permutations."""
    n = G.size(-1)
    weights = torch.softmax(G[..., 0, :], dim=-1)  # one weight per cyclic shift
    order = G[..., 1, :].argsort(dim=-1)  # a random permutation of the rows
    eye = torch.eye(n, dtype=G.dtype)
    shifts = torch.stack([eye.roll(k, dims=-1) for k in range(n)])  # (n, n, n)
    W = (weights[..., :, None, None] * shifts).sum(dim=-3)
    return W.gather(-2, order.unsqueeze(-1).expand_as(W))


def _doubly_stochastic(shape, suffix=""):
    return Case(
        id=f"doubly_stochastic-{suffix}",
        register=geoparam.doubly_stochastic,
        shape=shape,
        satisfies=_sums_to_one(-1, -2),
        on_set=_birkhoff,
    )


CASES = [
    _positive((3, 4), suffix="matrix"),
    _positive((5,), f="exp", suffix="exp-vector"),
    _positive((2, 3, 4), f=(torch.exp, torch.log), suffix="pair-batched"),
    _bounded((3, 4), suffix="matrix"),
    _bounded((5,), low=-2.0, high=3.0, suffix="vector"),
    _bounded((2, 2, 3), low=-1.0, high=1.0, suffix="batched"),
    _simplex((3, 4), zeros=True, suffix="rows"),
    _simplex((5,), suffix="vector"),
    _simplex((4, 3), dim=0, suffix="columns"),
    _simplex((2, 3, 4), dim=1, suffix="batched"),
    _doubly_stochastic((4, 4), suffix="square"),
    _doubly_stochastic((2, 3, 3), suffix="batched"),
    _doubly_stochastic((2, 2), suffix="2x2"),
]

BAD_CALLS = [
    BadCall(
        "positive-f-without-inverse",
        lambda m: geoparam.positive(m, f=torch.exp),
        (3, 2),
        ValueError,
        r"f has no inverse.*pass f as a pair",
    ),
    BadCall(
        "positive-unknown-f",
        lambda m: geoparam.positive(m, f="relu"),
        (3, 4),
        ValueError,
        r"Holder\.weight of shape \(3, 4\): f must be one of \"softplus\", \"exp\"",
    ),
    BadCall(
        "positive-complex",
        geoparam.positive,
        (3,),
        UnsupportedDtypeError,
        "a positive weight needs real entries, got dtype torch.complex64",
        dtype=torch.complex64,
    ),
    BadCall(
        "bounded-empty-interval",
        lambda m: geoparam.bounded(m, low=1.0, high=1.0),
        (3,),
        ValueError,
        r"of shape \(3,\): low must be below high, got low=1.0, high=1.0",
    ),
    BadCall(
        "bounded-infinite",
        lambda m: geoparam.bounded(m, high=float("inf")),
        (3,),
        ValueError,
        "high must be finite, got inf",
    ),
    BadCall(
        "simplex-dim-out-of-range",
        lambda m: geoparam.simplex(m, dim=2),
        (3, 4),
        ValueError,
        r"of shape \(3, 4\): dim must be a non-empty dimension, in \[-2, 1\]; got 2",
    ),
    BadCall(
        "simplex-dim-not-int",
        lambda m: geoparam.simplex(m, dim=1.0),
        (3, 4),
        TypeError,
        "dim must be an int, got 1.0",
    ),
    BadCall(
        "doubly_stochastic-non-square",
        geoparam.doubly_stochastic,
        (3, 4),
        ValueError,
        "a doubly stochastic weight needs square matrices, got 3 x 4",
    ),
    BadCall(
        "doubly_stochastic-vector",
        geoparam.doubly_stochastic,
        (4,),
        ValueError,
        "needs a matrix or a batch of matrices",
    ),
    BadCall(
        "doubly_stochastic-no-iterations",
        lambda m: geoparam.doubly_stochastic(m, n_iterations=0),
        (3, 3),
        ValueError,
        "n_iterations must be at least 1, got 0",
    ),
]
