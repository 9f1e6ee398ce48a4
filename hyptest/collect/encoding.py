"""Tokenisation of tasks into reusable pieces.

Every prompt is the concatenation of separately tokenised pieces::

    [BOS] [instruction] demo_1 + sep ... demo_N + sep  query_input  label_word

Tokenising pieces separately (rather than the joined string) makes a demo's
tokens independent of its position, so orders of one demo set share token
prefixes, and the naive one-prompt loop and the batched collector see exactly
the same ids. The label word is always a continuation of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..tasks import Example, Task

__all__ = ["PromptEncoder"]


@dataclass
class PromptEncoder:
    """Token ids of a task's pieces for one tokenizer, cached."""

    tokenizer: Any
    task: Task
    _cache: dict[tuple[str, str], list[int]] = field(default_factory=dict, repr=False)

    def _ids(self, kind: str, text: str) -> list[int]:
        key = (kind, text)
        if key not in self._cache:
            self._cache[key] = list(self.tokenizer(text, add_special_tokens=False).input_ids)
        return self._cache[key]

    @property
    def bos(self) -> list[int]:
        """``[bos_token_id]`` if the tokenizer prepends one by default, else ``[]``."""
        with_special = self.tokenizer("x", add_special_tokens=True).input_ids
        bos = self.tokenizer.bos_token_id
        return [bos] if bos is not None and with_special and with_special[0] == bos else []

    def head_ids(self) -> list[int]:
        """Ids shared by every prompt of the task: BOS and the instruction with its separator."""
        ids = list(self.bos)
        if self.task.instruction:
            ids += self._ids("instruction", self.task.instruction + self.task.demo_separator)
        return ids

    def demo_ids(self, demo: Example) -> list[int]:
        """Ids of one demo with its separator: the piece a prompt appends for it."""
        return list(self._ids("demo", self.task.format_demo(demo) + self.task.demo_separator))

    def prefix_ids(self, demos: Sequence[Example]) -> list[int]:
        """Ids of everything before the query: BOS, instruction, demos with separators.

        Always ``head_ids() + demo_ids(demos[0]) + ... + demo_ids(demos[-1])``.
        """
        ids = self.head_ids()
        for demo in demos:
            ids += self.demo_ids(demo)
        return ids

    def query_ids(self, query: Example) -> list[int]:
        """Ids of the query's input (no label)."""
        return self._ids("query", self.task.format_input(query.text))

    def label_ids(self) -> list[list[int]]:
        """Ids of each label word, in the order of ``task.labels``."""
        out = [self._ids("label", self.task.label_words[lab]) for lab in self.task.labels]
        for lab, ids in zip(self.task.labels, out):
            if not ids:
                raise ValueError(f"label word for {lab!r} tokenises to nothing")
        return out

    def training_example(self, demo: Example, loss: str = "label") -> tuple[list[int], list[int]]:
        """Ids of one demo as a zero-shot training sequence, and its loss positions.

        Parameters
        ----------
        demo : Example
            The demonstration.
        loss : {"label", "all_tokens"}
            ``label``: the targets are the label word's tokens. ``all_tokens``
            (Dai et al.): every token of the formatted demo (``input +
            label_word``) after its first one; the head (BOS, instruction) is
            context only.

        Returns
        -------
        ids : list of int
            ``[BOS] [instruction] input label_word`` (the same for both losses).
        targets : list of int
            Positions ``t`` whose token is predicted from position ``t - 1``.

        Raises
        ------
        ValueError
            If ``loss`` is unknown, or the formatted demo is a single token
            (nothing to predict under ``all_tokens``).
        """
        if loss not in ("label", "all_tokens"):
            raise ValueError(f"`loss` must be 'label' or 'all_tokens', got {loss!r}")
        head = len(self.prefix_ids([]))
        ids = self.prefix_ids([]) + self.query_ids(demo)
        start = len(ids)
        label = self.label_ids()[self.task.labels.index(demo.label)]
        ids = ids + label
        if loss == "label":
            return ids, list(range(start, start + len(label)))
        if len(ids) - head < 2:
            raise ValueError(f"demo {demo.id!r} formats to a single token; `loss: all_tokens` has nothing to predict")
        return ids, list(range(head + 1, len(ids)))
