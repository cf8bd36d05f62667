"""Catalogue cases of spheres and oblique manifolds: vectors (rows, columns) of a fixed norm."""

from __future__ import annotations

import torch

import geoparam
from constraint_testing import BadCall, Case, double


def _norms_are(radius: float, dim: int):
    """The oracle: every slice along ``dim`` has norm ``radius`` (relative ``atol``)."""

    def satisfies(W: torch.Tensor, atol: float) -> str | None:
        norms = torch.linalg.vector_norm(W.to(double(W.dtype)), dim=dim)
        error = float((norms - radius).abs().max()) / radius
        return None if error <= atol else f"a norm is off the radius {radius} by {error:.3g}"

    return satisfies


def _on_set(radius: float, dim: int):
    return lambda G: radius * G / torch.linalg.vector_norm(G, dim=dim, keepdim=True)


def _sphere(shape, radius=1.0, embedded=False, dtype=torch.float32, suffix=""):
    kind = "sphere-embedded" if embedded else "sphere"
    return Case(
        id=f"{kind}-{suffix}",
        register=lambda m: geoparam.sphere(m, radius=radius, embedded=embedded),
        shape=shape,
        satisfies=_norms_are(radius, -1),
        on_set=_on_set(radius, -1),
        dtype=dtype,
    )


def _oblique(shape, radius=1.0, dtype=torch.float32, suffix=""):
    return Case(
        id=f"oblique-{suffix}",
        register=lambda m: geoparam.oblique(m, radius=radius),
        shape=shape,
        satisfies=_norms_are(radius, -2),
        on_set=_on_set(radius, -2),
        dtype=dtype,
    )


CASES = [
    _sphere((5,), suffix="vector"),
    _sphere((4, 3), radius=2.0, suffix="matrix"),
    _sphere((2, 3, 4), suffix="batched"),
    _sphere((3, 4), radius=0.5, dtype=torch.complex64, suffix="complex"),
    _sphere((6,), embedded=True, suffix="vector"),
    _sphere((3, 5), radius=0.5, embedded=True, suffix="matrix"),
    _sphere((2, 2, 3), embedded=True, dtype=torch.complex64, suffix="complex"),
    _oblique((5, 3), suffix="tall"),
    _oblique((3, 5), radius=2.0, suffix="wide"),
    _oblique((2, 4, 3), suffix="batched"),
    _oblique((4, 2), dtype=torch.complex64, suffix="complex"),
]

BAD_CALLS = [
    BadCall(
        "sphere-embedded-not-bool",
        lambda m: geoparam.sphere(m, embedded="no"),
        (3, 4),
        TypeError,
        r"sphere: embedded must be a bool, got 'no'",
    ),
    BadCall(
        "sphere-zero-radius",
        lambda m: geoparam.sphere(m, radius=0.0),
        (3, 4),
        ValueError,
        r"Holder\.weight of shape \(3, 4\): radius must be a positive number, got 0\.0",
    ),
    BadCall(
        "sphere-embedded-negative-radius",
        lambda m: geoparam.sphere(m, radius=-1, embedded=True),
        (4,),
        ValueError,
        "radius must be a positive number, got -1",
    ),
    BadCall(
        "sphere-radius-not-a-number",
        lambda m: geoparam.sphere(m, radius="1"),
        (4,),
        TypeError,
        "radius must be a real number, got '1'",
    ),
    BadCall(
        "sphere-0d",
        geoparam.sphere,
        (),
        ValueError,
        r"Holder\.weight of shape \(\): Sphere constrains the norm of its rows",
    ),
    BadCall(
        "oblique-vector",
        geoparam.oblique,
        (4,),
        ValueError,
        r"of shape \(4,\): Oblique constrains the norm of its columns .* at least 2 dimension",
    ),
    BadCall(
        "oblique-infinite-radius",
        lambda m: geoparam.oblique(m, radius=float("inf")),
        (4, 3),
        ValueError,
        "radius must be a positive number, got inf",
    ),
]
