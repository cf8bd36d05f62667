"""geotorch 0.4's front doors, on geoparam's constraints.

Replace ``import geotorch`` by ``from geoparam.compat import geotorch``: every function of
geotorch's ``__all__`` is here with geotorch's name, signature, defaults and keywords
(``tensor_name``, ``triv``, ``f``, ``lam``, ``radius``, ``embedded``, ``alpha``, ``rank``,
``lower``), and each is one call of the geoparam front door of the same constraint. geotorch's
trivialization names become geoparam's (``"expm"`` → ``"matrix_exp"``, ``"cayley"`` →
``"cayley"``); ``f`` is passed on as it is (a name, a callable or a pair ``(f, f_inverse)``).

What changes with the move is geoparam's behaviour, not the call: the module's weight is kept
when it satisfies the constraint and projected onto it otherwise, where geotorch replaces it by a
random sample; :func:`invertible` keeps ``det > 0``; the constraints assembled from factors
(low rank, positive definite, ...) store one tensor per factor (``original0``, ``original1``,
...), so their geotorch checkpoints do not load as they are (those of :func:`skew`,
:func:`symmetric`, :func:`sphere`, :func:`orthogonal` and :func:`grassmannian` do). See the page
"Migrating from geotorch".

geotorch's classes (``Stiefel``, ``LowRank``, ...) are not mirrored: their constructors differ
from geoparam's (:mod:`geoparam.manifolds`), and reading one here raises an ``AttributeError``
that names geoparam's class.

Example:
    >>> from geoparam.compat import geotorch
    >>> layer = geotorch.orthogonal(nn.Linear(6, 6), "weight")
    >>> torch.allclose(layer.weight.T @ layer.weight, torch.eye(6), atol=1e-5)
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import Tensor, nn
from torch.nn.utils import parametrize

from .. import constraints, training
from ..linalg import is_orthogonal

__all__ = [
    "almost_orthogonal",
    "alpha_stable",
    "fixed_rank",
    "grassmannian",
    "invertible",
    "low_rank",
    "orthogonal",
    "positive_definite",
    "positive_semidefinite",
    "positive_semidefinite_fixed_rank",
    "positive_semidefinite_low_rank",
    "skew",
    "sln",
    "sphere",
    "symmetric",
    "update_base",
]

#: A geotorch trivialization: a name, or a callable from skew-symmetric to orthogonal matrices.
Triv = str | Callable[[Tensor], Tensor]
#: A function on the (singular or eigen) values: a name, a callable, or ``(f, f_inverse)``.
Function = str | Callable[[Tensor], Tensor] | tuple[Callable[[Tensor], Tensor], ...]

# geotorch's trivialization names -> geoparam's orthogonal map names.
_MAPS = {"expm": "matrix_exp", "cayley": "cayley"}

# geotorch's classes -> what geoparam offers in their place.
_CLASSES = {
    "ProductManifold": "geoparam.manifolds.Product",
    "Rn": "none (an unconstrained tensor needs no parametrization)",
    "Skew": "geoparam.manifolds.Skew",
    "Symmetric": "geoparam.manifolds.Symmetric",
    "SO": "geoparam.manifolds.Orthogonal",
    "Sphere": "geoparam.manifolds.Sphere",
    "SphereEmbedded": "geoparam.manifolds.SphereEmbedded",
    "Stiefel": "geoparam.manifolds.Orthogonal",
    "Grassmannian": "geoparam.manifolds.Grassmannian",
    "AlmostOrthogonal": "geoparam.manifolds.AlmostOrthogonal",
    "LowRank": "geoparam.manifolds.LowRank",
    "FixedRank": "geoparam.manifolds.FixedRank",
    "GLp": "geoparam.manifolds.Invertible",
    "SL": "geoparam.manifolds.SpecialLinear",
    "PSD": "geoparam.manifolds.PositiveDefinite",
    "PSSD": "geoparam.manifolds.PositiveSemidefinite",
    "PSSDLowRank": "geoparam.manifolds.PSDLowRank",
    "PSSDFixedRank": "geoparam.manifolds.PSDFixedRank",
    "Hurwitz": "geoparam.manifolds.AlphaStable",
}


def __getattr__(name: str) -> object:
    # Scripts that build geotorch's classes directly need geoparam's: say which.
    if name in _CLASSES:
        raise AttributeError(
            f"geoparam.compat.geotorch mirrors geotorch's functions, not its class {name!r}; "
            f"geoparam's counterpart: {_CLASSES[name]}, whose constructor differs."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _map(constraint: str, triv: Triv) -> str:
    """geoparam's name for geotorch's trivialization ``triv``."""
    if isinstance(triv, str) and triv in _MAPS:
        return _MAPS[triv]
    if callable(triv):
        raise NotImplementedError(
            f"{constraint}: a callable triv is supported by orthogonal() on square weights only; "
            f'here use triv="expm" or "cayley", or geoparam.custom_constraint for a map of your '
            "own."
        )
    raise ValueError(f'{constraint}: triv must be "expm", "cayley" or a callable, got {triv!r}.')


def _triv_of_skew(triv: Callable[[Tensor], Tensor], X: Tensor) -> Tensor:
    # geotorch's orthogonal map reads only the strictly lower triangle of the stored tensor.
    L = X.tril(-1)
    return triv(L - L.mH)


def _rectangular(module: nn.Module, name: str) -> bool:
    # A non-square matrix (or batch of them); anything else is left to geoparam's checks.
    weight = getattr(module, name, None) if isinstance(name, str) else None
    return isinstance(weight, Tensor) and weight.ndim >= 2 and weight.size(-2) != weight.size(-1)


def skew(module: nn.Module, tensor_name: str = "weight", lower: bool = True) -> nn.Module:
    r"""geotorch's ``skew``: ``W = -Wᵀ``, through :func:`geoparam.skew`.

    ``W = L - Lᵀ`` with ``L`` the strictly lower (``lower=False``: upper) triangle of the stored
    tensor.

    Args:
        module: the module holding the tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        lower: read the lower triangle. Default: ``True``.

    Returns:
        ``module``.

    Raises:
        ValueError: as :func:`geoparam.skew` (e.g. a non-square tensor).

    Example:
        >>> layer = skew(nn.Linear(4, 4), "weight")
        >>> torch.allclose(layer.weight, -layer.weight.T)
        True
    """
    return constraints.skew(module, tensor_name, lower=lower)


def symmetric(module: nn.Module, tensor_name: str = "weight", lower: bool = True) -> nn.Module:
    r"""geotorch's ``symmetric``: ``W = Wᵀ``, through :func:`geoparam.symmetric`.

    ``W`` is built from the lower (``lower=False``: upper) triangle of the stored tensor.

    Args:
        module: the module holding the tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        lower: read the lower triangle. Default: ``True``.

    Returns:
        ``module``.

    Raises:
        ValueError: as :func:`geoparam.symmetric` (e.g. a non-square tensor).

    Example:
        >>> layer = symmetric(nn.Linear(4, 4), "weight")
        >>> torch.allclose(layer.weight, layer.weight.T)
        True
    """
    return constraints.symmetric(module, tensor_name, lower=lower)


def sphere(
    module: nn.Module,
    tensor_name: str = "weight",
    radius: float = 1.0,
    embedded: bool = False,
) -> nn.Module:
    r"""geotorch's ``sphere``: ``‖w‖ = radius`` along the last dimension.

    Through :func:`geoparam.sphere`. Each row of a matrix (the whole vector, for a 1-D tensor)
    has norm ``radius``. ``embedded`` chooses the map: ``r · x/‖x‖`` (``True``) or the
    exponential map of the sphere at a base point (``False``).

    Args:
        module: the module holding the tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        radius: the norm, a positive number. Default: ``1.0``.
        embedded: use the projection map instead of the exponential map. Default: ``False``.

    Returns:
        ``module``.

    Raises:
        ValueError: as :func:`geoparam.sphere` (e.g. ``radius <= 0``).

    Example:
        >>> layer = sphere(nn.Linear(5, 3), "bias", radius=2.0)
        >>> torch.allclose(layer.bias.norm(), torch.tensor(2.0))
        True
    """
    return constraints.sphere(module, tensor_name, radius, embedded=embedded)


def orthogonal(module: nn.Module, tensor_name: str = "weight", triv: Triv = "expm") -> nn.Module:
    r"""geotorch's ``orthogonal``: ``WᵀW = I`` (``WWᵀ = I`` if wide).

    Through :func:`geoparam.orthogonal`: ``W = B · triv(A)[:, :k]`` with ``A`` skew-symmetric
    from the strictly lower part of the stored tensor and ``B`` an orthogonal base (dynamic
    trivialization). A callable ``triv`` (skew-symmetric → orthogonal, with ``triv(0) = I``)
    works on square weights, through :func:`geoparam.custom_constraint` with a group base.

    Args:
        module: the module holding the tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        triv: ``"expm"``, ``"cayley"`` or a callable. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.orthogonal`.
        NotImplementedError: a callable ``triv`` on a non-square weight.

    Example:
        >>> layer = orthogonal(nn.Linear(3, 5), "weight", triv="cayley")
        >>> torch.allclose(layer.weight.T @ layer.weight, torch.eye(3), atol=1e-5)
        True
        >>> layer = orthogonal(nn.Linear(4, 4), "weight", triv=torch.linalg.matrix_exp)
        >>> torch.allclose(layer.weight.T @ layer.weight, torch.eye(4), atol=1e-5)
        True
    """
    if callable(triv) and not isinstance(triv, str) and not _rectangular(module, tensor_name):
        # W = B · triv(A): the base keeps the weight (or, if it is not orthogonal, its image
        # triv(A)), and update_base folds triv(A) into it. geoparam's checks on the tensor apply.
        f = functools.partial(_triv_of_skew, triv)
        return constraints.custom_constraint(
            module, tensor_name, f, in_manifold=is_orthogonal, group=True
        )
    return constraints.orthogonal(module, tensor_name, _map("orthogonal", triv))


def grassmannian(module: nn.Module, tensor_name: str = "weight", triv: Triv = "expm") -> nn.Module:
    r"""geotorch's ``grassmannian``: a subspace, via :func:`geoparam.grassmannian`.

    ``W`` has orthonormal columns (rows, if wide) like :func:`orthogonal`, but only the subspace
    they span moves: rotations within it are not parametrized.

    Args:
        module: the module holding the tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        triv: ``"expm"`` or ``"cayley"``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.grassmannian`.
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = grassmannian(nn.Linear(2, 5), "weight")
        >>> torch.allclose(layer.weight.T @ layer.weight, torch.eye(2), atol=1e-5)
        True
    """
    return constraints.grassmannian(module, tensor_name, triv=_map("grassmannian", triv))


def low_rank(module: nn.Module, tensor_name: str, rank: int, triv: Triv = "expm") -> nn.Module:
    r"""geotorch's ``low_rank``: ``rank(W) <= rank``, through :func:`geoparam.low_rank`.

    ``W = U diag(s) Vᵀ`` with ``U``, ``V`` of ``rank`` orthonormal columns and ``s`` free.

    Args:
        module: the module holding the tensor.
        tensor_name: the tensor's name.
        rank: the largest rank, ``1 <= rank <= min(n, k)``.
        triv: ``"expm"`` or ``"cayley"``, for ``U`` and ``V``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.low_rank` (e.g. a bad rank).
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = low_rank(nn.Linear(6, 5), "weight", rank=2)
        >>> int((torch.linalg.svdvals(layer.weight) > 1e-5).sum())
        2
    """
    return constraints.low_rank(module, tensor_name, rank, triv=_map("low_rank", triv))


def fixed_rank(
    module: nn.Module,
    tensor_name: str,
    rank: int,
    f: Function = "softplus",
    triv: Triv = "expm",
) -> nn.Module:
    r"""geotorch's ``fixed_rank``: ``rank(W) = rank``, through :func:`geoparam.fixed_rank`.

    ``W = U diag(f(x)) Vᵀ`` with ``f`` positive, so the ``rank`` singular values never vanish.

    Args:
        module: the module holding the tensor.
        tensor_name: the tensor's name.
        rank: the rank, ``1 <= rank <= min(n, k)``.
        f: ``"softplus"`` (``softplus + 1e-6``), another name of geoparam's, a callable or a
            pair ``(f, f_inverse)``. Default: ``"softplus"``.
        triv: ``"expm"`` or ``"cayley"``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.fixed_rank`.
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = fixed_rank(nn.Linear(6, 5), "weight", 3)
        >>> int((torch.linalg.svdvals(layer.weight) > 1e-5).sum())
        3
    """
    return constraints.fixed_rank(module, tensor_name, rank, f=f, triv=_map("fixed_rank", triv))


def almost_orthogonal(
    module: nn.Module,
    tensor_name: str = "weight",
    lam: float = 0.1,
    f: Function = "sin",
    triv: Triv = "expm",
) -> nn.Module:
    r"""geotorch's ``almost_orthogonal``: singular values in ``[1 - lam, 1 + lam]``.

    ``W = U diag(1 + lam · f(x)) Vᵀ`` with ``f`` into ``[-1, 1]``, through
    :func:`geoparam.almost_orthogonal`.

    Args:
        module: the module holding the tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        lam: the radius, in ``[0, 1]``. Default: ``0.1``.
        f: ``"sin"``, ``"tanh"``, ``"scaled_sigmoid"``, a callable or a pair
            ``(f, f_inverse)``. Default: ``"sin"``.
        triv: ``"expm"`` or ``"cayley"``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.almost_orthogonal`.
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = almost_orthogonal(nn.Linear(4, 4), "weight", 0.5)
        >>> s = torch.linalg.svdvals(layer.weight)
        >>> bool(s.min() >= 0.5 - 1e-5 and s.max() <= 1.5 + 1e-5)
        True
    """
    triv = _map("almost_orthogonal", triv)
    return constraints.almost_orthogonal(module, tensor_name, lam, f=f, triv=triv)


def invertible(
    module: nn.Module, tensor_name: str = "weight", f: Function = "softplus", triv: Triv = "expm"
) -> nn.Module:
    r"""geotorch's ``invertible``: ``det W > 0``, through :func:`geoparam.invertible`.

    ``W = U diag(f(x)) Vᵀ`` with ``f`` positive and ``det U · det V = 1``: the connected
    component ``GL⁺(n)``, which geoparam keeps (geotorch keeps only ``det W ≠ 0``).

    Args:
        module: the module holding the (square) tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        f: ``"softplus"``, another name of geoparam's, a callable or a pair ``(f, f_inverse)``.
            Default: ``"softplus"``.
        triv: ``"expm"`` or ``"cayley"``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.invertible`.
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = invertible(nn.Linear(4, 4), "weight")
        >>> bool(torch.linalg.det(layer.weight) > 0)
        True
    """
    return constraints.invertible(module, tensor_name, f=f, triv=_map("invertible", triv))


def sln(
    module: nn.Module, tensor_name: str = "weight", f: Function = "softplus", triv: Triv = "expm"
) -> nn.Module:
    r"""geotorch's ``sln``: ``det W = 1``, through :func:`geoparam.sln`.

    ``W = U diag(s) Vᵀ`` with ``s = f(x)`` normalised to ``∏ sᵢ = 1`` and ``det U · det V = 1``.

    Args:
        module: the module holding the (square) tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        f: ``"softplus"``, another name of geoparam's, a callable or a pair ``(f, f_inverse)``.
            Default: ``"softplus"``.
        triv: ``"expm"`` or ``"cayley"``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.sln`.
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = sln(nn.Linear(4, 4), "weight")
        >>> torch.allclose(torch.linalg.det(layer.weight), torch.tensor(1.0), atol=1e-4)
        True
    """
    return constraints.sln(module, tensor_name, f=f, triv=_map("sln", triv))


def positive_definite(
    module: nn.Module, tensor_name: str = "weight", f: Function = "softplus", triv: Triv = "expm"
) -> nn.Module:
    r"""geotorch's ``positive_definite``: ``W = Wᵀ ≻ 0``, via :func:`geoparam.positive_definite`.

    ``W = Q diag(f(x)) Qᵀ`` with ``Q`` orthogonal and ``f`` positive.

    Args:
        module: the module holding the (square) tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        f: ``"softplus"``, another name of geoparam's, a callable or a pair ``(f, f_inverse)``.
            Default: ``"softplus"``.
        triv: ``"expm"`` or ``"cayley"``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.positive_definite`.
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = positive_definite(nn.Linear(4, 4), "weight")
        >>> bool(torch.linalg.eigvalsh(layer.weight).min() > 0)
        True
    """
    triv = _map("positive_definite", triv)
    return constraints.positive_definite(module, tensor_name, f=f, triv=triv)


def positive_semidefinite(
    module: nn.Module, tensor_name: str = "weight", triv: Triv = "expm"
) -> nn.Module:
    r"""geotorch's ``positive_semidefinite``: ``W = Wᵀ ⪰ 0``.

    Through :func:`geoparam.positive_semidefinite`: ``W = Q diag(λ) Qᵀ`` with ``Q`` orthogonal
    and ``λ >= 0``.

    Args:
        module: the module holding the (square) tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        triv: ``"expm"`` or ``"cayley"``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.positive_semidefinite`.
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = positive_semidefinite(nn.Linear(4, 4), "weight")
        >>> bool(torch.linalg.eigvalsh(layer.weight).min() > -1e-5)
        True
    """
    triv = _map("positive_semidefinite", triv)
    return constraints.positive_semidefinite(module, tensor_name, triv=triv)


def positive_semidefinite_low_rank(
    module: nn.Module, tensor_name: str, rank: int, triv: Triv = "expm"
) -> nn.Module:
    r"""geotorch's ``positive_semidefinite_low_rank``: ``W ⪰ 0`` of rank at most ``rank``.

    ``W = Q diag(λ) Qᵀ`` with ``Q`` of ``rank`` orthonormal columns and ``λ >= 0``, through
    :func:`geoparam.positive_semidefinite_low_rank`.

    Args:
        module: the module holding the (square) tensor.
        tensor_name: the tensor's name.
        rank: the largest rank, ``1 <= rank <= n``.
        triv: ``"expm"`` or ``"cayley"``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as :func:`geoparam.positive_semidefinite_low_rank`.
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = positive_semidefinite_low_rank(nn.Linear(5, 5), "weight", 2)
        >>> L = torch.linalg.eigvalsh(layer.weight)
        >>> bool(L.min() > -1e-5), int((L > 1e-5).sum()) <= 2
        (True, True)
    """
    triv = _map("positive_semidefinite_low_rank", triv)
    return constraints.positive_semidefinite_low_rank(module, tensor_name, rank, triv=triv)


def positive_semidefinite_fixed_rank(
    module: nn.Module,
    tensor_name: str,
    rank: int,
    f: Function = "softplus",
    triv: Triv = "expm",
) -> nn.Module:
    r"""geotorch's ``positive_semidefinite_fixed_rank``: ``W ⪰ 0`` of rank exactly ``rank``.

    ``W = Q diag(f(x)) Qᵀ`` with ``Q`` of ``rank`` orthonormal columns and ``f`` positive,
    through :func:`geoparam.positive_semidefinite_fixed_rank`.

    Args:
        module: the module holding the (square) tensor.
        tensor_name: the tensor's name.
        rank: the rank, ``1 <= rank <= n``.
        f: ``"softplus"``, another name of geoparam's, a callable or a pair ``(f, f_inverse)``.
            Default: ``"softplus"``.
        triv: ``"expm"`` or ``"cayley"``. Default: ``"expm"``.

    Returns:
        ``module``.

    Raises:
        ValueError: an unknown ``triv`` name; as
            :func:`geoparam.positive_semidefinite_fixed_rank`.
        NotImplementedError: a callable ``triv``.

    Example:
        >>> layer = positive_semidefinite_fixed_rank(nn.Linear(5, 5), "weight", 2)
        >>> int((torch.linalg.eigvalsh(layer.weight) > 1e-5).sum())
        2
    """
    triv = _map("positive_semidefinite_fixed_rank", triv)
    return constraints.positive_semidefinite_fixed_rank(module, tensor_name, rank, f=f, triv=triv)


def alpha_stable(module: nn.Module, tensor_name: str = "weight", alpha: float = 1e-3) -> nn.Module:
    r"""geotorch's ``alpha_stable``: every eigenvalue has real part ``<= -alpha``.

    Through :func:`geoparam.alpha_stable`: ``W = (J - R) Q - alpha · I`` with ``J``
    skew-symmetric and ``R``, ``Q`` positive semidefinite (geotorch's map is another one of the
    same set).

    Args:
        module: the module holding the (square) tensor.
        tensor_name: the tensor's name. Default: ``"weight"``.
        alpha: the margin, ``>= 0``. Default: ``1e-3``.

    Returns:
        ``module``.

    Raises:
        ValueError: as :func:`geoparam.alpha_stable` (e.g. ``alpha < 0``).

    Example:
        >>> layer = alpha_stable(nn.Linear(4, 4), "weight", alpha=0.5)
        >>> bool(torch.linalg.eigvals(layer.weight).real.max() <= -0.5 + 1e-4)
        True
    """
    return constraints.alpha_stable(module, tensor_name, alpha)


def update_base(layer: nn.Module, tensor_name: str) -> None:
    r"""geotorch's ``update_base``: re-base ``layer.<tensor_name>``, keeping its value.

    Folds the current value of each dynamic trivialization (``W = B · φ(X)``) of that tensor into
    its base and resets ``X``, through :func:`geoparam.update_base`; the optimizer's state is
    kept, as in geotorch. A constraint without a base is left as it is.

    Args:
        layer: the module holding the constrained tensor.
        tensor_name: the tensor's name.

    Raises:
        ValueError: ``layer.<tensor_name>`` is not constrained.

    Example:
        >>> layer = orthogonal(nn.Linear(4, 4), "weight")
        >>> with torch.no_grad():
        ...     _ = layer.parametrizations.weight.original.add_(0.1)
        >>> before = layer.weight.detach().clone()
        >>> update_base(layer, "weight")
        >>> torch.allclose(layer.weight, before, atol=1e-5)
        True
    """
    if not parametrize.is_parametrized(layer, tensor_name):
        raise ValueError(
            f"update_base: {type(layer).__name__}.{tensor_name} is not a constrained tensor."
        )
    training.update_base(layer, name=tensor_name, recurse=False)
