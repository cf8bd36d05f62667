"""Parametrizations of the svd family (being written)."""

__all__: list[str] = []
