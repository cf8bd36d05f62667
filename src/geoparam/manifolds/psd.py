"""Parametrizations of the psd family (being written)."""

__all__: list[str] = []
