"""Tests for geoparam.linalg.power: power iteration for the top singular pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kernel_testing import randn

from geoparam.linalg import power_iteration_


def _start(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    *batch, h, w = shape
    u = F.normalize(randn(*batch, h, seed=seed), dim=-1)
    v = F.normalize(randn(*batch, w, seed=seed + 1), dim=-1)
    return u, v


def _with_gap(h: int, w: int, seed: int, ratio: float = 0.5) -> torch.Tensor:
    """A matrix whose singular values are 3, 3·ratio, ...: the iteration converges as ratio^2k."""
    U, _ = torch.linalg.qr(randn(h, h, seed=seed))
    V, _ = torch.linalg.qr(randn(w, w, seed=seed + 1))
    k = min(h, w)
    sigma = 3.0 * ratio ** torch.arange(k, dtype=torch.float64)
    return U[:, :k] @ torch.diag(sigma) @ V[:, :k].T


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 5)])
def test_converges_to_numpy_top_singular_pair(shape):
    W = _with_gap(*shape, seed=1)
    u, v = _start(shape, seed=2)
    power_iteration_(W, u, v, 60, 1e-12)
    U, S, Vh = np.linalg.svd(W.numpy())
    sigma = float(u @ W @ v)
    assert sigma == pytest.approx(S[0], rel=1e-12)
    # Singular vectors are defined up to a common sign.
    sign = np.sign(float(u @ torch.from_numpy(U[:, 0])))
    torch.testing.assert_close(u, sign * torch.from_numpy(U[:, 0]), rtol=0, atol=1e-10)
    torch.testing.assert_close(v, sign * torch.from_numpy(Vh[0]), rtol=0, atol=1e-10)


def test_one_step_is_the_textbook_update():
    W = randn(5, 3, seed=3)
    u, v = _start((5, 3), seed=4)
    expected_u = F.normalize(W @ v, dim=0)
    expected_v = F.normalize(W.T @ expected_u, dim=0)
    power_iteration_(W, u, v, 1, 1e-12)
    torch.testing.assert_close(u, expected_u, rtol=0, atol=0)
    torch.testing.assert_close(v, expected_v, rtol=0, atol=0)


def test_updates_the_given_tensors_in_place():
    W = randn(4, 3, seed=5)
    u, v = _start((4, 3), seed=6)
    u_storage, v_storage = u.data_ptr(), v.data_ptr()
    before = u.clone()
    power_iteration_(W, u, v, 2, 1e-12)
    assert (u.data_ptr(), v.data_ptr()) == (u_storage, v_storage)
    assert not torch.equal(u, before)


def test_zero_matrix_stays_finite():
    u, v = _start((4, 3), seed=7)
    power_iteration_(torch.zeros(4, 3, dtype=torch.float64), u, v, 3, 1e-12)
    assert bool(torch.isfinite(u).all() and torch.isfinite(v).all())


def test_complex_matrix_converges():
    W = randn(5, 4, seed=8, dtype=torch.complex128)
    u = F.normalize(randn(5, seed=9, dtype=torch.complex128), dim=0)
    v = F.normalize(randn(4, seed=10, dtype=torch.complex128), dim=0)
    power_iteration_(W, u, v, 500, 1e-12)
    assert abs(complex(u.conj() @ W @ v)) == pytest.approx(
        float(torch.linalg.matrix_norm(W, 2)), rel=1e-8
    )


def test_batch_iterates_each_matrix_as_alone():
    W = torch.stack([_with_gap(5, 4, seed=s) for s in (11, 13, 15)])
    u, v = _start((3, 5, 4), seed=17)
    alone = [(u[i].clone(), v[i].clone()) for i in range(3)]
    power_iteration_(W, u, v, 4, 1e-12)
    for i, (ui, vi) in enumerate(alone):
        power_iteration_(W[i], ui, vi, 4, 1e-12)
        torch.testing.assert_close(u[i], ui, rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(v[i], vi, rtol=1e-13, atol=1e-14)
