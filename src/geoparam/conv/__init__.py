"""Operator-level constraints for convolutions: true operator norms and orthogonal convolutions,
with the 1-Lipschitz activations that certified networks are built from."""

from __future__ import annotations

from . import lipschitz, operator_norm, orthogonal
from .lipschitz import *  # noqa: F403
from .operator_norm import *  # noqa: F403
from .orthogonal import *  # noqa: F403

__all__: list[str] = []
__all__ += lipschitz.__all__
__all__ += operator_norm.__all__
__all__ += orthogonal.__all__
