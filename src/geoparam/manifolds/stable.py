"""Parametrizations of the stable family (being written)."""

__all__: list[str] = []
