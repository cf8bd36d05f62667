"""Front doors of the spheres family (being written)."""

__all__: list[str] = []
