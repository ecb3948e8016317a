"""The version of torpor (one place; pyproject.toml reads it)."""

__version__ = "0.3.0.dev0"
