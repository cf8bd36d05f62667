"""Exponential of skew-symmetric and skew-Hermitian matrices.

The forward pass evaluates the optimized Taylor polynomials of Bader, Blanes and Casas (2019) with
scaling and squaring; the backward pass is reverse-mode differentiation of that same evaluation,
written out by hand so that it reuses what the forward pass computed.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._precision import working_dtype

__all__ = ["expm_skew"]

# Degree-8 scheme of Bader, Blanes and Casas (2019), three products, exactly T8:
#   B4 = B² (x1 B + x2 B²)
#   B8 = (x3 B² + B4)(x4 I + x5 B + x6 B² + x7 B4)
#   T8 = I + B + y2 B² + B8
_SQRT_177 = math.sqrt(177.0)
_T8_X3 = 2.0 / 3.0
_T8_X1 = _T8_X3 * (1.0 + _SQRT_177) / 88.0
_T8_X2 = _T8_X3 * (1.0 + _SQRT_177) / 352.0
_T8_X4 = (-271.0 + 29.0 * _SQRT_177) / (315.0 * _T8_X3)
_T8_X5 = 11.0 * (-1.0 + _SQRT_177) / (1260.0 * _T8_X3)
_T8_X6 = 11.0 * (-9.0 + _SQRT_177) / (5040.0 * _T8_X3)
_T8_X7 = (89.0 - _SQRT_177) / (5040.0 * _T8_X3 * _T8_X3)
_T8_Y2 = (857.0 - 58.0 * _SQRT_177) / 630.0

# Degree-12 scheme of Bader, Blanes and Casas (2019), four products, exactly T12. Row i gives
# C_i = sum_j T12[i][j] B^j over the powers (I, B, B², B³); then
#   B6 = C2 + C3 C3,   T12 = C0 + (C1 + B6) B6.
_T12 = (
    (9.0198e-16, 0.46932117595418237389, -0.20099424927047284052, -0.04623946134063071740),
    (
        5.31597895759871264183,
        1.19926790417132231573,
        0.01179296240992997031,
        0.01108844528519167989,
    ),
    (
        0.18188869982170434744,
        0.05502798439925399070,
        0.09351590770535414968,
        0.00610700528898058230,
    ),
    (-2.0861320e-13, -0.13181061013830184015, -0.02027855540589259079, -0.00675951846863086359),
)

# Degree-18 scheme of Bader, Blanes and Casas (2019), five products, exactly T18. Row i gives
# C_i = sum_j T18[i][j] P_j over the powers (I, B, B², B³, B⁶); then
#   B9 = C0 C4 + C3,   T18 = C1 + (C2 + B9) B9.
_T18 = (
    (
        0.0,
        -1.00365581030144618291e-01,
        -8.02924648241156932449e-03,
        -8.92138498045729985177e-04,
        0.0,
    ),
    (
        0.0,
        3.97849749499645077844e-01,
        1.36783778460411720168e00,
        4.98289622525382669416e-01,
        -6.37898194594723280150e-04,
    ),
    (
        -1.09676396052962061844e01,
        1.68015813878906206114e00,
        5.71779846478865511061e-02,
        -6.98210122488052056106e-03,
        3.34975017086070470649e-05,
    ),
    (
        -9.04316832390810593223e-02,
        -6.76404519071381882256e-02,
        6.75961301770459654925e-02,
        2.95552570429315521194e-02,
        -1.39180257516060693404e-05,
    ),
    (
        0.0,
        0.0,
        -9.23364619367118555360e-02,
        -1.69364939002081722752e-02,
        -1.40086798182036094347e-05,
    ),
)

# Largest ‖B‖ for which the degree-m scheme has relative backward error below the unit roundoff
# (as published by Bader, Blanes and Casas 2019, and used by torch.matrix_exp). They bound the error
# through a power series in ‖B‖, so they hold in any consistent norm, the 2-norm included.
_THETA = {
    torch.float32: {8: 5.800524627688768e-01, 12: 1.461661507209034e00, 18: 3.010066362817634e00},
    torch.float64: {8: 4.991228871115323e-02, 12: 2.996158913811580e-01, 18: 1.090863719290036e00},
}

# Before forming B³ and B⁶ from a matrix with a huge norm, scale it down to within 2^8 θ18 of the
# final scaling: B⁶ then stays far from overflow, and since ‖A²‖₁^(1/2) ≤ n^(1/4) ‖A‖₂ this never
# scales past the final 2^-s for any n below 2^28.
_PRESCALE_HEADROOM = 8


def expm_skew(A: Tensor) -> Tensor:
    """Matrix exponential of a batch of skew-symmetric (or skew-Hermitian) matrices.

    Computes ``exp(A) = T_m(A / 2^s)^(2^s)``, where ``T_m`` is the Taylor polynomial of degree
    ``m ∈ {8, 12, 18}`` evaluated with 3, 4 or 5 matrix products by the schemes of Bader, Blanes
    and Casas [1], followed by ``s`` squarings. ``T_m(B)`` meets the unit roundoff while
    ``‖B‖ ≤ θ_m``. Since ``A`` is normal, ``‖A‖₂`` is its spectral radius, hence at most
    ``‖A^k‖₁^(1/k)`` for every ``k``: the bound takes the least of these over the powers
    ``A, A², A³, A⁶`` that the polynomial needs anyway [2], which saves squarings over ``‖A‖₁``.
    One degree and one ``s`` serve the whole batch (its largest bound).

    Each squaring roughly doubles the rounding error's departure from orthogonality, so from the
    squaring count that ``‖A‖ > 10`` needs (``s ≥ 3`` in single, ``s ≥ 5`` in double precision)
    the result takes one Newton-Schulz step ``Q (3I - QᴴQ) / 2`` [4], two products that keep
    ``‖QᴴQ - I‖`` within ``10 · n · eps`` at any norm (measured up to ``‖A‖ = 10⁴``, where the
    squarings alone leave ``1e-3`` in single precision). The step's derivative is the identity
    on the directions ``Q·skew`` in which a skew ``A`` moves ``exp(A)``, so along skew
    directions the gradient is the exponential's own.

    The backward pass is the reverse-mode derivative of that evaluation, the adjoint Fréchet
    derivative ``L(Aᴴ, G)`` of the computed approximation [3], at about twice the cost of the
    forward pass. A product ``XY`` passes back ``G Yᴴ`` and ``Xᴴ G``; for skew ``A`` every such
    ``Xᴴ`` is a real polynomial in ``Aᴴ = -A`` that the forward pass already holds, transposed, so
    nothing is recomputed. The whole map is linear in ``G`` and runs on ``2^-s G``, so neither its
    cost nor its relative error depends on ``‖G‖``.

    ``float32``, ``float64``, ``complex64`` and ``complex128`` are computed natively; ``float16``
    and ``bfloat16`` are computed in ``float32`` and cast back. Double backward is not supported.

    References:
        [1] P. Bader, S. Blanes, F. Casas, "Computing the matrix exponential with an optimized
        Taylor polynomial approximation", Mathematics 7(12):1174, 2019.
        [2] A. H. Al-Mohy, N. J. Higham, "A new scaling and squaring algorithm for the matrix
        exponential", SIAM J. Matrix Anal. Appl. 31(3):970-989, 2009.
        [3] A. H. Al-Mohy, N. J. Higham, "Computing the Fréchet derivative of the matrix
        exponential, with an application to condition number estimation", SIAM J. Matrix Anal.
        Appl. 30(4):1639-1657, 2009.
        [4] N. J. Higham, "Functions of Matrices: Theory and Computation", SIAM, 2008, Sec. 8.3
        (the Newton-Schulz iteration for the orthogonal polar factor).

    Args:
        A: tensor of shape ``(..., n, n)`` with ``A = -Aᴴ``. Not checked: other matrices get the
            exponential with a step size chosen for a normal matrix, which may be inaccurate.

    Returns:
        ``exp(A)`` with the shape and dtype of ``A``, orthogonal (unitary) up to rounding.

    Raises:
        ValueError: if ``A`` is not a (batch of) square matrices.
        TypeError: if ``A`` is not of a floating-point or complex dtype.

    Example:
        >>> X = torch.randn(3, 4, 4, dtype=torch.float64)
        >>> Q = expm_skew(X - X.mT)
        >>> torch.allclose(Q, torch.matrix_exp(X - X.mT))
        True
        >>> torch.allclose(Q.mT @ Q, torch.eye(4, dtype=torch.float64))
        True
    """
    if A.ndim < 2 or A.size(-1) != A.size(-2):
        raise ValueError(f"expm_skew: expected A of shape (..., n, n), got {tuple(A.shape)}")
    if not (A.is_floating_point() or A.is_complex()):
        raise TypeError(f"expm_skew: expected a floating-point or complex A, got {A.dtype}")
    if torch.is_grad_enabled() and A.requires_grad:
        return _ExpmSkew.apply(A)[0]
    # Nothing to differentiate: the operator alone (an autograd.Function costs ~10 µs a call).
    return torch.ops.geoparam.expm_skew(A)[0]


# The forward pass keeps what the backward pass needs in one workspace of fixed shape, so that the
# custom operator's outputs have shapes its fake implementation can state without the data:
# slots 0-3 the powers B, B², B³, B⁶; 4-8 the polynomial's parts (degree 8: U, V, W in 4-6);
# 9 the scheme's inner product (B⁶ for degree 12, B⁹ for degree 18); 10 the polynomial T,
# from which the backward pass recomputes the s squarings (zero in the common case ‖A‖ ≲ 1).
_SLOTS = 11
_POWERS, _PARTS, _INNER, _POLYNOMIAL = slice(0, 4), slice(4, 9), 9, 10
_UNUSED_SLOTS = {8: (2, 3, 7, 8, 9), 12: (3, 8), 18: ()}


@torch.library.custom_op("geoparam::expm_skew", mutates_args=())
def _expm_skew_op(A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``exp(A)``, the workspace the backward pass reads, and the plan ``[degree, s]``.

    One operator to torch's compiler: the degree and the number of squarings depend on the norm
    of ``A``, a choice that needs the data on the host; inside the operator that is allowed.
    """
    shape, dtype = A.shape, A.dtype
    n = shape[-1]
    work = working_dtype(dtype)
    workspace = A.new_empty((_SLOTS, *shape), dtype=work)
    plan = torch.zeros(2, dtype=torch.int64)
    if A.numel() == 0:
        return A.clone(), workspace, plan
    flat = workspace.view(_SLOTS, -1, n, n)
    degree, s = _scaled_powers(A.reshape(-1, n, n).to(work), flat[_POWERS])
    Q = _SCHEMES[degree](flat, into_workspace=s > 0)
    for _ in range(s):
        Q = torch.bmm(Q, Q)
    if _corrected(work, s):
        Q = _newton_schulz(Q)
    # Slots this degree leaves unused are zeroed: an operator's outputs must be determined by its
    # inputs (torch's checks compare them run against run).
    for slot in _UNUSED_SLOTS[degree] + ((_POLYNOMIAL,) if s == 0 else ()):
        flat[slot].zero_()
    plan[0], plan[1] = degree, s
    return Q.reshape(shape).to(dtype), workspace, plan


@_expm_skew_op.register_fake
def _(A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    workspace = A.new_empty((_SLOTS, *A.shape), dtype=working_dtype(A.dtype))
    return torch.empty_like(A), workspace, A.new_empty(2, dtype=torch.int64, device="cpu")


@torch.library.custom_op("geoparam::expm_skew_backward", mutates_args=())
def _expm_skew_backward_op(G: Tensor, workspace: Tensor, plan: Tensor) -> Tensor:
    """Vector-Jacobian product of :func:`expm_skew`: the gradient of ``Re⟨G, exp(A)⟩`` in ``A``."""
    shape, dtype = G.shape, G.dtype
    n = shape[-1]
    if G.numel() == 0:
        return torch.zeros_like(G)
    degree, s = (int(value) for value in plan.tolist())
    flat = workspace.view(_SLOTS, -1, n, n)
    # Scaling G by 2^-s up front (the whole map is linear in G) keeps the squaring chain's
    # intermediate gradients at the size of G instead of growing them by 2 per step.
    gX = G.reshape(-1, n, n).to(workspace.dtype) * 2.0**-s
    squares = _squares(flat[_POLYNOMIAL], s)
    if _corrected(workspace.dtype, s):
        last = squares[-1]
        gX = _newton_schulz_vjp(gX, torch.bmm(last, last))
    for X in reversed(squares):
        # X² has the adjoint gX ↦ gX Xᴴ + Xᴴ gX.
        gX = torch.baddbmm(torch.bmm(gX, X.mH), X.mH, gX)
    return _SCHEME_VJPS[degree](gX, flat).reshape(shape).to(dtype)


@_expm_skew_backward_op.register_fake
def _(G: Tensor, workspace: Tensor, plan: Tensor) -> Tensor:
    return torch.empty_like(G)


class _ExpmSkew(torch.autograd.Function):
    """The differentiable composition of the two operators.

    An ``autograd.Function`` with ``setup_context`` rather than the operator's own autograd
    registration, because torch.func's transforms (``grad``, ``vmap`` of ``grad``) take only the
    former; torch.compile traces it into the two operators.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return torch.ops.geoparam.expm_skew(A)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor], output: tuple[Tensor, Tensor, Tensor]) -> None:
        _, workspace, plan = output
        ctx.mark_non_differentiable(workspace, plan)
        ctx.save_for_backward(workspace, plan)

    @staticmethod
    @once_differentiable  # the backward operator has no derivative of its own
    def backward(ctx, grad_Q: Tensor, _grad_workspace: Tensor, _grad_plan: Tensor) -> Tensor:
        workspace, plan = ctx.saved_tensors
        return torch.ops.geoparam.expm_skew_backward(grad_Q, workspace, plan)


def _batch_first(tensor: Tensor, dim: int | None, size: int, position: int = 0) -> Tensor:
    """Move the vmapped dimension ``dim`` of ``tensor`` to ``position`` (expanding if unbatched)."""
    if dim is None:
        return tensor.unsqueeze(position).expand(
            *tensor.shape[:position], size, *tensor.shape[position:]
        )
    return tensor.movedim(dim, position)


def _expm_skew_vmap(info, in_dims: tuple[int | None], A: Tensor):
    # The operator batches over leading dimensions: the vmapped one becomes one more of them.
    (dim,) = in_dims
    outputs = torch.ops.geoparam.expm_skew(A if dim is None else A.movedim(dim, 0))
    return outputs, (None, None, None) if dim is None else (0, 1, None)


def _expm_skew_backward_vmap(
    info, in_dims: tuple[int | None, int | None, int | None], G, workspace, plan
):
    G_dim, workspace_dim, plan_dim = in_dims
    if plan_dim is not None:
        raise NotImplementedError("expm_skew_backward: the plan cannot be vmapped")
    if G_dim is None and workspace_dim is None:
        return torch.ops.geoparam.expm_skew_backward(G, workspace, plan), None
    G = _batch_first(G, G_dim, info.batch_size)
    workspace = _batch_first(workspace, workspace_dim, info.batch_size, position=1)
    return torch.ops.geoparam.expm_skew_backward(G, workspace, plan), 0


# vmap rules for custom operators arrived in torch 2.4's later releases: without them, everything
# but torch.vmap over the exponential works.
if hasattr(_expm_skew_op, "register_vmap"):
    _expm_skew_op.register_vmap(_expm_skew_vmap)
    _expm_skew_backward_op.register_vmap(_expm_skew_backward_vmap)


# Each squaring roughly doubles the departure from orthogonality, so after s of them QᴴQ - I is
# about 2^s units of roundoff: up to 1e-3 in float32 at ‖A‖ = 10⁴ (s = 12). One Newton-Schulz step
# Q ← Q (3I - QᴴQ)/2 takes an error e to about 1.5 e² plus roundoff, so it restores
# ‖QᴴQ - I‖ ≲ n·eps at the cost of two products. It is taken only from the squaring count that
# ‖A‖ > 10 needs (θ18 = 3.0 in float32: s ≥ 3; 1.09 in float64: s ≥ 5), so that the common range
# ‖A‖ ≤ 10 pays nothing; below that count the error stays under 10·n·eps anyway.
_CORRECTION_FROM = {torch.float32: 3, torch.float64: 5}


def _corrected(dtype: torch.dtype, s: int) -> bool:
    """Whether the forward pass ends with a Newton-Schulz step (see ``_CORRECTION_FROM``)."""
    return s >= _CORRECTION_FROM[dtype.to_real()]


def _newton_schulz(Q: Tensor) -> Tensor:
    """``Q (3I - QᴴQ) / 2``: one step towards the nearest orthogonal (unitary) matrix."""
    R = torch.bmm(Q.mH, Q).mul_(-0.5)
    R.diagonal(dim1=-2, dim2=-1).add_(1.5)
    return torch.bmm(Q, R)


def _newton_schulz_vjp(G: Tensor, Q: Tensor) -> Tensor:
    """Adjoint of :func:`_newton_schulz` at ``Q``: ``1.5 G - (G QᴴQ + Q (QᴴG + GᴴQ)) / 2``."""
    QhG = torch.bmm(Q.mH, G)
    inner = QhG + QhG.mH
    return torch.bmm(G, torch.bmm(Q.mH, Q)).add_(torch.bmm(Q, inner)).mul_(-0.5).add_(G, alpha=1.5)


def _squares(T: Tensor, s: int) -> list[Tensor]:
    """``T, T², T⁴, …``: the ``s`` matrices that the forward pass squared, recomputed."""
    squares = [T] if s else []
    for _ in range(s - 1):
        squares.append(torch.bmm(squares[-1], squares[-1]))
    return squares


def _one_norm(X: Tensor) -> Tensor:
    """Operator 1-norm of each matrix of a ``(b, n, n)`` batch of (skew-)Hermitian matrices."""
    # Such a matrix has the same column and row sums: reduce along the contiguous dimension,
    # several times faster than across it.
    return X.abs().sum(-1).amax(-1)


def _scaled_powers(A: Tensor, powers: Tensor) -> tuple[int, int]:
    """Choose the degree and the scaling ``s``, and fill ``powers`` with those of ``B = A / 2^s``.

    ``powers`` (shape ``(4, b, n, n)``) receives ``B, B²`` for degree 8, ``B, B², B³`` for
    degree 12 and ``B, B², B³, B⁶`` for degree 18.
    """
    theta = _THETA[A.real.dtype]
    B, B2, B3, B6 = powers.unbind(0)
    B.copy_(A)
    torch.bmm(A, A, out=B2)
    bound = torch.minimum(_one_norm(A), _one_norm(B2).sqrt())
    largest = _largest(bound)
    if largest <= theta[8]:
        return 8, 0
    if largest <= theta[12]:
        # Between θ8 and θ12, degree 12 costs the same four products as degree 8 with one
        # squaring, and is more accurate.
        torch.bmm(B2, B, out=B3)
        return 12, 0

    s = _squarings(largest, theta[18])
    prescale = max(0, s - _PRESCALE_HEADROOM)
    if prescale:
        B.mul_(2.0**-prescale)
        B2.mul_(4.0**-prescale)
        bound = bound * 2.0**-prescale
    torch.bmm(B2, B, out=B3)
    torch.bmm(B3, B3, out=B6)
    if s == 0:
        return 18, 0
    # ‖B³‖₁^(1/3) and ‖B⁶‖₁^(1/6) bound ‖B‖₂ more tightly than ‖B²‖₁^(1/2): a second sync, only
    # where squarings are needed, that usually saves one of them (3 products forward and back).
    bound = torch.minimum(bound, _one_norm(B3).pow(1.0 / 3.0))
    bound = torch.minimum(bound, _one_norm(B6).pow(1.0 / 6.0))
    rest = _squarings(_largest(bound), theta[18])
    if rest:
        # Powers of 2 scale exactly: B^k / 2^(k rest) is the k-th power of B / 2^rest.
        exponents = torch.tensor((1.0, 2.0, 3.0, 6.0), dtype=bound.dtype, device=A.device)
        powers.mul_(torch.exp2(exponents * -rest).view(4, 1, 1, 1))
    return 18, prescale + rest


def _largest(bound: Tensor) -> float:
    """The largest finite bound of the batch, on the host: the degree and ``s`` decide the work."""
    # Matrices with Inf or NaN entries give NaN whatever the scheme; leaving them out keeps the
    # rest of the batch accurate. This is the host sync (one per call, two when squaring).
    return bound.nan_to_num(nan=0.0, posinf=0.0).amax().item()


def _squarings(bound: float, theta: float) -> int:
    """The least ``s ≥ 0`` with ``bound / 2^s ≤ theta``."""
    return max(0, math.ceil(math.log2(bound / theta))) if bound > theta else 0


@functools.cache
def _table(
    rows: tuple[tuple[float, ...], ...], dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """A scheme's real coefficients: of I (shaped to broadcast), of the powers, and transposed."""
    table = torch.tensor(rows, dtype=dtype, device=device)
    # Contiguous copies: MKL handles a strided operand of a thin GEMM far more slowly.
    return table[:, :1, None].contiguous(), table[:, 1:].contiguous(), table[:, 1:].mT.contiguous()


def _combine(table: Tensor, stacked: Tensor, out: Tensor | None = None) -> Tensor:
    """``out[i] = sum_j table[i, j] stacked[j]`` for a real table and a stack of matrices."""
    # One thin GEMM over the flattened matrices reads each of them once, in a single call. A
    # complex stack is combined as (real, imaginary) pairs: a real GEMM, rather than a complex one
    # with a table of zero imaginary parts.
    if out is None:
        out = stacked.new_empty((table.size(0), *stacked.shape[1:]))
    flat = torch.view_as_real(stacked) if stacked.is_complex() else stacked
    target = torch.view_as_real(out) if out.is_complex() else out
    torch.mm(table, flat.reshape(flat.size(0), -1), out=target.view(table.size(0), -1))
    return out


def _polynomial_parts(rows: tuple[tuple[float, ...], ...], powers: Tensor, out: Tensor) -> Tensor:
    """Write into ``out`` the combinations ``C_i`` of the identity and the powers of a scheme."""
    identity, table, _ = _table(rows, powers.real.dtype, powers.device)
    _combine(table, powers, out)
    out.diagonal(dim1=-2, dim2=-1).add_(identity)
    return out


def _parts_vjp(rows: tuple[tuple[float, ...], ...], grad_parts: Tensor) -> Tensor:
    """Adjoint of :func:`_polynomial_parts`: gradients of the powers (the identity has none)."""
    _, _, transposed = _table(rows, grad_parts.real.dtype, grad_parts.device)
    return _combine(transposed, grad_parts)


def _add_identity(X: Tensor, alpha: float) -> Tensor:
    X.diagonal(dim1=-2, dim2=-1).add_(alpha)
    return X


def _polynomial_out(workspace: Tensor, into_workspace: bool) -> Tensor | None:
    # T is kept only when the backward pass must recompute squarings from it; otherwise it is
    # the output itself, which must not alias the workspace.
    return workspace[_POLYNOMIAL] if into_workspace else None


def _taylor8(workspace: Tensor, into_workspace: bool) -> Tensor:
    B, B2 = workspace[0], workspace[1]
    U, V, W = workspace[4], workspace[5], workspace[6]
    torch.add(B * _T8_X1, B2, alpha=_T8_X2, out=U)
    B4 = torch.bmm(B2, U)
    torch.add(B4, B2, alpha=_T8_X3, out=V)
    torch.add(B * _T8_X5, B2, alpha=_T8_X6, out=W)
    _add_identity(W.add_(B4, alpha=_T8_X7), _T8_X4)
    T0 = _add_identity(torch.add(B, B2, alpha=_T8_Y2), 1.0)
    return torch.baddbmm(T0, V, W, out=_polynomial_out(workspace, into_workspace))


def _taylor8_vjp(gT: Tensor, workspace: Tensor) -> Tensor:
    B, B2 = workspace[0], workspace[1]
    U, V, W = workspace[4], workspace[5], workspace[6]
    gV = torch.bmm(gT, W.mH)
    gW = torch.bmm(V.mH, gT)
    gB2 = gT * _T8_Y2 + gV * _T8_X3 + gW * _T8_X6
    gB4 = gV.add_(gW, alpha=_T8_X7)
    gU = torch.bmm(B2.mH, gB4)
    gB2.baddbmm_(gB4, U.mH).add_(gU, alpha=_T8_X2)
    gB = gT + gW * _T8_X5 + gU * _T8_X1
    # B² = B B.
    return gB.baddbmm_(gB2, B.mH).baddbmm_(B.mH, gB2)


def _taylor12(workspace: Tensor, into_workspace: bool) -> Tensor:
    C = _polynomial_parts(_T12, workspace[0:3], workspace[4:8])
    C0, C1, C2, C3 = C.unbind(0)
    B6 = torch.baddbmm(C2, C3, C3, out=workspace[_INNER])
    D = C1.add_(B6)
    return torch.baddbmm(C0, D, B6, out=_polynomial_out(workspace, into_workspace))


def _taylor12_vjp(gT: Tensor, workspace: Tensor) -> Tensor:
    B, B2 = workspace[0], workspace[1]
    _, D, _, C3 = workspace[4:8].unbind(0)
    B6 = workspace[_INNER]
    gC = gT.new_empty((4, *gT.shape))
    gC0, gD, gB6, gC3 = gC.unbind(0)
    gC0.copy_(gT)
    torch.bmm(gT, B6.mH, out=gD)
    torch.baddbmm(gD, D.mH, gT, out=gB6)
    torch.bmm(gB6, C3.mH, out=gC3).baddbmm_(C3.mH, gB6)
    gB, gB2, gB3 = _parts_vjp(_T12, gC).unbind(0)
    # B³ = B² B and B² = B B.
    gB2.baddbmm_(gB3, B.mH)
    gB.baddbmm_(B2.mH, gB3)
    return gB.baddbmm_(gB2, B.mH).baddbmm_(B.mH, gB2)


def _taylor18(workspace: Tensor, into_workspace: bool) -> Tensor:
    C = _polynomial_parts(_T18, workspace[_POWERS], workspace[_PARTS])
    C0, C1, C2, C3, C4 = C.unbind(0)
    B9 = torch.baddbmm(C3, C0, C4, out=workspace[_INNER])
    D = C2.add_(B9)
    return torch.baddbmm(C1, D, B9, out=_polynomial_out(workspace, into_workspace))


def _taylor18_vjp(gT: Tensor, workspace: Tensor) -> Tensor:
    B, B2, B3, _ = workspace[_POWERS].unbind(0)
    C0, _, D, _, C4 = workspace[_PARTS].unbind(0)
    B9 = workspace[_INNER]
    gC = gT.new_empty((5, *gT.shape))
    gC0, gC1, gD, gB9, gC4 = gC.unbind(0)
    gC1.copy_(gT)
    torch.bmm(gT, B9.mH, out=gD)
    torch.baddbmm(gD, D.mH, gT, out=gB9)
    torch.bmm(gB9, C4.mH, out=gC0)
    torch.bmm(C0.mH, gB9, out=gC4)
    gB, gB2, gB3, gB6 = _parts_vjp(_T18, gC).unbind(0)
    # B⁶ = B³ B³, B³ = B² B and B² = B B.
    gB3.baddbmm_(gB6, B3.mH).baddbmm_(B3.mH, gB6)
    gB2.baddbmm_(gB3, B.mH)
    gB.baddbmm_(B2.mH, gB3)
    return gB.baddbmm_(gB2, B.mH).baddbmm_(B.mH, gB2)


# Degree -> the scheme and its vector-Jacobian product, both reading the workspace.
_SCHEMES = {8: _taylor8, 12: _taylor12, 18: _taylor18}
_SCHEME_VJPS = {8: _taylor8_vjp, 12: _taylor12_vjp, 18: _taylor18_vjp}
