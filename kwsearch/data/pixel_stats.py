"""Per-channel mean and standard deviation of uint8 images, exact, from 256-bin histograms: of a
tensor at once, or summed over the chunks of an image cache as it is prepared."""

from __future__ import annotations

import torch


def channel_histograms(images: torch.Tensor) -> torch.Tensor:
    """Return the int64 (C, 256) histogram of each channel's pixel values of uint8 ``images``
    (N, C, H, W), on their device, without a float copy of the images."""
    return torch.stack(
        [torch.bincount(images[:, c].reshape(-1), minlength=256) for c in range(images.shape[1])]
    )


def stats_from_histograms(counts: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the per-channel mean and (population) standard deviation, in units of the [0, 1]-scaled
    pixels, of the pixels counted in ``counts`` (C, 256); computed in float64."""
    counts = counts.to(torch.float64)
    values = torch.arange(256, dtype=torch.float64, device=counts.device)
    totals = counts.sum(1)
    means = (counts * values).sum(1) / totals
    variances = (counts * (values - means[:, None]) ** 2).sum(1) / totals
    return tuple((means / 255.0).tolist()), tuple((variances.sqrt() / 255.0).tolist())


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the per-channel mean and (population) standard deviation of uint8 ``images``
    (N, C, H, W), in units of the [0, 1]-scaled pixels.

    Exact: computed in float64 from each channel's 256-bin histogram, without a float copy of the
    images.
    """
    return stats_from_histograms(channel_histograms(images))
