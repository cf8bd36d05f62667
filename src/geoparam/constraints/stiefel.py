"""Front doors of orthonormal frames: orthogonal and unitary weights (a drop-in for torch's)."""

from __future__ import annotations

from torch import nn

from ..manifolds import ORTHOGONAL_MAPS, Grassmannian, Orthogonal, OrthogonalMap
from ._front import attach, constrain, label, tensor_to_constrain

__all__ = ["grassmannian", "orthogonal"]


def orthogonal(
    module: nn.Module,
    name: str = "weight",
    orthogonal_map: OrthogonalMap | str | None = None,
    *,
    use_trivialization: bool = True,
    compact_base: bool | None = None,
) -> nn.Module:
    r"""Constrain ``module.<name>`` to be orthogonal (real) or unitary (complex).

    A weight ``Q`` of shape ``(..., m, n)`` satisfies ``QᴴQ = I`` if ``m >= n`` and ``QQᴴ = I``
    otherwise; leading dimensions are a batch. A drop-in for
    :func:`torch.nn.utils.parametrizations.orthogonal`: same arguments, defaults, exception types
    (with messages that name the module and tensor) and ``state_dict`` keys, so checkpoints load
    in either library. See
    :class:`geoparam.manifolds.Orthogonal` for the maps.

    The initial value is the current weight when it is already orthogonal and its QR
    orthogonalisation (with ``diag(R) >= 0``) otherwise; the weight is never resampled. (As in
    torch, ``"matrix_exp"`` and ``"cayley"`` without trivialization cannot be inverted: there the
    stored tensor is the map's input and the weight starts at its image.) Unlike
    torch, the Householder map keeps every column sign at ``±1`` under weight decay.

    A tall or wide weight (``n x k``, ``k < n``) whose ``n x n`` base would hold more than
    :data:`geoparam.manifolds.FULL_BASE_LIMIT` (2²²) entries keeps a compact base instead: its
    first ``k`` columns, ``O(nk)`` memory and ``O(nk²)`` work per step, registration and
    ``update_base`` (``orthogonal(nn.Embedding(30000, 50))`` registers in milliseconds). The
    weights are the same; the stored tensors differ (see :class:`geoparam.manifolds.Orthogonal`),
    and a checkpoint of either layout loads into the other, converted, with a warning.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        orthogonal_map: ``"matrix_exp"``, ``"cayley"`` or ``"householder"``. Default:
            ``"matrix_exp"`` for a square or complex weight, ``"householder"`` otherwise.
        use_trivialization: keep a base ``B`` so that ``Q = B · φ(X)`` (dynamic
            trivialization). Default: ``True``.
        compact_base: ``True``: keep the compact base whatever the size (geoparam only: torch
            cannot load such a checkpoint); ``False``: torch's ``n x n`` base whatever the size (a
            ``UserWarning`` says what it costs above the limit). Default (``None``): by size, as
            above. A square weight has one layout.

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``; a tensor with fewer than two dimensions; an
            unknown map; the Householder map on a complex tensor. Each message contains torch's
            wording for the same case. ``compact_base=True`` with ``use_trivialization=False``.
        TypeError: ``compact_base`` is not a bool or ``None``.
        UnsupportedDtypeError: an integer tensor.
        NotAModuleError, InvalidNameError: ``module`` or ``name`` of the wrong type.

    The exception classes of :mod:`geoparam.errors` derive from every type torch raises for the
    same input.

    Example:
        >>> layer = orthogonal(nn.Linear(20, 40))
        >>> Q = layer.weight
        >>> torch.allclose(Q.T @ Q, torch.eye(20), atol=1e-5)
        True
    """
    weight = tensor_to_constrain(module, name, "orthogonal")
    where = label(module, name)
    if weight.ndim < 2:
        raise ValueError(
            f"orthogonal: {where} has shape {tuple(weight.shape)}: Expected a matrix or batch of "
            f"matrices. Got a tensor of {weight.ndim} dimensions."
        )
    if orthogonal_map is None:
        square = weight.size(-2) == weight.size(-1)
        orthogonal_map = "matrix_exp" if square or weight.is_complex() else "householder"
    if orthogonal_map not in ORTHOGONAL_MAPS:
        names = ", ".join(f'"{m}"' for m in ORTHOGONAL_MAPS)
        raise ValueError(
            f"orthogonal: {where}: orthogonal_map has to be one of {names}. Got: {orthogonal_map}"
        )
    if orthogonal_map == "householder" and weight.is_complex():
        raise ValueError(
            f"orthogonal: {where} is {weight.dtype}: The householder parametrization does not "
            'support complex tensors. Use "matrix_exp" or "cayley".'
        )
    parametrization = Orthogonal(
        weight.shape,
        orthogonal_map,
        use_trivialization=use_trivialization,
        compact_base=compact_base,
        label=where,
        dtype=weight.dtype,
        device=weight.device,
    )
    return attach(module, name, parametrization)


def grassmannian(
    module: nn.Module, name: str = "weight", *, triv: OrthogonalMap | str | None = None
) -> nn.Module:
    r"""Constrain ``module.<name>`` to an orthonormal frame that trains as the subspace it spans.

    A weight ``Q`` of shape ``(..., m, n)`` has orthonormal columns (``QᴴQ = I``, ``m >= n``) or
    rows (``QQᴴ = I``, ``m < n``), as with :func:`orthogonal`, but the point it represents is its
    span, a point of the Grassmannian ``Gr(max(m, n), min(m, n))``: the parametrization only
    moves the subspace. With ``X = [X₁; X₂]`` (top ``k x k`` block, bottom block; tall
    orientation) and the base ``B``, ``Q = B · φ(A)[:, :k]`` with ``A = [[0, -X₂ᴴ], [X₂, 0]]``;
    ``X₁`` is not read. See :class:`geoparam.manifolds.Grassmannian`. geotorch's
    ``grassmannian`` with the same maps (``"expm"`` is ``"matrix_exp"`` here).

    The current weight is kept when it has orthonormal columns (rows) and replaced by its polar
    factor (the nearest such matrix, with the same span) otherwise; it is never resampled.
    ``update_base`` folds the motion into ``B`` and resets ``X`` to ``0``.

    Args:
        module: the module holding the tensor.
        name: the tensor's name. Default: ``"weight"``.
        triv: ``"matrix_exp"`` or ``"cayley"`` (real or complex tensors). Default:
            ``"cayley"``, the faster one (geotorch's default is the exponential).

    Returns:
        ``module``, with the parametrization registered.

    Raises:
        ValueError: no tensor called ``name``, or one with NaN or Inf; fewer than two
            dimensions; an unknown map or ``"householder"`` (it parametrizes frames, not
            subspaces).
        TypeError: ``triv`` is not a string.

    Example:
        >>> layer = grassmannian(nn.Linear(3, 8))
        >>> Q = layer.weight
        >>> torch.allclose(Q.T @ Q, torch.eye(3), atol=1e-5)
        True
    """
    return constrain(module, name, "grassmannian", Grassmannian, triv=triv)
