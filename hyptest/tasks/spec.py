"""A study's task spec to a :class:`Task`: a built-in task, a task file or a dataset.

Its own module so that ``task`` (the Task type and its files) and
``datasets`` (which builds Tasks from datasets) need not import each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .datasets import dataset_task_from_spec
from .task import Task, load_builtin_task, load_task_file

__all__ = ["task_from_spec"]


def task_from_spec(spec: Any, *, base_dir: Path | None = None) -> Task:
    """Build a :class:`Task` from a study's ``TaskSpec``."""
    if getattr(spec, "dataset", None):
        return dataset_task_from_spec(spec, base_dir=base_dir)
    if spec.path is None:
        return load_builtin_task(spec.name)
    path = Path(spec.path)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    return load_task_file(
        path,
        name=spec.name,
        input_template=spec.input_template,
        label_words=spec.label_words,
        demo_separator=spec.demo_separator,
        instruction=spec.instruction,
    )
