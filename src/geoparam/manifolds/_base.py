"""The base of every geoparam parametrization: what registration, training and tests rely on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from ._reuse import cached_evaluation, evaluate
from ._validation import check_assignment

__all__ = ["Parametrization"]


class Parametrization(nn.Module):
    """An ``nn.Module`` map from unconstrained tensors onto a constraint set, for one tensor.

    A subclass implements :meth:`_evaluate` (the map; ``forward`` evaluates it once per value of
    its inputs, however often the weight is read), :meth:`_right_inverse` (a pre-image of a value
    on the constraint set) and :meth:`_violation` (what keeps a value off the set), and where it
    can, :meth:`_project` and :meth:`sample`. The base holds what every parametrization shares:

    * the constrained tensor's ``shape``, ``dtype`` and ``device``, which follow the module
      through ``.to()``, ``.double()``, ``to_empty()`` and the like (an empty tensor that is
      neither a buffer nor a parameter: ``state_dict`` and ``buffers()`` stay torch's), and a
      ``label`` naming module and tensor in every message;
    * a validating :meth:`right_inverse`: the assigned value must be a finite tensor of the
      right shape before the subclass sees it (torch checks the shape only afterwards, and not at
      all for ``unsafe=True`` registrations), and it must satisfy the constraint: an assignment
      off it raises a ``ValueError`` saying which property fails and by how much. Inside
      :meth:`projecting` (registration, re-initialisation) a value off the set is projected onto
      it instead, and a value on it is kept as it is. (Classes whose ``_right_inverse`` accepts
      any value, like torch's ``orthogonal``, set :attr:`projects_assignments`.)
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
        ...     def _evaluate(self, X):
        ...         return X.exp()
        ...     def _right_inverse(self, value):
        ...         return value.log()
        ...     def _violation(self, value, atol):
        ...         if value.min() <= 0:
        ...             return f"its smallest entry is {value.min():.3g}, not positive"
        ...         return None
        >>> param = Positive(torch.Size([2]), label="a tensor")
        >>> param(param.right_inverse(torch.tensor([1.0, 2.0])))
        tensor([1., 2.])
        >>> param.right_inverse(torch.tensor([1.0, -2.0]))
        Traceback (most recent call last):
          ...
        ValueError: a tensor: cannot assign a value off the constraint: its smallest entry ...
    """

    #: Whether :meth:`_right_inverse` takes any value and maps it onto the set itself (torch's
    #: ``orthogonal`` orthogonalises what is assigned; weight and spectral norm accept anything).
    #: Otherwise the base refuses values off the set, or projects them inside :meth:`projecting`.
    projects_assignments: bool = False

    #: Whether an evaluation is reused by later reads of the same value (:func:`geoparam.caching`).
    #: Maps that cost less than that bookkeeping (entrywise maps, a normalisation) set it to
    #: ``False`` and are evaluated at every read, as in torch.
    reuses_evaluations: bool = True

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
        self._projecting = False

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

    def forward(self, *X: Tensor) -> Tensor:
        """The constrained tensor for the unconstrained ``X``.

        Evaluated once per value of ``X`` and of the buffers, however often the weight is read
        (see :func:`geoparam.caching`), unless :attr:`reuses_evaluations` is ``False``.
        """
        if not self.reuses_evaluations:
            return evaluate(self._evaluate, X)
        return cached_evaluation(self, self._evaluate, X)

    def _evaluate(self, *X: Tensor) -> Tensor:
        """The map itself, without reuse: what :class:`Product` composes."""
        raise NotImplementedError(f"{self.label}: {type(self).__name__} defines no map.")

    def right_inverse(self, value: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Check ``value`` (a finite tensor of this shape, on the set), then return its pre-image.

        Inside :meth:`projecting`, a value off the set is projected onto it first.

        Raises:
            geoparam.errors.NotATensorError: ``value`` is not a tensor.
            ValueError: ``value`` has the wrong shape or non-finite entries, or (outside
                :meth:`projecting`) does not satisfy the constraint; the message says which
                property fails and by how much.
        """
        self._check_assignment(value)
        # An empty tensor (a batch of no matrices) satisfies every constraint vacuously.
        checkable = value.device.type != "meta" and value.numel() > 0
        if not self.projects_assignments and checkable:
            problem = self._violation(value, None)
            if problem is not None:
                if not self._projecting:
                    raise ValueError(
                        f"{self.label}: cannot assign a value off the constraint: {problem}."
                    )
                value = self._project(value)
        return self._right_inverse(value)

    @contextlib.contextmanager
    def projecting(self) -> Iterator[None]:
        """Inside the block, :meth:`right_inverse` projects values off the set instead of refusing.

        Registration uses it (the weight a module was built with is kept when it satisfies the
        constraint and projected otherwise, never resampled), and so does re-initialisation.
        """
        previous, self._projecting = self._projecting, True
        try:
            yield
        finally:
            self._projecting = previous

    def project(self, value: Tensor) -> Tensor:
        """A point of the set close to ``value`` (``value`` itself when it is on the set).

        Raises:
            ValueError: ``value`` has the wrong shape or non-finite entries.
            NotImplementedError: the parametrization has no projection.
        """
        self._check_assignment(value)
        if value.numel() == 0 or self._violation(value, None) is None:
            return value
        return self._project(value)

    def _project(self, value: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{self.label}: {type(self).__name__} cannot project a value onto its set; assign a "
            "value that satisfies the constraint."
        )

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
        """Whether ``value`` has this shape and satisfies the constraint (within ``atol``).

        Without ``atol``, each constraint's own tolerance for values of ``value``'s dtype (the one
        that decides whether a weight is kept at registration). A value with NaN or infinite
        entries is never on the set.
        """
        if self.shape is not None and value.shape != self.shape:
            return False
        if value.device.type != "meta" and not bool(torch.isfinite(value).all()):
            return False  # NaN passes many comparisons (NaN < 0 is False): refuse it first
        if value.numel() == 0:
            return True  # no matrix, nothing to violate
        return self._in_manifold(value, atol)

    def _in_manifold(self, value: Tensor, atol: float | None) -> bool:
        return self._violation(value, atol) is None

    def _violation(self, value: Tensor, atol: float | None) -> str | None:
        """What keeps ``value`` (of the right shape) off the set, and by how much, or ``None``.

        E.g. ``"its smallest singular value is 0.62, below 1 - lam = 0.9"``. ``atol=None`` means
        the constraint's default tolerance for ``value``'s dtype.
        """
        raise NotImplementedError(f"{self.label}: {type(self).__name__} has no in_manifold().")

    def legacy_state_keys(self) -> dict[str, str | None]:
        """Keys of an older torch layout that this parametrization reads from a checkpoint.

        Maps a suffix of the constrained tensor's old key (``"_g"`` for ``weight_g``) to the key
        it becomes under ``parametrizations.<name>.`` (``None``: the entry is dropped). Only a
        first parametrization is asked, since the old layouts owned the raw tensor. Default:
        none.
        """
        return {}

    def adapt_checkpoint_(self, state_dict: dict, prefix: str, inputs: Sequence[str]) -> None:
        """Rewrite, in place, its entries of a checkpoint saved in another layout.

        Called before a module's ``load_state_dict`` copies anything. ``prefix`` starts the keys
        of this parametrization's own buffers (``"parametrizations.weight.0."``), ``inputs`` are
        the keys of the stored tensors it maps (``"parametrizations.weight.original"``; empty
        when it maps the output of another parametrization, which no checkpoint holds). Default:
        nothing to convert.
        """

    @property
    def can_rebase(self) -> bool:
        """Whether :meth:`rebase_` can fold the current value into a base (``update_base``)."""
        return False

    def rebase_(self, *X: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Fold the map's current value at ``X`` into a base; return the new unconstrained value.

        For a parametrization of several tensors (a :class:`Product`), ``X`` holds all of them and
        the result is a tuple, one new value for each.

        Raises:
            RuntimeError: the parametrization has no base (see :attr:`can_rebase`).
        """
        raise RuntimeError(f"{self.label}: {type(self).__name__} has no base to re-base.")

    def stack_after_(self, value: Tensor) -> None:
        """Prepare to map the output of another parametrization, ``value``, registered before.

        torch calls :meth:`right_inverse` of a tensor's first parametrization only; a later one
        starts from its identity (an orthogonal map's base becomes ``I``). Default: nothing to
        prepare.
        """

    def reinitialize_(self, value: Tensor) -> None:
        """Refresh state that depends on the value (e.g. singular vectors) after it was drawn anew.

        Called after ``value`` was assigned by ``reset_parameters()`` or
        ``geoparam.reset_parametrizations``. Default: nothing to refresh.
        """
