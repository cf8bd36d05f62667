"""Front doors: validate the arguments, build a parametrization, register it.

One module per family; each front door is a typed signature, a docstring and one call of
:func:`~geoparam.constraints._front.constrain`. This package re-exports every family's names.
"""

from . import custom, elementwise, linear, norms, psd, spheres, stable, stiefel, svd
from .custom import *  # noqa: F403
from .elementwise import *  # noqa: F403
from .linear import *  # noqa: F403
from .norms import *  # noqa: F403
from .psd import *  # noqa: F403
from .spheres import *  # noqa: F403
from .stable import *  # noqa: F403
from .stiefel import *  # noqa: F403
from .svd import *  # noqa: F403

__all__: list[str] = []
__all__ += custom.__all__
__all__ += elementwise.__all__
__all__ += linear.__all__
__all__ += norms.__all__
__all__ += psd.__all__
__all__ += spheres.__all__
__all__ += stable.__all__
__all__ += stiefel.__all__
__all__ += svd.__all__
