"""Parametrizations of the sphere family (being written)."""

__all__: list[str] = []
