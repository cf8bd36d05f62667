"""Inputs beyond torch's happy path: half precision, stacking, bad assignments and arguments."""

import pytest
import torch
from torch import nn

import geoparam
from geoparam.manifolds.orthogonal import _column_signs

MAPS = ["matrix_exp", "cayley", "householder"]


def _qr_positive_reference(W):
    Q, R = torch.linalg.qr(W.double())
    return Q * torch.sign(R.diagonal()).unsqueeze(-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("orthogonal_map", "use_trivialization"),
    [("matrix_exp", True), ("cayley", True), ("householder", True), ("householder", False)],
)
def test_half_precision_registration_orthogonalises_the_weight(
    dtype, orthogonal_map, use_trivialization
):
    layer = nn.Linear(32, 32).to(dtype)
    before = layer.weight.detach().clone()
    geoparam.orthogonal(layer, orthogonal_map=orthogonal_map, use_trivialization=use_trivialization)
    W = layer.weight.detach()
    assert W.dtype == dtype
    tolerance = 4 * 32 * torch.finfo(dtype).eps
    assert (W.double().T @ W.double() - torch.eye(32, dtype=torch.float64)).abs().max() < tolerance
    # The weight is the QR factor of the user's weight, not a fresh sample.
    expected = _qr_positive_reference(before)
    assert (W.double() - expected).abs().max() < tolerance


@pytest.mark.parametrize("first", ["weight_norm", "orthogonal"])
def test_orthogonal_stacked_on_another_parametrization(first):
    torch.manual_seed(0)
    layer = nn.Linear(5, 5)
    getattr(geoparam, first)(layer)
    geoparam.orthogonal(layer, orthogonal_map="cayley")
    W = layer.weight
    assert (W.T @ W - torch.eye(5)).abs().max() < 1e-5
    W.sum().backward()
    assert all(p.grad is not None for p in layer.parametrizations.weight.parameters())


def test_householder_sign_of_negative_zero_stays_negative():
    # Decoupled weight decay shrinks a -1 on the diagonal geometrically until it underflows to
    # -0.0; the column's sign must not flip there.
    X = torch.zeros(3, 3)
    X.diagonal().copy_(torch.tensor([-0.0, 0.0, -1e-45]))
    assert _column_signs(X).flatten().tolist() == [-1.0, 1.0, -1.0]


def test_legacy_spectral_norm_checkpoint_of_a_1d_weight():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(6))

    old = torch.nn.utils.spectral_norm(Scale())
    for _ in range(10):  # let the old power iteration converge so both weights are exact
        old._forward_pre_hooks[next(iter(old._forward_pre_hooks))](old, None)
    new = geoparam.spectral_norm(Scale())
    new.load_state_dict(old.state_dict())
    torch.testing.assert_close(new.weight, old.weight_orig / old.weight_orig.norm())
