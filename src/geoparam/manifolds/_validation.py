"""Checks shared by the parametrizations' ``right_inverse``."""

from __future__ import annotations

import torch
from torch import Tensor


def check_assignment(value: object, shape: torch.Size | None, label: str) -> None:
    """Raise if ``value`` cannot be assigned to a tensor of ``shape`` named ``label``.

    torch's parametrize machinery checks shapes only after ``right_inverse`` has run (and not at
    all for parametrizations registered with ``unsafe=True``), so a wrong assignment would
    otherwise resize the stored tensors and fail much later, far from its cause.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{label}: cannot assign a {type(value).__name__}; expected a tensor.")
    if shape is not None and value.shape != shape:
        raise ValueError(
            f"{label}: cannot assign a tensor of shape {tuple(value.shape)}; expected shape "
            f"{tuple(shape)}."
        )
