"""Metrics: pure functions on long-format records."""

from .order_sensitivity import accuracy_table, order_sensitivity

__all__ = ["accuracy_table", "order_sensitivity"]
