"""Percentiles and the summary of repeated measurements (median and range)."""

import math
import statistics
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0 to 100) by linear interpolation between closest ranks;
    NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Repeated:
    """One figure measured several times: its median and its range."""

    def __init__(self, values: Iterable[float] = ()):
        self.values = [v for v in values if not math.isnan(v)]

    def add(self, value: float) -> None:
        if not math.isnan(value):
            self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan

    def format(self, digits: int = 1, unit: str = "") -> str:
        if not self.values:
            return "n/a"
        fmt = f"{{:.{digits}f}}"
        text = fmt.format(self.median) + unit
        if len(self.values) > 1:
            low, high = min(self.values), max(self.values)
            text += f" ({fmt.format(low)}-{fmt.format(high)})"
        return text
