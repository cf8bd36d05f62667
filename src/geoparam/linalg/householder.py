"""Products of Householder reflectors in the compact-WY (UT) form.

References:
    R. Schreiber and C. Van Loan, "A storage-efficient WY representation for products of
    Householder transformations", SIAM J. Sci. Stat. Comput. 10(1):53-57, 1989.

    T. Joffrain, T. M. Low, E. S. Quintana-Ortí, R. van de Geijn and F. G. Van Zee,
    "Accumulating Householder transformations, revisited", ACM TOMS 32(2):169-179, 2006.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._precision import working_dtype

__all__ = ["householder_product", "householder_square", "rotated_householder"]

# Low-precision inputs are accumulated in float32: the triangular solve needs the mantissa, and
# the CPU solvers do not take half types.


def _lapack_product(reflectors: Tensor) -> Tensor:
    # LAPACK's blocked orgqr: 4/3 n³ flops for a square input, and the rounding of torch's map.
    tails = reflectors.tril(diagonal=-1)
    return torch.linalg.householder_product(tails, 2.0 / (1.0 + (tails * tails).sum(dim=-2)))


# From this many reflectors on, the products below split V's columns in two and skip the blocks
# that V's triangle makes zero (about 40 % fewer flops at n = k); below it the extra operator
# calls cost more than they save.
_SPLIT_FROM = 192


def _split(k: int) -> int:
    return k // 2 if k >= _SPLIT_FROM else 0


def _with_zero_corner(top_left: Tensor, top_right: Tensor, bottom_right: Tensor) -> Tensor:
    """The block matrix ``[[top_left, top_right], [0, bottom_right]]``."""
    zeros = bottom_right.new_zeros(*bottom_right.shape[:-1], top_left.size(-1))
    top = torch.cat([top_left, top_right], dim=-1)
    return torch.cat([top, torch.cat([zeros, bottom_right], dim=-1)], dim=-2)


def _halve_diagonal(M: Tensor) -> Tensor:
    M.diagonal(dim1=-2, dim2=-1).mul_(0.5)
    return M


def _inverse_upper(U: Tensor) -> Tensor:
    eye = torch.eye(U.size(-1), dtype=U.dtype, device=U.device).expand_as(U)
    return torch.linalg.solve_triangular(U, eye, upper=True)


def _unit_reflectors(reflectors: Tensor) -> tuple[Tensor, Tensor]:
    """``V`` (the reflectors with a unit diagonal and zeros above it) and ``½‖vᵢ‖²`` per column."""
    V = reflectors.tril(diagonal=-1)
    # Each reflector is exactly orthogonal only when its τᵢ = 2/‖vᵢ‖² matches vᵢ; the diagonal of
    # VᵀV from a matrix product rounds the exact 1 in ‖vᵢ‖² = 1 + ‖tailᵢ‖² with the whole sum,
    # which alone made ‖QᵀQ - I‖ several times LAPACK's. Summed as torch forms τ, it matches it.
    halved_norms = (V * V).sum(dim=-2).add_(1.0).mul_(0.5)
    V.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    return V, halved_norms


def _inverse_ut(gram: Tensor, halved_norms: Tensor) -> Tensor:
    """``T = (striu(VᵀV) + ½ diag(VᵀV))⁻¹`` from ``VᵀV`` (overwritten) and the halved norms."""
    gram = gram.triu_()
    gram.diagonal(dim1=-2, dim2=-1).copy_(halved_norms)
    return _inverse_upper(gram)


def _ut_product(reflectors: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``Q = I_{n,k} - V W`` with ``W = T V₁ᵀ``, and ``V``, ``T``, ``W`` for the backward.

    When the columns are split (see :func:`_split`), the returned ``T`` holds ``S12 = V_lᵀ V_b``
    in place of its upper-right block.

    ``T⁻¹ = striu(VᵀV) + ½ diag(VᵀV)`` (the UT transform) is inverted once, so that every later
    use of ``T`` is a matrix product: a triangular solve runs at a third of a product's speed.
    """
    k = reflectors.size(-1)
    h = _split(k)
    V, halved_norms = _unit_reflectors(reflectors)
    if not h:
        T = _inverse_ut(V.mT @ V, halved_norms)
        W = T @ V[..., :k, :].mT
        Q = (V @ W).neg_()
    else:
        # Columns h: of V vanish above row h: with V_a = V[:, :h], V_l = V[h:, :h] and
        # V_b = V[h:, h:], every product below skips the blocks that are zero.
        j = k - h
        V_a, V_l, V_b = V[..., :, :h], V[..., h:, :h], V[..., h:, h:]
        T11 = _inverse_ut(V_a.mT @ V_a, halved_norms[..., :h])
        T22 = _inverse_ut(V_b.mT @ V_b, halved_norms[..., h:])
        S12 = V_l.mT @ V_b
        # T = [[T11, -T11 S12 T22], [0, T22]], and W = T V₁ᵀ is upper triangular too; with
        # V₁ = V[:k] made of V[:h, :h], V_l[:j] and V_b[:j], its blocks are
        W11 = T11 @ V[..., :h, :h].mT
        W22 = T22 @ V_b[..., :j, :].mT
        W12 = T11 @ (V_l[..., :j, :].mT - S12 @ W22)
        # T's corner is never formed: the backward needs only S12 (k x k blocks are cheap to keep).
        T = _with_zero_corner(T11, S12, T22)
        W = _with_zero_corner(W11, W12, W22)
        top = V[..., :h, :h] @ W[..., :h, :]
        bottom_right = V_l @ W12
        bottom_right.add_(V_b @ W22)
        Q = torch.cat([top, torch.cat([V_l @ W11, bottom_right], dim=-1)], dim=-2).neg_()
    Q.diagonal(dim1=-2, dim2=-1).add_(1.0)
    return Q, V, T, W


def _ut_backward(G: Tensor, V: Tensor, T: Tensor, W: Tensor) -> Tensor:
    """The cotangent of the reflectors for the cotangent ``G`` of ``Q`` (see householder_product).

    Differentiating ``Q = I - V T V₁ᵀ`` with ``T = (striu(VᵀV) + ½ diag(VᵀV))⁻¹`` gives, with
    ``X = V₁Tᵀ = Wᵀ``, ``Kᵀ = GᵀV T`` and ``R = K X``, the cotangent of ``V``

    ``V (P + Pᵀ) - G X - [Kᵀ; 0]``,   ``P = striu(R) + ½ diag(R)``,

    of which only the strictly lower part is a free parameter.
    """
    k = V.size(-1)
    h = _split(k)
    if not h:
        K_t = (G.mT @ V) @ T
        P = _halve_diagonal((K_t.mT @ W.mT).triu_())
        grad = V @ (P + P.mT)
        grad.sub_(G @ W.mT)
        grad[..., :k, :].sub_(K_t)
        return grad.tril_(diagonal=-1)
    # The blocks of the forward pass again; the blocks of the result above the diagonal are
    # not formed, and P + Pᵀ is assembled per block (a transposed sum of a whole k x k matrix is
    # a slow strided pass).
    j = k - h
    V_a, V_l, V_b = V[..., :, :h], V[..., h:, :h], V[..., h:, h:]
    C_a = G.mT @ V_a
    C_b = G[..., h:, :].mT @ V_b
    T11, S12, T22 = T[..., :h, :h], T[..., :h, h:], T[..., h:, h:]
    # K = [C_a, C_b] T with T12 = -T11 S12 T22: K_a = C_a T11, K_b = (C_b - K_a S12) T22.
    K_a = C_a @ T11
    K_b = torch.matmul(C_b - K_a @ S12, T22)
    W_top, W22 = W[..., :h, :], W[..., h:, h:]
    P11 = _halve_diagonal((K_a.mT @ W_top.mT).triu_())
    # R[:, h:] = K[h:]ᵀ W22ᵀ, since W[h:, :h] = 0.
    P12 = K_a[..., h:, :].mT @ W22.mT
    P22 = _halve_diagonal((K_b[..., h:, :].mT @ W22.mT).triu_())
    Y11 = P11 + P11.mT
    Y22 = P22 + P22.mT
    GX_a = G @ W_top.mT
    top = V[..., :h, :h] @ Y11
    top.sub_(GX_a[..., :h, :]).sub_(K_a[..., :h, :])
    left = V_l @ Y11
    left.add_(V_b @ P12.mT).sub_(GX_a[..., h:, :])
    left[..., :j, :].sub_(K_a[..., h:, :])
    right = V_l @ P12
    right.add_(V_b @ Y22).sub_(G[..., h:, h:] @ W22.mT)
    right[..., :j, :].sub_(K_b[..., h:, :])
    zeros = top.new_zeros(*top.shape[:-1], j)
    grad = torch.cat([torch.cat([top, zeros], dim=-1), torch.cat([left, right], dim=-1)], dim=-2)
    return grad.tril_(diagonal=-1)


class _HouseholderProduct(torch.autograd.Function):
    """The UT-form product with an explicit backward (see householder_product).

    Written with ``setup_context`` (the form torch.func's transforms take); ``V``, ``T`` and ``W``
    are outputs only so that the backward can have them.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(reflectors: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _ut_product(reflectors)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor], output: tuple[Tensor, ...]) -> None:
        _, V, T, W = output
        ctx.mark_non_differentiable(V, T, W)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(V, T, W)

    @staticmethod
    @once_differentiable  # V, T and W are built outside the graph: no second derivative.
    def backward(ctx, grad_Q: Tensor | None, *_unused: None) -> Tensor | None:
        if grad_Q is None:
            return None
        return _ut_backward(grad_Q, *ctx.saved_tensors)


def householder_product(reflectors: Tensor) -> Tensor:
    """First ``k`` columns of ``H₁ ⋯ H_k`` for reflectors stored below the diagonal.

    Column ``i`` of ``reflectors`` (shape ``(..., n, k)``, ``n >= k``, real) holds, strictly below
    its diagonal, the tail of the vector ``vᵢ = eᵢ + aᵢ``; the diagonal and the upper triangle are
    ignored. Each ``Hᵢ = I - τᵢ vᵢvᵢᵀ`` with ``τᵢ = 2 / ‖vᵢ‖²`` is an exact reflection, so the
    result has orthonormal columns for any input. This is the map of
    ``torch.nn.utils.parametrizations.orthogonal(..., "householder")`` before its sign correction,
    and equals ``torch.linalg.householder_product(A.tril(-1), τ)``.

    The product is accumulated in the UT form of Schreiber & Van Loan (1989) as revisited by
    Joffrain et al. (2006): with ``V = [v₁ ⋯ v_k]`` unit lower trapezoidal,

    ``H₁ ⋯ H_k = I - V T Vᵀ``,   ``T⁻¹ = striu(VᵀV) + ½ diag(VᵀV)``,

    so the first ``k`` columns are ``I_{n,k} - V W`` with ``W = T V₁ᵀ``. When a backward will
    follow, the product is formed that way: ``VᵀV``, one triangular inversion (after which every
    use of ``T`` is a matrix product; a triangular solve runs at a third of a product's speed),
    ``W`` and ``V W``, and ``V``, ``T``, ``W`` are kept. The backward then differentiates the UT
    form explicitly with matrix products only, in place of torch's ``k`` sequential rank-one
    updates. From 192 reflectors on, both passes split ``V``'s columns in two and skip the blocks
    that its triangle makes zero (about 40 % fewer flops for a square input). Without a gradient,
    tall panels (``n >= 4k``) use the same products, and square-ish inputs LAPACK's blocked
    ``orgqr``, which needs the fewest flops there. The gradient reaches only the strictly lower
    part of ``reflectors``; the two routes agree to rounding, both within a few ``n · eps`` of
    orthonormal columns.

    Args:
        reflectors: real tensor of shape ``(..., n, k)`` with ``n >= k``. ``float16`` and
            ``bfloat16`` are computed in ``float32`` and cast back.

    Returns:
        Tensor of shape ``(..., n, k)`` and the dtype of ``reflectors``, with orthonormal columns.

    Raises:
        ValueError: if ``reflectors`` is complex, has fewer than two dimensions, or ``n < k``.

    Example:
        >>> Q = householder_product(torch.randn(5, 3))
        >>> torch.allclose(Q.mT @ Q, torch.eye(3), atol=1e-5)
        True
    """
    if reflectors.is_complex():
        raise ValueError(f"householder_product expects a real tensor, got {reflectors.dtype}")
    if reflectors.dim() < 2 or reflectors.size(-2) < reflectors.size(-1):
        raise ValueError(
            "householder_product expects shape (..., n, k) with n >= k, "
            f"got {tuple(reflectors.shape)}"
        )
    if working_dtype(reflectors.dtype) != reflectors.dtype:
        wide = reflectors.to(working_dtype(reflectors.dtype))
        return householder_product(wide).to(reflectors.dtype)
    if torch.is_grad_enabled() and reflectors.requires_grad:
        return _HouseholderProduct.apply(reflectors)[0]
    if reflectors.size(-2) >= 4 * reflectors.size(-1):
        # Tall panels: the UT form's products beat orgqr's narrow blocked updates (1.6-2x).
        return _ut_product(reflectors)[0]
    # Square-ish, without a backward to prepare for: orgqr's 4/3 n³ flops are the fewest.
    return _lapack_product(reflectors)


# --- The base product fused: B · H₁⋯H_n accumulated from the left, a block of reflectors at a time

# Reflectors per block. Each block costs about 2 n·r·b multiply-adds forward (r: the columns it
# still changes) and 4 n·r·b backward, plus n·b² for its triangular factor: smaller blocks do
# less work, larger ones make fewer and wider products (which MKL runs closer to its peak) and
# fewer small calls. Forward + backward with 2 threads, 64 and 128 tied at n = 256, and 128 was
# the fastest at n = 512 (15.2-15.5 ms against 16.2-17.3 for 64, 15.9 for 96, 18.5 for 256)
# and 1024 (73 ms against 92 for 64). Blocks of 64 below n = 256 (the blocks start at two of
# them), then n / 8, at least 128, which also bounds the saved states (about n² (n/b + 1) / 2
# numbers).
_BLOCK = 64


def _block_size(n: int) -> int:
    return _BLOCK if n < 4 * _BLOCK else max(2 * _BLOCK, n // 8)


def _minus_product(C: Tensor, A: Tensor, B: Tensor) -> Tensor:
    """``C - A @ B`` as one fused product where torch has one (matrices and stacks of them)."""
    if C.dim() == 2:
        return torch.addmm(C, A, B, alpha=-1.0)
    return C - A @ B


def _accumulate_product_(
    C: Tensor, A: Tensor, B: Tensor, *, beta: float = 1.0, alpha: float = 1.0
) -> None:
    """``C = beta C + alpha A @ B`` in place (``C`` may be a view with strided rows): one
    accumulating product for matrices, a product and an update for stacks of them."""
    if C.dim() == 2:
        C.addmm_(A, B, beta=beta, alpha=alpha)
        return
    if beta != 1.0:
        C.mul_(beta)
    C.add_(A @ B, alpha=alpha)


def _block_factors(V0: Tensor, blocks: list[tuple[int, int]]) -> list[Tensor]:
    """Each block's ``T`` (see :func:`_inverse_ut`), from ``V0``: the reflectors' tails.

    ``V0`` is ``V`` with a zero diagonal (its unit diagonal is set afterwards). The blocks of
    one width are done together, in three batched products and one batched triangular solve,
    instead of five small calls per block. A block's columns vanish above its first row, so the
    Gram matrices of the whole columns are the blocks' own. They are formed from the tails, so
    that their diagonals hold ``‖tailᵢ‖²`` (to which 1 is added exactly, as torch forms
    ``τᵢ``); the unit diagonal adds ``D₀ᵀ`` above the diagonal, ``D₀`` being the tails' part
    of the block's top square. Only the upper triangles are set: the solve reads no more.
    """
    factors: list[Tensor] = []
    width = blocks[0][1] - blocks[0][0]
    full = sum(1 for start, stop in blocks if stop - start == width)
    groups = [(0, full * width, full)]
    if full < len(blocks):
        groups.append((full * width, blocks[-1][1], 1))
    for low, high, count in groups:
        w = (high - low) // count
        columns = V0[..., low:, low:high].unflatten(-1, (count, w)).movedim(-2, -3)
        inverse_T = columns.mT @ columns
        square = V0[..., low:high, low:high].unflatten(-2, (count, w)).unflatten(-1, (count, w))
        inverse_T.add_(square.diagonal(dim1=-4, dim2=-2).movedim(-1, -3).mT)
        inverse_T.diagonal(dim1=-2, dim2=-1).add_(1.0).mul_(0.5)
        factors += _inverse_upper(inverse_T).unbind(-3)
    return factors


def _in_blocks(n: int) -> bool:
    # Square products with a base go through the blocks from two blocks on; below that the base
    # product and the UT form are as fast (measured at n = 32 to 128).
    return n >= 2 * _BLOCK


def _blocks(n: int) -> list[tuple[int, int]]:
    b = _block_size(n)
    return [(start, min(start + b, n)) for start in range(0, n, b)]


def _rotated_forward(
    B: Tensor, reflectors: Tensor, signs: Tensor | None, keep_states: bool = True
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """``B H₁⋯H_n diag(signs)`` by blocks of reflectors, and what the backward needs.

    Block ``i`` holds the reflectors ``start:stop``, unit lower trapezoidal ``Y`` of shape
    ``r x b`` (``r = n - start``) with the product ``I - Y T Yᵀ`` (the UT form, ``T`` from
    :func:`_inverse_ut`). Since that product changes only the columns ``start:`` of whatever it
    multiplies from the right, the running product's columns ``start:`` (``S``, ``n x r``) are
    replaced by ``S - (S Y) T Yᵀ``; columns ``start:stop`` of the result are then final.

    Returns ``Q``, ``V`` and, per block, ``T``, ``P = S Y``, ``P T`` and the new ``S`` (whose
    columns after the block are the next block's ``S``); without ``keep_states`` (inference),
    none of them, so that each block's states are freed as the next one starts.
    """
    n = reflectors.size(-1)
    blocks = _blocks(n)
    V = reflectors.tril(diagonal=-1)
    factors = _block_factors(V, blocks)
    V.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    panels: list[Tensor] = []
    saved: list[Tensor] = []
    S = B
    for (start, stop), T in zip(blocks, factors, strict=True):
        Y = V[..., start:, start:stop]
        P = S @ Y
        PT = P @ T
        S = _minus_product(S, PT, Y.mT)
        if keep_states:
            saved += [T, P, PT, S]
        panels.append(S[..., :, : stop - start])
        S = S[..., :, stop - start :]
    Q = torch.cat(panels, dim=-1)
    if signs is not None:
        Q.mul_(signs.unsqueeze(-2))
    return Q, V, saved


def _rotated_backward(
    G: Tensor, B: Tensor, signs: Tensor | None, V: Tensor, saved: list[Tensor]
) -> Tensor:
    """The cotangent of the reflectors for the cotangent ``G`` of ``B H₁⋯H_n diag(signs)``.

    Block by block, last first, for ``S' = S - P T Yᵀ`` with ``P = S Y`` and the cotangent ``Ḡ``
    of ``S'`` (columns ``start:`` of the running cotangent, which starts as ``G diag(signs)``):
    ``P̄T = -Ḡ Y``, ``P̄ = P̄T Tᵀ``, ``T̄ = Pᵀ P̄T``, ``Ȳ = -ḠᵀP T + Sᵀ P̄ + Y (Π + Πᵀ)`` with
    ``Π = striu(Ū) + ½ diag(Ū)``, ``Ū = -Tᵀ T̄ Tᵀ`` (``T`` as the inverse of the UT matrix built
    from ``YᵀY``), and the cotangent of ``S``, ``Ḡ + P̄ Yᵀ``, written back in place. Below,
    ``P̄T``, ``P̄`` and ``T̄`` are kept negated, which saves the sign flips, and ``Ȳ`` is formed
    transposed: MKL multiplied the transposes of the tall panels ``S`` and ``Ḡ`` 15-20 % faster
    as ``P̄ᵀ S`` than as ``Sᵀ P̄``. Only the strictly lower part of ``Ȳ`` is a parameter.
    """
    n = V.size(-1)
    blocks = _blocks(n)
    running = G.clone() if signs is None else G * signs.unsqueeze(-2)
    # Every entry on or below the diagonal is written below; the rest is cleared at the end.
    grad = torch.empty_like(V)
    for index in range(len(blocks) - 1, -1, -1):
        start, stop = blocks[index]
        T, P, PT = saved[4 * index : 4 * index + 3]
        if index:
            previous = blocks[index - 1]
            S = saved[4 * index - 1][..., :, previous[1] - previous[0] :]
        else:
            S = B
        Y = V[..., start:, start:stop]
        G_S = running[..., :, start:]
        PT_bar = G_S @ Y
        P_bar = PT_bar @ T.mT
        T_bar = P.mT @ PT_bar
        Y_bar_t = P_bar.mT @ S
        _accumulate_product_(Y_bar_t, PT.mT, G_S)
        if index:
            # The base takes no gradient: the first block's cotangent of S is not needed.
            _accumulate_product_(G_S, P_bar, Y.mT, alpha=-1.0)
        T_t = T.mT
        Pi = _halve_diagonal((T_t @ T_bar @ T_t).triu_())
        _accumulate_product_(Y_bar_t, Pi + Pi.mT, Y.mT, beta=-1.0)
        grad[..., start:, start:stop] = Y_bar_t.mT
    return grad.tril_(diagonal=-1)


class _RotatedHouseholder(torch.autograd.Function):
    """``B H₁⋯H_n`` by blocks with an explicit backward; see :func:`rotated_householder`.

    Written with ``setup_context`` (the form torch.func's transforms take): what the backward
    needs is returned as extra outputs.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(B: Tensor, reflectors: Tensor, signs: Tensor | None) -> tuple[Tensor, ...]:
        Q, V, saved = _rotated_forward(B, reflectors, signs)
        return (Q, V, *saved)

    @staticmethod
    def setup_context(ctx, inputs: tuple[Tensor, Tensor, Tensor | None], output) -> None:
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(inputs[0], inputs[2], *output[1:])

    @staticmethod
    @once_differentiable  # the saved states are built outside the graph: no second derivative.
    def backward(ctx, grad_Q: Tensor | None, *_unused: None) -> tuple[None, Tensor | None, None]:
        if grad_Q is None:
            return None, None, None
        B, signs, V, *saved = ctx.saved_tensors
        return None, _rotated_backward(grad_Q, B, signs, V, saved), None


def rotated_householder(B: Tensor, reflectors: Tensor, signs: Tensor | None = None) -> Tensor:
    """``B · householder_product(reflectors) · diag(signs)``, fused, for a base without gradient.

    The product of a dynamic trivialization's base with the Householder map, whose columns torch
    then multiplies by one sign each (``signs``, read from the diagonal of ``reflectors``).

    For square reflectors (``n x n``) of at least 128 columns, the product is accumulated from
    the left, ``B H₁ ⋯ H_n``, a block of reflectors at a time (64 below ``n = 256``, then
    ``n / 8``, at least 128): a block changes only the columns of the running product from its
    first reflector on, and in the UT form ``I - Y T Yᵀ`` (see :func:`householder_product`) it
    costs three products with ``n x b`` panels. The base is thereby absorbed into the blocks
    instead of costing a product of its own, and no ``n x n`` triangular factor is formed: at
    ``n = 512`` with blocks of 64, about ``1.25 n³`` multiply-adds forward and ``2.4 n³``
    backward (``n³`` and ``2 n³`` in the limit of small blocks), against ``2.6 n³`` and ``4.3 n³``
    for the UT form followed by the base product; wider blocks do slightly more in wider
    products, which ran faster. The blocks' triangular factors are computed together, in a few
    batched calls, and the signs are applied to the result and to the incoming cotangent in
    passes the kernel makes anyway. The backward differentiates the blocks explicitly, with
    matrix products only. The saved states (one per block) hold about ``n² (n / b + 1) / 2``
    numbers for blocks of ``b``.

    Tall reflectors (``n > k``), and squares below 128, are computed as
    ``B @ (householder_product(reflectors) · diag(signs))``: there the running product would be
    ``n x n`` while the result is ``n x k``.

    Args:
        B: orthogonal tensor of shape ``(..., n, n)`` of ``reflectors``' dtype (broadcast
            against its batch). It takes no gradient.
        reflectors: real tensor of shape ``(..., n, k)``, ``n >= k``, as for
            :func:`householder_product`; ``float16`` and ``bfloat16`` are computed in ``float32``.
        signs: optional tensor of shape ``(..., k)`` (broadcast against the batch) that
            multiplies the result's columns, such as torch's ``±1`` from the diagonal of
            ``reflectors``. It takes no gradient.

    Returns:
        ``B H₁⋯H_k[:, :k] diag(signs)``, of shape ``(..., n, k)`` and ``reflectors``' dtype.

    Raises:
        ValueError: ``reflectors`` is complex or not of shape ``(..., n, k)`` with ``n >= k``,
            ``B`` is not ``(..., n, n)``, or ``signs`` has not ``k`` entries in its last
            dimension.

    Example:
        >>> B = torch.linalg.qr(torch.randn(300, 300)).Q
        >>> R = torch.randn(300, 300)
        >>> torch.allclose(rotated_householder(B, R), B @ householder_product(R), atol=1e-5)
        True
        >>> signs = torch.ones(300).copysign_(R.diagonal())
        >>> Q = rotated_householder(B, R, signs)
        >>> torch.allclose(Q, B @ householder_product(R) * signs, atol=1e-5)
        True
    """
    if reflectors.is_complex():
        raise ValueError(f"rotated_householder expects a real tensor, got {reflectors.dtype}")
    n = reflectors.size(-2) if reflectors.dim() >= 2 else -1
    if reflectors.dim() < 2 or n < reflectors.size(-1) or B.dim() < 2 or B.shape[-2:] != (n, n):
        raise ValueError(
            "rotated_householder expects reflectors of shape (..., n, k) with n >= k and a base "
            f"of shape (..., n, n), got reflectors of shape {tuple(reflectors.shape)} and B of "
            f"shape {tuple(B.shape)}"
        )
    k = reflectors.size(-1)
    if signs is not None and (signs.dim() < 1 or signs.size(-1) != k):
        raise ValueError(
            f"rotated_householder expects signs of shape (..., {k}) for reflectors of shape "
            f"{tuple(reflectors.shape)}, got {tuple(signs.shape)}"
        )
    work = working_dtype(reflectors.dtype)
    if work != reflectors.dtype:
        wide_signs = None if signs is None else signs.to(work)
        Q = rotated_householder(B.to(work), reflectors.to(work), wide_signs)
        return Q.to(reflectors.dtype)
    B = B.detach()
    signs = None if signs is None else signs.detach().to(reflectors.dtype)
    if k != n or not _in_blocks(n):
        Q = householder_product(reflectors)
        return B @ (Q if signs is None else Q * signs.unsqueeze(-2))
    batch = torch.broadcast_shapes(
        B.shape[:-2], reflectors.shape[:-2], () if signs is None else signs.shape[:-1]
    )
    B, reflectors = B.expand(*batch, n, n), reflectors.expand(*batch, n, n)
    signs = None if signs is None else signs.expand(*batch, n)
    if torch.is_grad_enabled() and reflectors.requires_grad:
        return _RotatedHouseholder.apply(B, reflectors, signs)[0]
    return _rotated_forward(B, reflectors, signs, keep_states=False)[0]


@torch.no_grad()
def householder_square(reflectors: Tensor) -> Tensor:
    """All ``n`` columns of ``H₁ ⋯ H_k``, for reflectors stored as in :func:`householder_product`.

    The ``n x n`` orthogonal matrix whose first ``k`` columns :func:`householder_product` returns;
    the remaining columns complete them. Used when a base absorbs the current rotation
    (re-basing), so it is computed without a gradient, by LAPACK's ``orgqr`` with ``τ = 0`` (an
    identity reflector) for the missing columns.

    Args:
        reflectors: real tensor of shape ``(..., n, k)`` with ``n >= k``.

    Returns:
        Orthogonal tensor of shape ``(..., n, n)``.

    Example:
        >>> R = torch.randn(5, 2)
        >>> H = householder_square(R)
        >>> torch.allclose(H[:, :2], householder_product(R), atol=1e-6)
        True
    """
    n, k = reflectors.size(-2), reflectors.size(-1)
    tails = reflectors.tril(diagonal=-1)
    tau = 2.0 / (1.0 + (tails * tails).sum(dim=-2))
    tau = torch.cat([tau, tau.new_zeros(*tau.shape[:-1], n - k)], dim=-1)
    tails = torch.cat([tails, tails.new_zeros(*tails.shape[:-1], n - k)], dim=-1)
    return torch.linalg.householder_product(tails, tau)
