"""Changing a data set's resolution once, at load time (a proxy control: smaller images, cheaper
trials), so no trial pays for resizing in its training loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Images resized per chunk: the float copy of a whole 50k-image set would need gigabytes.
_CHUNK = 4096


def as_size(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Return ``size`` as an (H, W) pair; an int means a square. Raises ValueError unless both
    sides are positive integers."""
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(side, int) and side > 0 for side in pair):
        raise ValueError(f"image size must be a positive int or an (H, W) pair of them, got {size!r}")
    return pair  # type: ignore[return-value]


def resize_images(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Return uint8 ``images`` (N, C, H, W) resized to ``size`` on their own device.

    Bilinear, with antialiasing when a side shrinks (plain bilinear would alias: it reads only the
    two nearest source pixels). The result is rounded back to uint8; a tensor already of the
    requested size is returned as it is. Raises ValueError on a non-uint8 or non-4-D tensor.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(
            f"expected uint8 (N, C, H, W) images, got {images.dtype} of shape {tuple(images.shape)}"
        )
    height, width = as_size(size)
    if images.shape[-2:] == (height, width):
        return images
    shrinking = height < images.shape[-2] or width < images.shape[-1]
    out = torch.empty(
        (images.shape[0], images.shape[1], height, width), dtype=torch.uint8, device=images.device
    )
    for start in range(0, images.shape[0], _CHUNK):
        chunk = images[start : start + _CHUNK].float()
        resized = F.interpolate(
            chunk, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking
        )
        out[start : start + _CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out
