"""What the manifest of a `.jsonl` dataset needs of a split's labels, kept row by row instead of the labels
themselves when they are only checked (the API's upload check): a file of millions of word-tag or label lists
would otherwise be held whole in the API's memory. The worker, which makes arrays of them, keeps the labels."""

from __future__ import annotations

from dataclasses import dataclass, field

from compression.archive.npz import IGNORED_LABEL


@dataclass
class LabelSummary:
    """Counts and ranges of the labels seen: class indices (single labels, list entries, word tags but -100), the
    positions of the ones of each list (their indices were the lists 0/1 flag vectors), the lists' lengths and
    whether they hold only 0 and 1, and the range of every number, in lists too (their values, were the labels
    values)."""

    count: int = 0
    indices: list[int] = field(default_factory=list)  # [low, high]
    flag_positions: list[int] = field(default_factory=list)  # [low, high]
    lengths: set[int] = field(default_factory=set)
    binary_lists: bool = True
    numbers: list[float] = field(default_factory=list)  # [low, high]

    def add(self, label) -> None:
        self.count += 1
        if isinstance(label, list):
            self.lengths.add(len(label))
            self.binary_lists = self.binary_lists and set(label) <= {0, 1}
            ones = [position for position, entry in enumerate(label) if entry == 1 and not isinstance(entry, str)]
            _widen(self.flag_positions, ones)
            _widen(self.indices, [e for e in label if isinstance(e, int) and e != IGNORED_LABEL])
            _widen(self.numbers, [float(e) for e in label if isinstance(e, (int, float))])
            return
        if isinstance(label, (int, float)):
            _widen(self.numbers, [float(label)])
            if isinstance(label, int):
                _widen(self.indices, [label])

    def index_range(self, flags: bool) -> list[int] | None:
        """[min, max] of the class indices the labels give (of the positions of ones, for flag vectors)."""
        found = self.flag_positions if flags else self.indices
        return list(found) if found else None

    def value_range(self) -> list[float] | None:
        return list(self.numbers) if self.numbers else None


def _widen(extremes: list, values: list) -> None:
    """Extend [low, high] (empty until a value is seen) to cover `values`."""
    if not values:
        return
    low, high = min(values), max(values)
    extremes[:] = [low, high] if not extremes else [min(extremes[0], low), max(extremes[1], high)]
