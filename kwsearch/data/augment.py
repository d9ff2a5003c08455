"""Training augmentation and normalisation as batched tensor ops on the data's device.

The random parameters (crop offsets, flip choices) are drawn separately from the ops that apply
them, so a loader can draw a whole epoch's parameters at once from a seeded CPU generator: the same
(seed, epoch) then gives the same augmented batches on any device, and there is no per-sample
Python and no per-batch host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Which training augmentations to apply: random crop from the image padded with
    ``crop_padding`` zero pixels per side (0: no crop), and random horizontal flips."""

    crop_padding: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be non-negative, got {self.crop_padding}")

    @property
    def active(self) -> bool:
        """Whether this changes any image at all."""
        return self.crop_padding > 0 or self.flip


@dataclass(frozen=True)
class AugmentParams:
    """Random draws for ``n`` samples: crop ``offsets`` (n, 2) as (dy, dx) into the padded image,
    and ``flips`` (n,) bool. Indexable by a slice or index tensor like the samples."""

    offsets: torch.Tensor
    flips: torch.Tensor

    def __getitem__(self, index: slice | torch.Tensor) -> AugmentParams:
        return AugmentParams(self.offsets[index], self.flips[index])

    def to(self, device: torch.device | str) -> AugmentParams:
        """Return these parameters on ``device``."""
        return AugmentParams(self.offsets.to(device), self.flips.to(device))


def draw_params(n: int, augmentation: Augmentation, generator: torch.Generator) -> AugmentParams:
    """Return random parameters for ``n`` samples, drawn from ``generator`` (CPU) in a fixed order:
    offsets uniform in [0, 2 * crop_padding] (all zero without a crop), then flip choices with
    probability one half (all False without flips)."""
    span = 2 * augmentation.crop_padding + 1
    offsets = torch.randint(0, span, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    if not augmentation.flip:
        flips = torch.zeros_like(flips)
    return AugmentParams(offsets, flips)


def random_crop(images: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Return crops of ``images`` (N, C, H, W) of their own size, taken from each image padded with
    ``padding`` zeros per side at its own offset (dy, dx) in ``offsets`` (N, 2), 0 <= d <= 2*padding.

    Offset (padding, padding) is the identity; any other shifts the content by (padding - dy,
    padding - dx) pixels and fills the uncovered border with zeros. One gather, no per-sample
    Python. The result's memory is channels-last (call ``.contiguous()`` for NCHW-contiguous).
    Raises ValueError when ``offsets`` has the wrong shape.
    """
    n, _, height, width = images.shape
    if offsets.shape != (n, 2):
        raise ValueError(f"offsets must have shape ({n}, 2), got {tuple(offsets.shape)}")
    if padding == 0:
        return images
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = offsets.to(images.device)
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indices around a slice put their broadcast dims first: the result is (N, H, W, C).
    crops = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2)


def hflip(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Return ``images`` (N, C, H, W) with exactly the samples where ``flips`` (N,) is True
    mirrored left to right; the others are unchanged."""
    return torch.where(flips.to(images.device)[:, None, None, None], images.flip(-1), images)


def augment(images: torch.Tensor, augmentation: Augmentation, params: AugmentParams) -> torch.Tensor:
    """Return uint8 ``images`` with ``augmentation`` applied using the pre-drawn ``params``."""
    if augmentation.crop_padding:
        images = random_crop(images, augmentation.crop_padding, params.offsets)
    if augmentation.flip:
        images = hflip(images, params.flips)
    return images


def normalization_constants(
    mean: Sequence[float], std: Sequence[float], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return float32 (scale, shift), each (1, C, 1, 1) on ``device``, such that
    ``x * scale + shift == (x / 255 - mean) / std``. Raises ValueError when a std is not positive
    or mean and std differ in length."""
    if len(mean) != len(std):
        raise ValueError(f"mean has {len(mean)} values but std {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    mean_t = torch.tensor(mean, dtype=torch.float32)
    std_t = torch.tensor(std, dtype=torch.float32)
    scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
    shift = (-mean_t / std_t).view(1, -1, 1, 1)
    return scale.to(device), shift.to(device)


def apply_normalization(
    images: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """Return ``images * scale + shift`` (constants from `normalization_constants`), computed in
    float32 as one fused multiply-add and cast to ``dtype``; channels-last memory format with
    ``channels_last``, else NCHW-contiguous."""
    out = torch.addcmul(shift, images.to(torch.float32), scale).to(dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return out.contiguous(memory_format=memory_format)


def normalize(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """Return uint8 ``images`` (N, C, H, W) as ``(images / 255 - mean) / std`` per channel, in
    ``dtype`` and optionally channels-last (see `apply_normalization`).

    Raises ValueError when mean/std do not have one value per channel or a std is not positive.
    (A loop should build the constants once with `normalization_constants` instead: building them
    here copies them to the device on every call.)
    """
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"need one mean and std per channel ({channels}), got {len(mean)} and {len(std)}")
    scale, shift = normalization_constants(mean, std, images.device)
    return apply_normalization(images, scale, shift, dtype, channels_last)
