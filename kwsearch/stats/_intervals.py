"""An accuracy and its 95% interval, and whether two accuracies differ beyond their noise.

One run's accuracy over ``n`` validation images is a binomial proportion: its interval is
Wilson's score interval (right near 0 and 1, where the normal one is not). Several runs of one
config (seeds) give a mean whose interval is Student's t over the runs, never narrower than the
Wilson interval of all their images together (two seeds can agree by chance). A difference of two
accuracies gets its interval from theirs by MOVER (Newcombe's method for two proportions; Zou and
Donner's for any two estimates), so the two readings never disagree.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """An accuracy, its 95% interval (None where the number of images is unknown), and what it
    rests on: how many runs (seeds) and how many validation images per run."""

    value: float
    low: float | None
    high: float | None
    runs: int = 1
    images: int | None = None

    @property
    def known(self) -> bool:
        return self.low is not None

    def describe(self) -> str:
        """``0.7310 (95% CI 0.7030 to 0.7570)``, with the seeds when there are several."""
        if not self.known:
            return f"{self.value:.4f} (no interval: number of validation images unknown)"
        seeds = f", {self.runs} seeds" if self.runs > 1 else ""
        return f"{self.value:.4f} (95% CI {self.low:.4f} to {self.high:.4f}{seeds})"


def wilson_interval(accuracy: float, images: int) -> tuple[float, float]:
    """Wilson's 95% score interval of a proportion ``accuracy`` of ``images`` trials."""
    n, z2 = images, Z95 * Z95
    centre = (accuracy + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_estimate(accuracies: list[float], images: int | None) -> Estimate:
    """The accuracy of one config from its runs' ``accuracies`` (one per seed), each over
    ``images`` validation images (None: unknown, then one run has no interval)."""
    mean = statistics.fmean(accuracies)
    runs = len(accuracies)
    pooled = wilson_interval(mean, images * runs) if images else None
    if runs == 1:
        return Estimate(mean, *(pooled or (None, None)), runs, images)
    half = stats.t.ppf(0.975, runs - 1) * statistics.stdev(accuracies) / math.sqrt(runs)
    low, high = max(0.0, mean - half), min(1.0, mean + half)
    if pooled is not None:
        low, high = min(low, pooled[0]), max(high, pooled[1])
    return Estimate(mean, low, high, runs, images)


def difference(a: Estimate, b: Estimate) -> tuple[float, float, float] | None:
    """``a - b`` with its 95% interval (MOVER); None when either interval is unknown."""
    if not (a.known and b.known):
        return None
    d = a.value - b.value
    low = d - math.sqrt((a.value - a.low) ** 2 + (b.high - b.value) ** 2)
    high = d + math.sqrt((a.high - a.value) ** 2 + (b.value - b.low) ** 2)
    return d, low, high


def significantly_better(a: Estimate, b: Estimate) -> bool:
    """Whether ``a`` is more accurate than ``b`` beyond noise (the difference's interval lies
    above 0). Unknown intervals are never significant."""
    found = difference(a, b)
    return found is not None and found[1] > 0
