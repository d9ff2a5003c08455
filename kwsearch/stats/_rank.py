"""How far two rankings of the same configurations agree: Spearman's rho, Kendall's tau-b and the
overlap of their top k, each with a p-value and 95% intervals.

Two intervals: ``ci95`` is Fisher's z interval for rho and tau (Fieller, Hartley and Pearson's
variances; None for too few pairs) and the bootstrap interval for the top-k overlap, which has no
closed form; ``bootstrap_ci95`` is a percentile bootstrap over configurations for all three
(resamples drawn from a fixed seed, so a figure does not change between runs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

# Fieller, Hartley and Pearson (1957): the variance of Fisher's z of Spearman's rho is about
# 1.06/(n-3), that of Kendall's tau about 0.437/(n-4).
_Z_VARIANCE = {"spearman": (1.06, 3), "kendall": (0.437, 4)}
_Z95 = 1.959963984540054
RESAMPLES = 2000
MIN_PAIRS = 3  # fewer pairs rank nothing
MIN_BOOTSTRAP_PAIRS = 4  # below this nearly every resample is degenerate


@dataclass(frozen=True)
class Statistic:
    """One agreement figure over ``n`` pairs."""

    value: float
    p_value: float | None
    ci95: list[float] | None
    bootstrap_ci95: list[float] | None
    n: int

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, label: str) -> str:
        """One line a person reads, e.g. ``Spearman rho 0.786 (95% CI 0.156 to 0.961, p 0.021)``."""
        interval = self.ci95 or self.bootstrap_ci95
        parts = [f"95% CI {interval[0]:.3f} to {interval[1]:.3f}" if interval else "no 95% CI: too few pairs"]
        if self.p_value is not None:
            parts.append(f"p {self.p_value:.3g}")
        return f"{label} {self.value:.3f} ({', '.join(parts)})"


LABELS = {"spearman": "Spearman rho", "kendall": "Kendall tau", "top_k": "top-k overlap"}


def default_top_k(n: int) -> int:
    """The top third of the configurations (at least one)."""
    return max(1, math.ceil(n / 3))


def rank_agreement(
    proxy: Sequence[float], full: Sequence[float], *, top_k: int | None = None, seed: int = 0
) -> dict[str, Statistic | None]:
    """``spearman``, ``kendall`` and ``top_k`` (the share of the ``top_k`` configurations by
    ``proxy`` that are also in the top ``top_k`` by ``full``; default :func:`default_top_k`)
    for the paired values. A figure is None for fewer than 3 pairs or when either list is
    constant. Higher values rank higher."""
    x, y = np.asarray(proxy, dtype=float), np.asarray(full, dtype=float)
    n = len(x)
    found: dict[str, Statistic | None] = {"spearman": None, "kendall": None, "top_k": None}
    if n < MIN_PAIRS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return found
    k = top_k or default_top_k(n)
    resampled = _resample_indices(n, seed) if n >= MIN_BOOTSTRAP_PAIRS else None
    for name, test in (("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        result = test(x, y)
        value = float(result.statistic)
        found[name] = Statistic(
            value=value,
            p_value=float(result.pvalue),
            ci95=_fisher_z_interval(name, value, n),
            bootstrap_ci95=None
            if resampled is None
            else _percentile(_STATISTICS[name](x[resampled], y[resampled])),
            n=n,
        )
    overlap = float(_top_k_overlap(x[None], y[None], k)[0])
    interval = None if resampled is None else _percentile(_top_k_overlap(x[resampled], y[resampled], k))
    found["top_k"] = Statistic(
        value=overlap,
        # chance of at least this overlap when the full ranking is unrelated to the proxy's
        p_value=float(stats.hypergeom.sf(round(overlap * k) - 1, n, k, k)),
        ci95=interval,
        bootstrap_ci95=interval,
        n=n,
    )
    return found


def _fisher_z_interval(name: str, value: float, n: int) -> list[float] | None:
    variance, lost = _Z_VARIANCE[name]
    if n <= lost:
        return None
    z = math.atanh(max(-1 + 1e-12, min(1 - 1e-12, value)))
    half = _Z95 * math.sqrt(variance / (n - lost))
    return [math.tanh(z - half), math.tanh(z + half)]


def _resample_indices(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(RESAMPLES, n))


def _percentile(values: np.ndarray) -> list[float] | None:
    """The 2.5 and 97.5 percentiles of the resampled figures that are defined (a resample that
    repeats one configuration has no ranking); None when fewer than half are."""
    defined = values[~np.isnan(values)]
    if len(defined) < len(values) / 2:
        return None
    return [float(np.percentile(defined, 2.5)), float(np.percentile(defined, 97.5))]


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair (average ranks for ties, as scipy); NaN for constant rows."""
    return _pearson(stats.rankdata(x, axis=1), stats.rankdata(y, axis=1))


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(axis=1) / denominator, np.nan)


def _kendall(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair: sum of sign products over pairs, over the root of the
    products of the untied pair counts; NaN for constant rows."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    denominator = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (sx * sy).sum(axis=(1, 2)) / denominator, np.nan)


def _top_k_overlap(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """The share of each row's top ``k`` positions by ``x`` that are among its top ``k`` by ``y``
    (ties broken by position, the same way for both); NaN for rows where either is constant."""
    top_x = np.argsort(-x, axis=1, kind="stable")[:, :k]
    top_y = np.argsort(-y, axis=1, kind="stable")[:, :k]
    shared = (top_x[:, :, None] == top_y[:, None, :]).any(axis=2).sum(axis=1) / k
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    return np.where(constant, np.nan, shared)


_STATISTICS = {"spearman": _spearman, "kendall": _kendall}
