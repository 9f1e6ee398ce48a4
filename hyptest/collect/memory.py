"""A fixed memory budget for what the collectors hold to go faster.

The budget covers everything a run holds beyond the model's own weights:

* while a GD-style method trains, its optimizer state and one step's
  transients (each parameter steps inside the backward pass and drops its
  gradient at once, so never a full set of gradients; which it cannot do
  without: they are reserved first);
* the copy of the entry weights that every training walk starts from (held in
  memory if it fits next to the training state, else written once to a
  temporary file and read back from there);
* snapshots of the training state where the step tree branches (else the walk
  replays the steps from the nearest held state);
* copies of the ICL prefix caches where the token trie branches (else the
  prefix is recomputed stretch by stretch);
* the rows packed into one scoring forward pass (fewer rows per pass).

Every fallback gives the same bits. The peak resident memory of a run is then
about the process's base (Python, torch: ~0.4 GB), plus the model's weights,
plus at most the budget, plus the freed memory the allocator keeps for the next
training step; :func:`peak_resident_bytes` records it for the run's
provenance. If a method's training state alone exceeds the budget, it is held
anyway (there is no slower way to train) and the run's provenance says so.

The budget is a fixed number of bytes (default :data:`DEFAULT_BUDGET`), never
a share of the memory that happens to be free: what a run holds, and how fast
it goes, then does not depend on what else the machine is doing.

Snapshots and prefix caches give the same bits whether they are held or
recomputed. The batch size is the one choice that can move a number: where the
budget (rather than the token budget, :data:`~hyptest.collect.scoring.TOKEN_BUDGET`)
limits the rows per forward pass, another budget packs other batches, and a
probability can differ in the last float32 bits (about 1e-8 on the tiny test
model). The same budget always gives the same bits, resumed or not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_BUDGET", "MemoryBudget", "largest_tensor_bytes", "parse_bytes", "peak_resident_bytes",
           "tensor_bytes"]

#: Default budget by device type: 1.5 GiB on CPU, 8 GiB on a GPU. On CPU this keeps the default study under
#: 3 GB resident (Python and torch ~0.4 GB, SmolLM2's weights 0.54 GB, the budget, the allocator's slack).
DEFAULT_BUDGET = {"cpu": 3 << 29, "cuda": 8 << 30}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_bytes(value: Any, *, what: str = "`memory_budget`") -> int:
    """A byte count from an int or a string such as ``"2GB"``, ``"1.5 GiB"`` or ``"512MiB"``.

    Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB,
    GiB, TiB) powers of 1024; case does not matter.

    Raises
    ------
    ValueError
        For anything that is not a positive size.

    Examples
    --------
    >>> parse_bytes("2GB"), parse_bytes("1 GiB"), parse_bytes(4096)
    (2000000000, 1073741824, 4096)
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of bytes or a size such as '2GB', got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and math.isfinite(value):
        number = int(value)
    elif isinstance(value, str) and (match := _SIZE.match(value)) and match.group(2).lower() in _UNITS:
        number = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    else:
        raise ValueError(
            f"{what} must be a number of bytes or a size such as '2GB', '1.5GiB' or '512MiB', got {value!r}"
        )
    if number < 1:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return number


def tensor_bytes(tensors: Any) -> int:
    """Bytes held by an iterable of tensors (each counted once, by identity)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def largest_tensor_bytes(tensors: Any) -> int:
    """Bytes of the largest tensor of an iterable (0 when it is empty)."""
    return max((t.numel() * t.element_size() for t in tensors), default=0)


def peak_resident_bytes() -> int:
    """This process's peak resident set size so far, in bytes (0 where the OS does not say)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return 0


@dataclass
class MemoryBudget:
    """Bytes the collectors may hold to save time; a ledger, not a measurement.

    Holders :meth:`reserve` before they keep something and :meth:`release` when
    they drop it; a batch asks :meth:`room` how large it may be and reports
    what it planned with :meth:`note_transient`. The ledger counts what
    hyptest chose to hold, so the decisions (and hence the speed) are the same
    on a busy machine and on an idle one.

    Parameters
    ----------
    limit : int
        The budget in bytes.

    Attributes
    ----------
    held : int
        Bytes reserved now.
    peak : int
        Most bytes reserved at once, transient batches included.
    declined : int
        How many reservations did not fit (and were recomputed instead).
    """

    limit: int
    held: int = 0
    peak: int = 0
    declined: int = 0
    notes: list[str] = field(default_factory=list)
    _by_kind: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.limit = parse_bytes(self.limit)

    @classmethod
    def for_device(cls, device: Any, limit: Any = None) -> "MemoryBudget":
        """``limit`` itself if it is a budget already (shared with its caller), a budget of ``limit``
        (bytes or a size string), else the default for ``device``'s type."""
        if isinstance(limit, MemoryBudget):
            return limit
        if limit is not None:
            return cls(parse_bytes(limit))
        kind = getattr(device, "type", str(device).split(":")[0])
        return cls(DEFAULT_BUDGET.get(kind, DEFAULT_BUDGET["cpu"]))

    def room(self) -> int:
        """Bytes still free in the budget."""
        return max(0, self.limit - self.held)

    def reserve(self, nbytes: int, kind: str = "other") -> bool:
        """Hold ``nbytes`` if they fit; False (and nothing held) if they do not."""
        nbytes = max(0, int(nbytes))
        if self.held + nbytes > self.limit:
            self.declined += 1
            return False
        self.held += nbytes
        self._by_kind[kind] = self._by_kind.get(kind, 0) + nbytes
        self.peak = max(self.peak, self.held)
        return True

    def overdraw(self, nbytes: int, kind: str, note: str) -> None:
        """Hold ``nbytes`` that must be held even beyond the limit, and say why in :attr:`notes`."""
        self.held += max(0, int(nbytes))
        self._by_kind[kind] = self._by_kind.get(kind, 0) + max(0, int(nbytes))
        self.peak = max(self.peak, self.held)
        if note not in self.notes:
            self.notes.append(note)

    def release(self, nbytes: int, kind: str = "other") -> None:
        """Give back ``nbytes`` reserved earlier under ``kind``."""
        nbytes = max(0, int(nbytes))
        self.held = max(0, self.held - nbytes)
        self._by_kind[kind] = max(0, self._by_kind.get(kind, 0) - nbytes)

    def note_transient(self, nbytes: int) -> None:
        """Record a batch planned to use ``nbytes`` on top of what is held (for :attr:`peak`)."""
        self.peak = max(self.peak, self.held + max(0, int(nbytes)))

    def summary(self) -> dict[str, Any]:
        """``limit``, ``peak``, ``declined`` and any notes, for the run's provenance."""
        out: dict[str, Any] = {"limit_bytes": self.limit, "peak_planned_bytes": self.peak, "declined": self.declined}
        if self.notes:
            out["notes"] = list(self.notes)
        return out
