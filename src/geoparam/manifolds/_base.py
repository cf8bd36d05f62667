"""The base of every geoparam parametrization: what registration, training and tests rely on."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._validation import check_assignment

__all__ = ["Parametrization"]


class Parametrization(nn.Module):
    """An ``nn.Module`` map from unconstrained tensors onto a constraint set, for one tensor.

    A subclass implements ``forward`` (the map) and :meth:`_right_inverse` (a pre-image of a
    value on the constraint set), and where it can, :meth:`sample` and :meth:`_in_manifold`. The
    base holds what every parametrization shares:

    * the constrained tensor's ``shape``, ``dtype`` and ``device``, which follow the module
      through ``.to()``, ``.double()``, ``to_empty()`` and the like (an empty tensor that is
      neither a buffer nor a parameter: ``state_dict`` and ``buffers()`` stay torch's), and a
      ``label`` naming module and tensor in every message;
    * a validating :meth:`right_inverse`: the assigned value must be a finite tensor of the
      right shape before the subclass sees it (torch checks the shape only afterwards, and not at
      all for ``unsafe=True`` registrations);
    * hooks that registration and training call on every parametrization instead of asking for
      its class: :meth:`legacy_state_keys`, :attr:`can_rebase` with :meth:`rebase_`, and
      :meth:`reinitialize_`.

    Args:
        shape: shape of the constrained tensor, or ``None`` when it is not known (assignments are
            then not checked for shape).
        label: how messages name the tensor, e.g. ``"Linear.weight"``.
        dtype: the constrained tensor's dtype. Default: torch's default dtype.
        device: the constrained tensor's device. Default: the CPU.

    Example:
        >>> class Positive(Parametrization):
        ...     def forward(self, X):
        ...         return X.exp()
        ...     def _right_inverse(self, value):
        ...         return value.log()
        >>> param = Positive(torch.Size([2]), label="a tensor")
        >>> param(param.right_inverse(torch.tensor([1.0, 2.0])))
        tensor([1., 2.])
    """

    def __init__(
        self,
        shape: torch.Size | None,
        *,
        label: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.shape = None if shape is None else torch.Size(shape)
        self.label = label
        self._like = torch.empty(0, dtype=dtype, device=device)

    def _apply(self, fn, recurse: bool = True):
        # Every dtype or device conversion of a module (.to, .double, .cuda, to_empty, ...)
        # passes its tensors through fn: the empty reference tensor goes the same way.
        super()._apply(fn, recurse)
        self._like = fn(self._like)
        return self

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the constrained tensor."""
        return self._like.dtype

    @property
    def device(self) -> torch.device:
        """The device of the constrained tensor."""
        return self._like.device

    def right_inverse(self, value: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Check ``value`` (a finite tensor of this shape), then return its pre-image.

        Raises:
            geoparam.errors.NotATensorError: ``value`` is not a tensor.
            ValueError: ``value`` has the wrong shape or non-finite entries.
        """
        self._check_assignment(value)
        return self._right_inverse(value)

    def _check_assignment(self, value: Tensor) -> None:
        check_assignment(value, self.shape, self.label)

    def _right_inverse(self, value: Tensor) -> Tensor | tuple[Tensor, ...]:
        raise NotImplementedError(
            f"{self.label}: {type(self).__name__} cannot be assigned to (it has no right inverse)."
        )

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Draw a random point of the constraint set, of this shape, dtype and device.

        Raises:
            NotImplementedError: the parametrization has no distribution to draw from.
        """
        raise NotImplementedError(f"{self.label}: {type(self).__name__} has no sample().")

    def in_manifold(self, value: Tensor, atol: float | None = None) -> bool:
        """Whether ``value`` has this shape and satisfies the constraint (within ``atol``)."""
        if self.shape is not None and value.shape != self.shape:
            return False
        return self._in_manifold(value, atol)

    def _in_manifold(self, value: Tensor, atol: float | None) -> bool:
        raise NotImplementedError(f"{self.label}: {type(self).__name__} has no in_manifold().")

    def legacy_state_keys(self) -> dict[str, str | None]:
        """Keys of an older torch layout that this parametrization reads from a checkpoint.

        Maps a suffix of the constrained tensor's old key (``"_g"`` for ``weight_g``) to the key
        it becomes under ``parametrizations.<name>.`` (``None``: the entry is dropped). Only a
        first parametrization is asked, since the old layouts owned the raw tensor. Default:
        none.
        """
        return {}

    @property
    def can_rebase(self) -> bool:
        """Whether :meth:`rebase_` can fold the current value into a base (``update_base``)."""
        return False

    def rebase_(self, X: Tensor) -> Tensor:
        """Fold the map's current value at ``X`` into a base; return the new unconstrained value.

        Raises:
            RuntimeError: the parametrization has no base (see :attr:`can_rebase`).
        """
        raise RuntimeError(f"{self.label}: {type(self).__name__} has no base to re-base.")

    def reinitialize_(self, value: Tensor) -> None:
        """Refresh state that depends on the value (e.g. singular vectors) after it was drawn anew.

        Called after ``value`` was assigned by ``reset_parameters()`` or
        ``geoparam.reset_parametrizations``. Default: nothing to refresh.
        """
