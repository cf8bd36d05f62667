"""Checks shared by the parametrizations' ``right_inverse``."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from ..errors import NotATensorError


def check_is_tensor(value: object, label: str) -> None:
    """Raise :class:`~geoparam.errors.NotATensorError` unless ``value`` is a tensor.

    The message carries torch's wording for the same mistake on a parametrized tensor.
    """
    if not isinstance(value, Tensor):
        kind = type(value).__name__
        raise NotATensorError(
            f"{label}: `right_inverse` should return a tensor. Got {kind} (only a tensor can be "
            "assigned to a constrained weight)."
        )


def check_assignment(value: object, shape: torch.Size | None, label: str) -> None:
    """Raise if ``value`` cannot be assigned to a tensor of ``shape`` named ``label``.

    torch's parametrize machinery checks shapes only after ``right_inverse`` has run (and not at
    all for parametrizations registered with ``unsafe=True``), so a wrong assignment would
    otherwise resize the stored tensors and fail much later, far from its cause.
    """
    check_is_tensor(value, label)
    if shape is not None and value.shape != shape:
        raise ValueError(
            f"{label}: cannot assign a tensor of shape {tuple(value.shape)}; expected shape "
            f"{tuple(shape)}."
        )
    check_finite(value, f"{label}:")


def check_finite(
    value: Tensor, label: str, verb: str = "cannot assign a tensor that holds"
) -> None:
    """Raise ``ValueError`` if ``value`` has NaN or infinite entries, saying how many.

    A constraint evaluated on them is NaN everywhere (an orthogonalisation mixes every entry),
    which would surface far from its cause, as a NaN loss. (This reads the data: it is for
    registration and assignment, not for the forward pass.)
    """
    if value.device.type == "meta" or value.numel() == 0:
        return
    count = int((~torch.isfinite(value)).sum())
    if count:
        raise ValueError(
            f"{label} {verb} {count} non-finite entries (NaN or Inf) out of {value.numel()}."
        )


def check_rank(rank: object, limit: int, where: str) -> int:
    """``rank`` as an ``int`` with ``1 <= rank <= limit``, or an error naming ``where``.

    Raises:
        TypeError: ``rank`` is not an integer (a ``bool`` is not one).
        ValueError: ``rank`` is out of range.
    """
    message = f"{where}: rank must be an int with 1 <= rank <= {limit}, got {rank!r}."
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
        raise TypeError(message)
    if not 1 <= rank <= limit:
        raise ValueError(message)
    return int(rank)


def check_power_iterations(n_power_iterations: int, label: str) -> None:
    """Raise ``ValueError`` (torch's wording) unless ``n_power_iterations`` is positive."""
    if n_power_iterations <= 0:
        raise ValueError(
            f"spectral_norm: {label}: Expected n_power_iterations to be positive, but "
            f"got n_power_iterations={n_power_iterations}"
        )
