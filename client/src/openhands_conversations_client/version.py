"""The package's version (kept in step with client/pyproject.toml by a test)."""

__version__ = "0.1.0"
