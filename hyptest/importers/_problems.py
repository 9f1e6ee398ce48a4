"""Problems found while importing, and the error that carries them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ImportProblems", "Problem", "ProblemLog"]

#: Problems quoted in full in an :class:`ImportProblems` message.
_QUOTED: int = 20


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one place of an input file.

    Attributes
    ----------
    file : str
        The file (or directory) the problem is in.
    line : int or None
        1-based line number (CSV, TSV, JSONL: the physical line, the CSV
        header being line 1; Parquet: the 1-based row number), or None for a
        problem of the whole file (a missing column, unequal line counts).
    message : str
        What is wrong and, where possible, how to fix it.
    """

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class ImportProblems(ValueError):
    """Input that cannot be imported as it is (raised in strict mode).

    Attributes
    ----------
    problems : list of Problem
        Every problem of the batch that stopped the import.
    """

    def __init__(self, problems: list[Problem], *, hint: str = "") -> None:
        self.problems = list(problems)
        lines = [f"{len(self.problems)} problem(s) in the input:"]
        lines += [f"  {p}" for p in self.problems[:_QUOTED]]
        if len(self.problems) > _QUOTED:
            lines.append(f"  ... and {len(self.problems) - _QUOTED} more")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


class ProblemLog:
    """Collects problems, keeping at most ``limit`` of them but counting all."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.kept: list[Problem] = []
        self.count = 0
        self._batch_start = 0

    def add(self, file: str, line: int | None, message: str) -> None:
        """Record one problem."""
        self.count += 1
        if len(self.kept) < self.limit:
            self.kept.append(Problem(str(file), line, message))

    def batch(self) -> list[Problem]:
        """Problems added since the last call (for strict mode)."""
        out = self.kept[self._batch_start:]
        self._batch_start = len(self.kept)
        return out

    def problems(self) -> list[Problem]:
        """The kept problems, plus one line saying how many were not kept."""
        if self.count > len(self.kept):
            return [*self.kept, Problem("(all files)", None,
                                        f"{self.count - len(self.kept)} further problem(s) not listed")]
        return list(self.kept)
