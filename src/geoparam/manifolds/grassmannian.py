"""Parametrizations of the grassmannian family (being written)."""

__all__: list[str] = []
