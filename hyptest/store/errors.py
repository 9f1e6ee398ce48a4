"""The error of the store, in a module of its own so that run_dir and lock need not import each other."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(RuntimeError):
    """A run directory that cannot be read or written."""
