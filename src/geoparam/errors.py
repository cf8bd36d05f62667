"""Exceptions geoparam raises where torch fails by accident rather than by design.

For every input that :mod:`torch.nn.utils.parametrizations` rejects on purpose, geoparam raises
the same built-in exception type with torch's own wording in the message (plus the module and
tensor it concerns). Some inputs torch rejects only by accident, deep inside a kernel, with a type
that depends on the function: an integer weight gives ``TypeError`` in ``orthogonal``,
``RuntimeError`` in ``weight_norm`` and ``NotImplementedError`` in ``spectral_norm``. geoparam
rejects those inputs at once with a message that says what is wrong, and raises a class that
derives from every type torch raises there, so that code written against torch, which catches
torch's type, still catches geoparam's.

Example:
    >>> import geoparam
    >>> layer = nn.Module()
    >>> layer.register_buffer("weight", torch.ones(3, 3, dtype=torch.int64))
    >>> try:
    ...     geoparam.weight_norm(layer)
    ... except RuntimeError as error:  # what torch raises for this input
    ...     print(type(error).__name__)
    UnsupportedDtypeError
"""

from __future__ import annotations

__all__ = ["InvalidNameError", "NotAModuleError", "NotATensorError", "UnsupportedDtypeError"]


class NotAModuleError(TypeError, ValueError, AttributeError):
    """A front door was given something other than an ``nn.Module``.

    torch raises ``ValueError`` (``orthogonal``, ``spectral_norm``: "Module ... has no parameter
    or buffer with name ...") or ``AttributeError`` (``weight_norm``).
    """


class InvalidNameError(TypeError, ValueError):
    """The name of the tensor to constrain is not a string.

    torch raises ``TypeError`` (``orthogonal``, ``spectral_norm``) or ``ValueError``
    (``weight_norm``).
    """


class UnsupportedDtypeError(TypeError, ValueError, NotImplementedError):
    """The tensor to constrain has a dtype the constraint cannot take (an integer type).

    torch raises ``TypeError`` (``orthogonal``), ``RuntimeError`` (``weight_norm``) or
    ``NotImplementedError`` (``spectral_norm``); geoparam 0.1 raised ``ValueError``.
    """


class NotATensorError(TypeError, ValueError, AttributeError):
    """Something other than a tensor was assigned to a constrained weight.

    torch raises ``AttributeError`` (``orthogonal``), ``TypeError`` (``weight_norm``) or
    ``ValueError`` (``spectral_norm``).
    """
