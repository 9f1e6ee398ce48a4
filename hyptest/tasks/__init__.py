"""Tasks: built-in offline sets, public-dataset loaders and loaders for the user's own files."""

from .datasets import (
    DATASET_TASKS,
    DatasetInfo,
    dataset_task_from_spec,
    dataset_task_names,
    load_dataset_task,
)
from .task import (
    Example,
    Task,
    TaskError,
    builtin_task_names,
    load_builtin_task,
    load_task_file,
    sample_examples,
)
from .spec import task_from_spec

__all__ = [
    "DATASET_TASKS",
    "DatasetInfo",
    "Example",
    "Task",
    "TaskError",
    "builtin_task_names",
    "dataset_task_from_spec",
    "dataset_task_names",
    "load_builtin_task",
    "load_dataset_task",
    "load_task_file",
    "sample_examples",
    "task_from_spec",
]
