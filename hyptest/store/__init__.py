"""The run directory: one atomic Parquet file per finished unit, and a manifest."""

from .run_dir import RECORD_COLUMNS, RunDir, StoreError

__all__ = ["RECORD_COLUMNS", "RunDir", "StoreError"]
