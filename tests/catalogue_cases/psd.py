"""Catalogue cases of the positive (semi)definite family (oracles: eigvalsh, matrix_rank)."""

from __future__ import annotations

import torch
from torch import Tensor

import geoparam
from constraint_testing import BadCall, Case, distance_to_hermitian, double, hermitian_eigenvalues


def _psd(rank: int | None = None, positive: bool = False):
    """Oracle: Hermitian, no eigenvalue below 0, rank <= ``rank``, and (``positive``) the
    ``rank`` largest eigenvalues above 0 (every one, for a definite matrix)."""

    def satisfies(W: Tensor, atol: float) -> str | None:
        if distance_to_hermitian(W) > atol:
            return f"not Hermitian: {distance_to_hermitian(W):.3g}"
        lam = hermitian_eigenvalues(W)
        scale = max(1.0, float(lam.abs().max()))
        if float(lam.min()) < -atol * scale:
            return f"an eigenvalue {float(lam.min()):.3g} < 0"
        n = W.size(-1)
        r = n if rank is None else rank
        W64 = W.to(double(W.dtype))
        ranks = torch.linalg.matrix_rank(W64, atol=atol * scale, hermitian=True)
        if int(ranks.max()) > r:
            return f"rank {int(ranks.max())} > {r}"
        if positive and float(lam[..., n - r].min()) <= 0:
            return f"its {r}-th largest eigenvalue {float(lam[..., n - r].min()):.3g} is not > 0"
        return None

    return satisfies


def _gram(G: Tensor, k: int, shift: float = 0.0) -> Tensor:
    """``G[:, :k] G[:, :k]ᴴ / n + shift · I``: of rank ``k`` when ``shift = 0``."""
    n = G.size(-1)
    F = G[..., :k]
    eye = torch.eye(n, dtype=G.dtype)
    return F @ F.mH / n + shift * eye


def _indefinite(G: Tensor) -> Tensor:
    # Hermitian, with negative eigenvalues (a Gaussian matrix's symmetric part, n >= 3).
    return G + G.mH


def _cases() -> list[Case]:
    cases = []
    for suffix, shape, dtype in [
        ("", (5, 5), torch.float32),
        ("-batched", (2, 4, 4), torch.float32),
        ("-complex", (4, 4), torch.complex64),
    ]:
        n = shape[-1]
        cases += [
            Case(
                f"positive_definite{suffix}",
                geoparam.positive_definite,
                shape,
                _psd(positive=True),
                lambda G: _gram(G, G.size(-1), 0.5),
                _indefinite,
                dtype,
            ),
            Case(
                f"positive_semidefinite{suffix}",
                geoparam.positive_semidefinite,
                shape,
                _psd(),
                lambda G: _gram(G, G.size(-1) - 2),  # singular: kept as it is
                _indefinite,
                dtype,
            ),
            Case(
                f"positive_semidefinite_low_rank{suffix}",
                lambda m: geoparam.positive_semidefinite_low_rank(m, "weight", 2),
                shape,
                _psd(rank=2),
                lambda G: _gram(G, 1),  # rank below the bound
                _indefinite,
                dtype,
            ),
            Case(
                f"positive_semidefinite_fixed_rank{suffix}",
                lambda m, n=n: geoparam.positive_semidefinite_fixed_rank(m, "weight", n - 2),
                shape,
                _psd(rank=n - 2, positive=True),
                lambda G: _gram(G, G.size(-1) - 2),
                _indefinite,
                dtype,
            ),
        ]
    cases += [
        Case(
            "positive_definite-exp-householder",
            lambda m: geoparam.positive_definite(m, f="exp", triv="householder"),
            (4, 4),
            _psd(positive=True),
            lambda G: _gram(G, 4, 0.5),
            _indefinite,
        ),
        Case(
            "positive_semidefinite_low_rank-matrix_exp",
            lambda m: geoparam.positive_semidefinite_low_rank(m, "weight", 1, triv="matrix_exp"),
            (3, 3),
            _psd(rank=1),
            lambda G: _gram(G, 1),
            _indefinite,
        ),
    ]
    return cases


CASES = _cases()

_SQUARE = r"Holder\.weight of shape \(4, 6\): a positive {}must be a square matrix"

BAD_CALLS = [
    BadCall(
        "positive_definite-f-without-inverse",
        lambda m: geoparam.positive_definite(m, f=torch.exp),
        (3, 3),
        ValueError,
        r"f has no inverse.*pass f as a pair",
    ),
    BadCall(
        "positive_definite-wide",
        geoparam.positive_definite,
        (4, 6),
        ValueError,
        _SQUARE.format("definite matrix "),
    ),
    BadCall(
        "positive_definite-empty-matrices",
        geoparam.positive_definite,
        (2, 0, 0),
        ValueError,
        r"Holder\.weight of shape \(2, 0, 0\): a positive definite matrix must have at least one",
    ),
    BadCall(
        "positive_definite-vector",
        geoparam.positive_definite,
        (5,),
        ValueError,
        r"Holder\.weight of shape \(5,\): a positive definite matrix must be a square",
    ),
    BadCall(
        "positive_definite-unknown-f",
        lambda m: geoparam.positive_definite(m, f="relu"),
        (3, 3),
        ValueError,
        r"Holder\.weight of shape \(3, 3\): f must be one of \"softplus\", \"exp\"",
    ),
    BadCall(
        "positive_definite-unknown-triv",
        lambda m: geoparam.positive_definite(m, triv="expm"),
        (3, 3),
        ValueError,
        r"triv must be one of \"matrix_exp\", \"cayley\", \"householder\" or None, got 'expm'",
    ),
    BadCall(
        "positive_definite-complex-householder",
        lambda m: geoparam.positive_definite(m, triv="householder"),
        (3, 3),
        ValueError,
        'the "householder" map takes real weights only',
        torch.complex64,
    ),
    BadCall(
        "positive_semidefinite-wide",
        geoparam.positive_semidefinite,
        (4, 6),
        ValueError,
        _SQUARE.format("semidefinite matrix "),
    ),
    BadCall(
        "positive_semidefinite_low_rank-rank-0",
        lambda m: geoparam.positive_semidefinite_low_rank(m, "weight", 0),
        (5, 5),
        ValueError,
        r"Holder\.weight of shape \(5, 5\): rank must be an int with 1 <= rank <= 5, got 0\.",
    ),
    BadCall(
        "positive_semidefinite_low_rank-rank-too-large",
        lambda m: geoparam.positive_semidefinite_low_rank(m, "weight", 6),
        (5, 5),
        ValueError,
        r"rank must be an int with 1 <= rank <= 5, got 6\.",
    ),
    BadCall(
        "positive_semidefinite_low_rank-rank-float",
        lambda m: geoparam.positive_semidefinite_low_rank(m, "weight", 2.0),
        (5, 5),
        TypeError,
        r"rank must be an int with 1 <= rank <= 5, got 2\.0",
    ),
    BadCall(
        "positive_semidefinite_low_rank-wide",
        lambda m: geoparam.positive_semidefinite_low_rank(m, "weight", 2),
        (4, 6),
        ValueError,
        _SQUARE.format("semidefinite matrix of low rank "),
    ),
    BadCall(
        "positive_semidefinite_fixed_rank-rank-too-large",
        lambda m: geoparam.positive_semidefinite_fixed_rank(m, "weight", 7),
        (2, 5, 5),
        ValueError,
        r"Holder\.weight of shape \(2, 5, 5\): rank must be an int with 1 <= rank <= 5, got 7",
    ),
    BadCall(
        "positive_semidefinite_fixed_rank-unknown-f",
        lambda m: geoparam.positive_semidefinite_fixed_rank(m, "weight", 2, f="sin"),
        (5, 5),
        ValueError,
        r"f must be one of \"softplus\", \"exp\", a callable or a pair",
    ),
    BadCall(
        "positive_semidefinite_fixed_rank-vector",
        lambda m: geoparam.positive_semidefinite_fixed_rank(m, "weight", 1),
        (5,),
        ValueError,
        r"a positive semidefinite matrix of fixed rank must be a square matrix",
    ),
]
