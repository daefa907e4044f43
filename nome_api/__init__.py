"""NOME HTTP API (Litestar)."""

__version__ = "0.1.0"
