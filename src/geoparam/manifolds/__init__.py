"""Parametrizations: ``nn.Module`` maps from unconstrained tensors onto constraint sets.

One module per family, all derived from :class:`Parametrization`; this package re-exports every
family's names.
"""

from . import (
    custom,
    elementwise,
    grassmannian,
    linear,
    norms,
    orthogonal,
    product,
    psd,
    spectrum,
    sphere,
    stable,
    svd,
)
from ._base import Parametrization
from .custom import *  # noqa: F403
from .elementwise import *  # noqa: F403
from .grassmannian import *  # noqa: F403
from .linear import *  # noqa: F403
from .norms import *  # noqa: F403
from .orthogonal import *  # noqa: F403
from .product import *  # noqa: F403
from .psd import *  # noqa: F403
from .spectrum import *  # noqa: F403
from .sphere import *  # noqa: F403
from .stable import *  # noqa: F403
from .svd import *  # noqa: F403

__all__ = ["Parametrization"]
__all__ += custom.__all__
__all__ += elementwise.__all__
__all__ += grassmannian.__all__
__all__ += linear.__all__
__all__ += norms.__all__
__all__ += orthogonal.__all__
__all__ += product.__all__
__all__ += psd.__all__
__all__ += spectrum.__all__
__all__ += sphere.__all__
__all__ += stable.__all__
__all__ += svd.__all__
