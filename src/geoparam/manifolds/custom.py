"""A constraint given by its map: the parametrization behind :func:`geoparam.custom_constraint`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._base import Parametrization

__all__ = ["CustomConstraint"]


def _name(function: Callable) -> str:
    return getattr(function, "__name__", type(function).__name__)


class CustomConstraint(Parametrization):
    r"""The parametrization ``W = f(X)`` for a map ``f`` the user gives, with geoparam's checks.

    Three ways to set the stored tensor ``X`` from a weight ``W`` (at registration and on
    assignment):

    * ``group=True``: ``f`` maps onto a matrix group ``G`` with ``f(0) = I`` (e.g.
      :func:`torch.linalg.matrix_exp` of any square matrix onto ``GL⁺(n)``, or the Cayley
      transform of the skew part onto ``SO(n)``), and the map is ``W = B · f(X)`` with a base
      buffer ``B`` (*dynamic trivialization*, Lezcano-Casado 2019). The right inverse sets
      ``B = W`` and ``X = 0``, so the weight is kept without an inverse of ``f``, and
      :meth:`rebase_` (``geoparam.update_base``) folds ``B ← B · f(X)``, ``X ← 0``. ``W`` stays
      in the coset ``B · G``: in ``G`` itself when ``B`` is.
    * ``inverse`` given: ``X = inverse(W)``; it must be a right inverse (``f(inverse(W)) = W``).
    * neither: ``f`` cannot be inverted. Registration stores the current weight *as* ``X``, so
      the weight starts at ``f(W)`` (as torch does for its maps without an inverse), and
      assigning to the weight raises ``NotImplementedError``.

    With an ``in_manifold`` predicate, an assignment of a value it rejects raises
    ``ValueError``, and registration replaces a weight it rejects by ``f(W)``, a point of
    ``f``'s image (with ``group=True`` that becomes the base, and ``X = 0``). Without one, every
    value is accepted as it is.

    ``f`` must be a function of ``X`` alone, without data-dependent Python control flow, for
    ``torch.compile`` and for geoparam's reuse of a weight read several times (which sees changes
    of ``X`` and of ``B``, not of tensors that ``f`` captures).

    Args:
        shape: shape of the weight.
        f: maps a tensor of the weight's shape and dtype to one of the same shape and dtype.
        inverse: a right inverse of ``f``, or ``None`` (always ``None`` with ``group=True``).
        in_manifold: ``in_manifold(W) -> bool`` (a Python or one-element tensor boolean), the
            test of membership, with its own tolerance (the ``atol`` of :meth:`in_manifold` is
            not passed on); or ``None``: every value is accepted.
        group: whether ``f`` maps onto a matrix group through ``f(0) = I`` (square matrices).
        label: how messages name the tensor (e.g. ``"Linear.weight"``).
        dtype: the weight's dtype. Default: torch's default dtype.
        device: the weight's device. Default: the CPU.

    Raises:
        TypeError: ``f`` is not callable, ``inverse`` or ``in_manifold`` is neither callable
            nor ``None``, ``group`` is not a ``bool``; ``f`` does not return a tensor.
        ValueError: ``group=True`` on a tensor that is not a (batch of) square matrices, with
            ``f(0) ≠ I``, or with an ``inverse``; ``f`` returns a tensor of another shape or
            dtype than its input (checked on a zero tensor of the weight's shape, dtype and
            device).

    Example:
        >>> positive = CustomConstraint(
        ...     torch.Size([3]), torch.exp, torch.log, in_manifold=lambda W: bool(W.min() > 0)
        ... )
        >>> W = torch.tensor([1.0, 2.0, 3.0])
        >>> X = positive.right_inverse(W)
        >>> torch.allclose(positive(X + 1.0), W * torch.e)
        True
    """

    base: Tensor | None

    def __init__(
        self,
        shape: torch.Size,
        f: Callable[[Tensor], Tensor],
        inverse: Callable[[Tensor], Tensor] | None = None,
        *,
        in_manifold: Callable[[Tensor], object] | None = None,
        group: bool = False,
        label: str | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(
            shape, label=label or "the custom-constrained tensor", dtype=dtype, device=device
        )
        where = f"{self.label} of shape {tuple(self.shape)}"
        if not callable(f):
            raise TypeError(f"{where}: f must be callable, got {f!r}.")
        for argument, value in (("inverse", inverse), ("in_manifold", in_manifold)):
            if value is not None and not callable(value):
                raise TypeError(f"{where}: {argument} must be callable or None, got {value!r}.")
        if not isinstance(group, bool):
            raise TypeError(f"{where}: group must be a bool, got {group!r}.")
        if group and (len(self.shape) < 2 or self.shape[-2] != self.shape[-1]):
            raise ValueError(
                f"{where}: group=True needs a square matrix or a batch of square matrices (f "
                "maps onto a matrix group and W = B · f(X))."
            )
        if group and inverse is not None:
            raise ValueError(
                f"{where}: group=True keeps the weight in the base B and needs no inverse; pass "
                "inverse=None."
            )
        self.f = f
        self.inverse = inverse
        self.predicate = in_manifold
        self.group = group
        if group:
            self.register_buffer("base", None)
        self._check_map(where)

    @torch.no_grad()
    def _check_map(self, where: str) -> None:
        # torch checks a map's output at registration only for safe registrations; front doors
        # register with unsafe=True, so a wrong f would otherwise fail at the first forward.
        zero = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        value = self.f(zero)
        if not isinstance(value, Tensor):
            raise TypeError(f"{where}: f must return a tensor, got a {type(value).__name__}.")
        if value.shape != self.shape or value.dtype != self.dtype:
            raise ValueError(
                f"{where}: f must return a tensor of its input's shape and dtype; for a zero "
                f"tensor of shape {tuple(self.shape)} and dtype {self.dtype} it returned shape "
                f"{tuple(value.shape)} and dtype {value.dtype}."
            )
        if self.group and value.device.type != "meta" and value.numel() > 0:
            error = float((value - torch.eye(self.shape[-1], device=self.device)).abs().max())
            if not error <= math.sqrt(torch.finfo(self.dtype).eps):
                raise ValueError(
                    f"{where}: group=True needs f(0) = I (f maps onto a group through its "
                    f"identity); max |f(0) - I| is {error:.3g}."
                )

    def extra_repr(self) -> str:
        inverse = "None" if self.inverse is None else _name(self.inverse)
        return f"f={_name(self.f)}, inverse={inverse}, group={self.group}"

    @property
    def can_rebase(self) -> bool:
        """With ``group=True``, :meth:`rebase_` folds ``f(X)`` into the base."""
        return self.group

    def _evaluate(self, X: Tensor) -> Tensor:
        if not self.group:
            return self.f(X)
        if self.base is None:
            raise RuntimeError(
                f"{self.label}: the custom group constraint has no base yet; assign a value "
                "(right_inverse) before reading the weight."
            )
        return self.base @ self.f(X)

    def right_inverse(self, value: Tensor) -> Tensor:
        """``X`` with ``forward(X) = value``; see the class docstring for the three cases.

        Raises:
            ValueError: ``value`` has the wrong shape or non-finite entries, or (outside
                registration) the ``in_manifold`` predicate rejects it; ``inverse(value)`` is
                not finite.
            NotImplementedError: an assignment (outside registration) without ``inverse`` and
                without ``group``.
        """
        if self.group or self.inverse is not None:
            return super().right_inverse(value)
        self._check_assignment(value)
        if not self._projecting:
            raise NotImplementedError(
                f"{self.label}: cannot assign to a custom constraint whose map has no inverse: "
                "pass inverse= (a right inverse of f) or group=True, or assign f's input to "
                "parametrizations.<name>.original instead."
            )
        # Registration: the weight becomes f's input, and the constrained weight f(W).
        return value.detach().clone()

    @torch.no_grad()
    def _right_inverse(self, value: Tensor) -> Tensor:
        if not self.group:
            X = self.inverse(value)
            bad = int((~torch.isfinite(X)).sum()) if X.device.type != "meta" else 0
            if bad:
                # Typically a value outside f's image, accepted because no predicate was given.
                raise ValueError(
                    f"{self.label}: inverse(W) has {bad} non-finite entries (NaN or Inf) out of "
                    f"{X.numel()}: W is outside the image of f? Pass in_manifold= to refuse such "
                    "values (and project them at registration)."
                )
            return X
        if (value.dtype, value.device) != (self.dtype, self.device):
            # Checked before the base changes: torch checks the dtype only afterwards.
            raise ValueError(
                f"{self.label}: cannot assign a tensor of dtype {value.dtype} on "
                f"{value.device}; expected dtype {self.dtype} on {self.device}."
            )
        self.base = value.detach().clone()
        return torch.zeros_like(value)

    def _violation(self, value: Tensor, atol: float | None) -> str | None:
        if self.predicate is None or bool(self.predicate(value)):
            return None
        return f"in_manifold (the predicate {_name(self.predicate)}) returns False for it"

    @torch.no_grad()
    def _project(self, value: Tensor) -> Tensor:
        """``f(value)``: a point of the image of ``f``, which must pass the predicate."""
        image = self.f(value)
        if self.predicate is not None and not bool(self.predicate(image)):
            raise ValueError(
                f"{self.label}: the weight is off the constraint and so is f(weight): in_manifold "
                "rejects a value of f; check that f maps onto the set that in_manifold describes."
            )
        return image

    @torch.no_grad()
    def rebase_(self, X: Tensor) -> Tensor:
        """Fold the current value into the base, ``B ← B · f(X)``, and return ``X = 0``.

        The weight is unchanged up to the rounding of one product; ``X`` restarts where ``f``
        is the identity.

        Raises:
            RuntimeError: without ``group=True`` there is no base.
        """
        if not self.group:
            raise RuntimeError(
                f"{self.label}: a custom constraint without group=True has no base to re-base."
            )
        self.base = self.base @ self.f(X)
        return torch.zeros_like(X)

    def stack_after_(self, value: Tensor) -> None:
        """After another parametrization (no right inverse runs), the base starts at ``I``."""
        if self.group:
            n = self.shape[-1]
            eye = torch.eye(n, dtype=value.dtype, device=value.device)
            self.base = eye.expand(self.shape).clone()

    @torch.no_grad()
    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A random point of ``f``'s image: ``f(Z)`` or, with ``group=True``, ``f(Z / √n)``.

        ``Z`` has independent standard (complex) normal entries, in the weight's shape, dtype and
        device. For a group, ``Z`` is scaled to ``‖Z / √n‖₂ ≈ 2``: a point of the group around
        ``I`` (not around the current base, which may not be initialised yet, e.g. after
        ``to_empty()``).

        Args:
            generator: the random generator to draw from. Default: torch's global generator.
        """
        Z = torch.randn(self.shape, generator=generator, dtype=self.dtype, device=self.device)
        if not self.group:
            return self.f(Z)
        return self.f(Z / math.sqrt(self.shape[-1]))
