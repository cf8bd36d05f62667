"""Catalogue cases of the singular-value family: low and fixed rank, almost orthogonal, spectral
bound, GL⁺ and SL.

The oracles read singular values and determinants from ``torch.linalg`` in double precision; the
points on the set are built from a truncated or rescaled ``torch.linalg.svd``.
"""

from __future__ import annotations

import torch
from torch import Tensor

import geoparam
from constraint_testing import BadCall, Case, singular_values

# ----------------------------------------------------------------------------- oracles


def _det(W: Tensor) -> Tensor:
    return torch.linalg.det(W.to(torch.float64))


def rank_at_most(rank: int):
    def satisfies(W: Tensor, atol: float) -> str | None:
        s = singular_values(W)
        tail = (s[..., rank:] / s[..., :1].clamp_min(1e-30)).amax() if rank < s.size(-1) else 0
        return None if tail <= atol else f"sigma_{rank + 1} / sigma_1 = {float(tail):.3g}"

    return satisfies


def rank_exactly(rank: int):
    at_most = rank_at_most(rank)

    def satisfies(W: Tensor, atol: float) -> str | None:
        problem = at_most(W, atol)
        s = singular_values(W)
        low = (s[..., rank - 1] / s[..., 0]).amin()
        return problem or (None if low > atol else f"sigma_{rank} / sigma_1 = {float(low):.3g}")

    return satisfies


def band(lam: float):
    def satisfies(W: Tensor, atol: float) -> str | None:
        far = float((singular_values(W) - 1).abs().max())
        return None if far <= lam + atol else f"max |sigma - 1| = {far:.4g} > {lam}"

    return satisfies


def bounded_by(c: float):
    def satisfies(W: Tensor, atol: float) -> str | None:
        top = float(singular_values(W).max())
        return None if top <= c * (1 + atol) else f"sigma_1 = {top:.4g} > {c}"

    return satisfies


def positive_determinant(W: Tensor, atol: float) -> str | None:
    det = _det(W)
    return None if bool((det > 0).all()) else f"det = {det.min().item():.3g}"


def unit_determinant(W: Tensor, atol: float) -> str | None:
    # A determinant is a product of n singular values: its rounding is about n times theirs.
    error = float((_det(W) - 1).abs().max())
    return None if error <= 10 * atol else f"|det - 1| = {error:.3g}"


# ----------------------------------------------------------------------------- points


def _svd(X: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return torch.linalg.svd(X, full_matrices=False)


def truncated(rank: int, floor: float = 0.0):
    def on_set(X: Tensor) -> Tensor:
        U, s, Vh = _svd(X)
        s = (s[..., :rank] + floor).to(X.dtype)
        return (U[..., :rank] * s.unsqueeze(-2)) @ Vh[..., :rank, :]

    return on_set


def inside_band(lam: float):
    def on_set(X: Tensor) -> Tensor:
        U, s, Vh = _svd(X)
        s = 1 + 0.9 * lam * torch.tanh(s - s.mean(dim=-1, keepdim=True))
        return (U * s.to(X.dtype).unsqueeze(-2)) @ Vh

    return on_set


def within(c: float):
    def on_set(X: Tensor) -> Tensor:
        return X * (0.9 * c / singular_values(X)[..., :1, None]).to(X.dtype)

    return on_set


def with_determinant_sign(sign: float):
    def on_set(X: Tensor) -> Tensor:
        X = X + 2 * torch.eye(X.size(-1), dtype=X.dtype)  # better conditioned
        flip = torch.where(_det(X) * sign < 0, -1.0, 1.0).to(X.dtype)
        X = X.clone()
        X[..., 0, :] *= flip.unsqueeze(-1)
        return X

    return on_set


def unit_det(X: Tensor) -> Tensor:
    X = with_determinant_sign(1.0)(X)
    return X / _det(X).pow(1 / X.size(-1)).to(X.dtype)[..., None, None]


# ----------------------------------------------------------------------------- cases


def _low_rank(rank, **kw):
    return lambda m: geoparam.low_rank(m, "weight", rank, **kw)


def _fixed_rank(rank, **kw):
    return lambda m: geoparam.fixed_rank(m, "weight", rank, **kw)


def _almost(lam, **kw):
    return lambda m: geoparam.almost_orthogonal(m, "weight", lam, **kw)


def _bound(c, **kw):
    return lambda m: geoparam.spectral_bound(m, "weight", c, **kw)


CASES = [
    Case("low_rank-square", _low_rank(2), (5, 5), rank_at_most(2), truncated(2)),
    Case("low_rank-tall", _low_rank(2), (7, 4), rank_at_most(2), truncated(2)),
    Case("low_rank-wide", _low_rank(2), (3, 6), rank_at_most(2), truncated(2)),
    Case("low_rank-batched", _low_rank(2), (2, 3, 5, 4), rank_at_most(2), truncated(2)),
    Case("low_rank-cayley", _low_rank(3, triv="cayley"), (6, 4), rank_at_most(3), truncated(3)),
    Case(
        "low_rank-complex",
        _low_rank(2),
        (5, 4),
        rank_at_most(2),
        truncated(2),
        dtype=torch.complex64,
    ),
    Case("fixed_rank-square", _fixed_rank(2), (5, 5), rank_exactly(2), truncated(2, 0.5)),
    Case("fixed_rank-tall", _fixed_rank(3), (7, 4), rank_exactly(3), truncated(3, 0.5)),
    Case("fixed_rank-wide", _fixed_rank(2), (3, 6), rank_exactly(2), truncated(2, 0.5)),
    Case("fixed_rank-batched", _fixed_rank(2), (2, 5, 4), rank_exactly(2), truncated(2, 0.5)),
    Case(
        "fixed_rank-exp-matrix_exp",
        _fixed_rank(2, f="exp", triv="matrix_exp"),
        (6, 4),
        rank_exactly(2),
        truncated(2, 0.5),
    ),
    Case(
        "fixed_rank-complex",
        _fixed_rank(2),
        (4, 5),
        rank_exactly(2),
        truncated(2, 0.5),
        dtype=torch.complex64,
    ),
    Case(
        "almost_orthogonal-square",
        _almost(0.5),
        (5, 5),
        band(0.5),
        inside_band(0.5),
        off_set=lambda X: 3 * X,
    ),
    Case(
        "almost_orthogonal-tall",
        _almost(0.3, f="tanh"),
        (7, 4),
        band(0.3),
        inside_band(0.3),
        off_set=lambda X: 3 * X,
    ),
    Case(
        "almost_orthogonal-wide",
        _almost(0.5, f="scaled_sigmoid"),
        (3, 6),
        band(0.5),
        inside_band(0.5),
        off_set=lambda X: 3 * X,
    ),
    Case(
        "almost_orthogonal-batched",
        _almost(0.2),
        (2, 3, 4, 4),
        band(0.2),
        inside_band(0.2),
        off_set=lambda X: 3 * X,
    ),
    Case(
        "almost_orthogonal-complex",
        _almost(0.5),
        (4, 6),
        band(0.5),
        inside_band(0.5),
        off_set=lambda X: 3 * X,
        dtype=torch.complex64,
    ),
    Case(
        "spectral_bound-square",
        _bound(2.0),
        (5, 5),
        bounded_by(2.0),
        within(2.0),
        off_set=lambda X: 3 * X,
    ),
    Case(
        "spectral_bound-tall",
        _bound(0.5),
        (7, 3),
        bounded_by(0.5),
        within(0.5),
        off_set=lambda X: 3 * X,
    ),
    Case(
        "spectral_bound-wide",
        _bound(1.0, triv="matrix_exp"),
        (3, 6),
        bounded_by(1.0),
        within(1.0),
        off_set=lambda X: 3 * X,
    ),
    Case(
        "spectral_bound-batched",
        _bound(1.0),
        (3, 4, 4),
        bounded_by(1.0),
        within(1.0),
        off_set=lambda X: 3 * X,
    ),
    Case(
        "spectral_bound-complex",
        _bound(1.0),
        (5, 3),
        bounded_by(1.0),
        within(1.0),
        off_set=lambda X: 3 * X,
        dtype=torch.complex64,
    ),
    Case(
        "invertible-square",
        lambda m: geoparam.invertible(m),
        (4, 4),
        positive_determinant,
        with_determinant_sign(1.0),
        off_set=with_determinant_sign(-1.0),
    ),
    Case(
        "invertible-batched-matrix_exp",
        lambda m: geoparam.invertible(m, triv="matrix_exp"),
        (3, 4, 4),
        positive_determinant,
        with_determinant_sign(1.0),
        off_set=with_determinant_sign(-1.0),
    ),
    Case(
        "invertible-exp",
        lambda m: geoparam.invertible(m, f="exp"),
        (5, 5),
        positive_determinant,
        with_determinant_sign(1.0),
        off_set=with_determinant_sign(-1.0),
    ),
    Case(
        "sln-square",
        lambda m: geoparam.sln(m),
        (4, 4),
        unit_determinant,
        unit_det,
        off_set=lambda X: 1.5 * unit_det(X),
    ),
    Case(
        "sln-batched-matrix_exp",
        lambda m: geoparam.sln(m, triv="matrix_exp"),
        (2, 3, 3),
        unit_determinant,
        unit_det,
        off_set=lambda X: 1.5 * unit_det(X),
    ),
]


def _bad(id, call, shape, error, match, dtype=torch.float32):
    return BadCall(id, call, shape, error, match, dtype)


_RANK = r"Holder\.weight of shape \(4, 6\): rank must be an int with 1 <= rank <= 4, got "

BAD_CALLS = [
    _bad("low_rank-rank-0", _low_rank(0), (4, 6), ValueError, _RANK + "0"),
    _bad("low_rank-rank-too-big", _low_rank(5), (4, 6), ValueError, _RANK + "5"),
    _bad("low_rank-rank-float", _low_rank(2.0), (4, 6), TypeError, _RANK + "2.0"),
    _bad("fixed_rank-rank-bool", _fixed_rank(True), (4, 6), TypeError, _RANK + "True"),
    _bad("low_rank-vector", _low_rank(1), (5,), ValueError, r"at least 2 dimensions"),
    _bad("low_rank-unknown-map", _low_rank(2, triv="expm"), (4, 6), ValueError, "triv must be"),
    _bad(
        "low_rank-householder-complex",
        _low_rank(2, triv="householder"),
        (4, 6),
        ValueError,
        "real weights only",
        torch.complex64,
    ),
    _bad("fixed_rank-unknown-f", _fixed_rank(2, f="sin"), (4, 6), ValueError, 'one of "softplus"'),
    _bad(
        "fixed_rank-f-without-inverse",
        _fixed_rank(2, f=torch.exp),
        (4, 6),
        ValueError,
        "f has no inverse",
    ),
    _bad("almost_orthogonal-lam-negative", _almost(-0.1), (4, 6), ValueError, r"lam must be in"),
    _bad("almost_orthogonal-lam-above-1", _almost(1.5), (4, 6), ValueError, r"lam must be in"),
    _bad("almost_orthogonal-lam-string", _almost("0.5"), (4, 6), TypeError, "lam must be a num"),
    _bad("almost_orthogonal-unknown-f", _almost(0.5, f="exp"), (4, 6), ValueError, '"sin"'),
    _bad("almost_orthogonal-vector", _almost(0.5), (6,), ValueError, "at least 2 dimensions"),
    _bad("spectral_bound-c-zero", _bound(0.0), (4, 6), ValueError, r"c must be a finite number"),
    _bad("spectral_bound-c-negative", _bound(-1.0), (4, 4), ValueError, r"c must be a finite"),
    _bad(
        "invertible-not-square",
        lambda m: geoparam.invertible(m),
        (4, 6),
        ValueError,
        r"Holder\.weight of shape \(4, 6\): invertible needs square matrices",
    ),
    _bad(
        "invertible-complex",
        lambda m: geoparam.invertible(m),
        (4, 4),
        ValueError,
        "needs a real weight",
        torch.complex64,
    ),
    _bad(
        "invertible-householder",
        lambda m: geoparam.invertible(m, triv="householder"),
        (4, 4),
        ValueError,
        r"can leave SO\(n\)",
    ),
    _bad(
        "invertible-f-without-inverse",
        lambda m: geoparam.invertible(m, f=torch.exp),
        (4, 4),
        ValueError,
        "f has no inverse",
    ),
    _bad("sln-not-square", lambda m: geoparam.sln(m), (3, 4), ValueError, "sln needs square"),
    _bad("sln-vector", lambda m: geoparam.sln(m), (4,), ValueError, "at least 2 dimensions"),
]
