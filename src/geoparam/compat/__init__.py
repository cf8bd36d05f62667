"""Drop-in front doors for code written against other libraries.

``from geoparam.compat import geotorch`` in place of ``import geotorch`` runs a geotorch 0.4
script on geoparam's constraints: see :mod:`geoparam.compat.geotorch`.
"""

from . import geotorch

__all__ = ["geotorch"]
