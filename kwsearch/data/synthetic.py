"""A generated image classification set for tests and smoke runs: no files, any shape, learnable."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Prototypes are drawn on a coarse grid and upsampled, so each class is a smooth blob pattern that
# convolutions can pick up at any resolution (white-noise prototypes would only be learnable by
# memorising pixels).
_GRID = 4


def synthetic(
    num_train: int = 1000,
    num_test: int = 200,
    channels: int = 3,
    height: int = 32,
    width: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    noise: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Generate a data set: each class has a fixed smooth pattern; every image is its class's
    pattern plus independent Gaussian pixel noise (``noise`` relative to the pattern's spread).

    Returns uint8 ``train_images`` (num_train, channels, height, width), int64 ``train_labels``,
    and the same for ``test_*``, on the CPU. Labels are balanced (class counts differ by at most
    one) and shuffled. The same arguments give the same tensors on every machine. Raises
    ValueError on non-positive sizes, fewer than two classes, or negative noise.
    """
    sizes = {
        "num_train": num_train,
        "num_test": num_test,
        "channels": channels,
        "height": height,
        "width": width,
    }
    for key, value in sizes.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"synthetic: {key} must be a positive int, got {value!r}")
    if num_classes < 2:
        raise ValueError(f"synthetic: num_classes must be at least 2, got {num_classes}")
    if noise < 0:
        raise ValueError(f"synthetic: noise must be non-negative, got {noise}")
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, channels, _GRID, _GRID, generator=generator)
    prototypes = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    prototypes = (prototypes - prototypes.mean()) / prototypes.std().clamp_min(1e-6)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = (torch.arange(count) % num_classes)[torch.randperm(count, generator=generator)]
        pixels = prototypes[labels] + noise * torch.randn(count, channels, height, width, generator=generator)
        # Mid-grey plus about +-2.5 standard deviations of the signal stays inside 0..255.
        images = (128.0 + 40.0 * pixels).round_().clamp_(0, 255).to(torch.uint8)
        return images, labels

    train_images, train_labels = draw(num_train)
    test_images, test_labels = draw(num_test)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
