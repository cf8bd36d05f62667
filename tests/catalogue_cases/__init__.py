"""Cases of the catalogue tests, one module per family (see ``constraint_testing.py``)."""
