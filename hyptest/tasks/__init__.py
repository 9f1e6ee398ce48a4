"""Tasks: built-in offline sets and loaders for the user's own files."""

from .task import (
    Example,
    Task,
    TaskError,
    builtin_task_names,
    load_builtin_task,
    load_task_file,
    sample_examples,
    task_from_spec,
)

__all__ = [
    "Example",
    "Task",
    "TaskError",
    "builtin_task_names",
    "load_builtin_task",
    "load_task_file",
    "sample_examples",
    "task_from_spec",
]
