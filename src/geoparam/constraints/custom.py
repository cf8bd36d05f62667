"""Front doors of the custom family (being written)."""

__all__: list[str] = []
