"""Token ids of a task's prompts: every prompt is tokenised as one whole string.

The prompt of an ordered demo set and a query is the string::

    [instruction + sep] demo_1 + sep ... demo_N + sep  query_input

(``demo_i`` is the formatted input followed by its label word), and the model
sees exactly ``tokenizer(prompt)``: the tokenizer's default special tokens
included (BOS where the tokenizer adds one). Nothing is tokenised piece by
piece, so BPE sees the same pre-tokens at a demo boundary as a research loop
that tokenises the whole prompt (with SmolLM2 the separator ``"\\n\\n"`` before
``"Review"`` is ``'\\n', '\\n'`` in the whole string but ``'\\n\\n'`` on its own).

Label words are scored as continuations of the prompt: the prompt string is
tokenised alone and each label word on its own (``tokenizer(" positive",
add_special_tokens=False)``), and ``P(label word | prompt)`` is the product of
its tokens' probabilities after the prompt (the first from the logits at the
prompt's last position). This is how research code reads ``P(label |
prompt)`` from one forward pass per prompt; it is not the probability of the
tokenisation of ``prompt + label word`` as one string, which can merge the
label word with the prompt's end.

Orders of one demo set share token prefixes because BPE merges are local: the
whole-string ids of two prompts agree up to (about) the first demo where they
differ. :meth:`PromptEncoder.order_prompts` returns an order's prompts (one
per query) with its *cut points*, the token positions of the demo boundaries
in the prompts' common prefix; the scorer checkpoints the shared KV cache
there (:func:`hyptest.collect.scoring.score_prompts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..tasks import Example, Task

__all__ = ["OrderPrompts", "PromptEncoder", "common_prefix_length"]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class OrderPrompts:
    """The whole-string token ids of one order's prompts, and where its shared prefix may be cut.

    Attributes
    ----------
    prompts : tuple of tuple of int
        ``tokenizer(prompt)`` of every query, in query order.
    cuts : tuple of int
        Increasing token positions of the demo boundaries (after the head,
        after each demo with its separator) within the prompts' common prefix.
        The scorer runs the shared prefix as one forward pass per stretch
        between cuts, so the cache of an order is the same bits whichever other
        orders are scored with it.
    """

    prompts: tuple[tuple[int, ...], ...]
    cuts: tuple[int, ...] = ()


@dataclass
class PromptEncoder:
    """Token ids of a task's prompts for one tokenizer (short strings cached)."""

    tokenizer: Any
    task: Task
    _cache: dict[tuple[bool, str], list[int]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ strings

    def head_text(self) -> str:
        """The text before the first demo: the instruction and separator, or ``""``."""
        task = self.task
        return task.instruction + task.demo_separator if task.instruction else ""

    def prefix_text(self, demos: Sequence[Example]) -> str:
        """The text before the query: head, then every demo followed by the separator."""
        task = self.task
        return self.head_text() + "".join(task.format_demo(d) + task.demo_separator for d in demos)

    def prompt_text(self, demos: Sequence[Example], query: Example) -> str:
        """The whole prompt string of an ordered demo set and a query (no label word)."""
        return self.prefix_text(demos) + self.task.format_input(query.text)

    # ------------------------------------------------------------------ ids

    def encode(self, text: str, *, special: bool = True, cache: bool = False) -> list[int]:
        """``tokenizer(text).input_ids``, with the default special tokens unless ``special`` is False."""
        key = (special, text)
        if cache and key in self._cache:
            return list(self._cache[key])
        ids = list(self.tokenizer(text, add_special_tokens=special).input_ids)
        if cache:
            self._cache[key] = ids
        return list(ids)

    def prompt_ids(self, demos: Sequence[Example], query: Example) -> list[int]:
        """``tokenizer(prompt_text(demos, query))``: what the model sees."""
        return self.encode(self.prompt_text(demos, query))

    def head_ids(self) -> list[int]:
        """``tokenizer(head_text())``: BOS (if the tokenizer adds one) and the instruction with its separator."""
        return self.encode(self.head_text(), cache=True)

    def order_prompts(self, demos: Sequence[Example], queries: Sequence[Example]) -> OrderPrompts:
        """The prompts of one ordered demo set for every query, with the demo cut points.

        The cut after the first ``k`` demos is the length of the common prefix
        of ``tokenizer(prefix_text(demos[:k]))`` and the prompts' common prefix:
        it depends on this order and the queries only.
        """
        prompts = tuple(tuple(self.prompt_ids(demos, q)) for q in queries)
        if not prompts:
            return OrderPrompts((), ())
        shared = min(len(p) for p in prompts) - 1
        first = prompts[0]
        for p in prompts[1:]:
            shared = min(shared, common_prefix_length(first, p))
        shared = max(shared, 0)
        cuts: list[int] = []
        for k in range(len(demos) + 1):
            cut = min(common_prefix_length(self.encode(self.prefix_text(demos[:k]), cache=True), first), shared)
            if cut > (cuts[-1] if cuts else 0):
                cuts.append(cut)
        return OrderPrompts(prompts, tuple(cuts))

    def label_ids(self) -> list[list[int]]:
        """Ids of each label word tokenised on its own (no special tokens), in the order of ``task.labels``."""
        out = [self.encode(self.task.label_words[lab], special=False, cache=True) for lab in self.task.labels]
        for lab, ids in zip(self.task.labels, out):
            if not ids:
                raise ValueError(f"label word for {lab!r} tokenises to nothing")
        return out

    def training_example(self, demo: Example, loss: str = "label") -> tuple[list[int], list[int]]:
        """Ids of one demo as a zero-shot training sequence, and its loss positions.

        The sequence is the zero-shot prompt of the demo's input, tokenised as
        one string (``tokenizer(head_text() + format_input(text))``), followed
        by its label word's ids: the same ids under which a query is scored
        zero-shot, with the label word as the continuation.

        Parameters
        ----------
        demo : Example
            The demonstration.
        loss : {"label", "all_tokens"}
            ``label``: the targets are the label word's tokens. ``all_tokens``
            (Dai et al.): every token after the head (the common prefix of the
            sequence and ``head_ids()``) and after the first token of the rest.

        Returns
        -------
        ids : list of int
            The prompt ids, then the label word's ids (the same for both losses).
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
        ids = self.prompt_ids([], demo)
        head = min(common_prefix_length(self.head_ids(), ids), len(ids) - 1)
        start = len(ids)
        label = self.label_ids()[self.task.labels.index(demo.label)]
        ids = ids + label
        if loss == "label":
            return ids, list(range(start, start + len(label)))
        if len(ids) - head < 2:
            raise ValueError(f"demo {demo.id!r} formats to a single token; `loss: all_tokens` has nothing to predict")
        return ids, list(range(head + 1, len(ids)))
