"""On-device augmentation: crops shift content with zero fill, flips hit exactly the chosen samples,
normalisation is (x / 255 - mean) / std."""

import pytest
import torch

from kwsearch.data import Augmentation, augment, draw_params, hflip, normalize, random_crop


def _images(n=6, c=3, h=8, w=10, seed=0) -> torch.Tensor:
    # Values 1..255 only: a zero in the output can then only be padding.
    return torch.randint(1, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed)).to(torch.uint8)


def test_crop_keeps_the_shape_and_dtype():
    images = _images()
    offsets = torch.randint(0, 9, (6, 2), generator=torch.Generator().manual_seed(1))
    out = random_crop(images, 4, offsets)
    assert out.shape == images.shape and out.dtype == torch.uint8


def test_crop_only_shifts_content_and_fills_with_zeros():
    images = _images(n=4)
    padding = 3
    offsets = torch.tensor([[3, 3], [0, 0], [6, 1], [2, 5]])  # (dy, dx) into the padded image
    out = random_crop(images, padding, offsets)
    h, w = images.shape[-2:]
    for b, (dy, dx) in enumerate(offsets.tolist()):
        # Reference for one sample: shift by (padding - dy, padding - dx), zeros where uncovered.
        shift_y, shift_x = padding - dy, padding - dx
        expected = torch.zeros_like(images[b])
        src_y = slice(max(0, -shift_y), h - max(0, shift_y))
        dst_y = slice(max(0, shift_y), h - max(0, -shift_y))
        src_x = slice(max(0, -shift_x), w - max(0, shift_x))
        dst_x = slice(max(0, shift_x), w - max(0, -shift_x))
        expected[:, dst_y, dst_x] = images[b][:, src_y, src_x]
        assert torch.equal(out[b], expected), f"sample {b}"
    assert torch.equal(out[0], images[0]), "offset (padding, padding) is the identity"


def test_crop_on_a_known_image():
    image = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)
    # dy=0, dx=2 with padding 1: content moves down one row and left one column.
    out = random_crop(image, 1, torch.tensor([[0, 2]]))
    assert out[0, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]


def test_flip_mirrors_exactly_the_chosen_samples():
    images = _images()
    flips = torch.tensor([True, False, False, True, True, False])
    out = hflip(images, flips)
    for b in range(6):
        expected = images[b].flip(-1) if flips[b] else images[b]
        assert torch.equal(out[b], expected)


def test_normalize_matches_the_formula_and_layout_options():
    images = _images(n=3, c=3, h=5, w=7)
    mean, std = (0.2, 0.5, 0.7), (0.3, 0.25, 0.1)
    out = normalize(images, mean, std)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    assert out.dtype == torch.float32 and out.is_contiguous()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    half = normalize(images, mean, std, dtype=torch.bfloat16, channels_last=True)
    assert half.dtype == torch.bfloat16
    assert half.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(half.float(), expected, rtol=1e-2, atol=2e-2)
    with pytest.raises(ValueError, match="one mean and std per channel"):
        normalize(images, (0.5,), (0.5,))


def test_drawn_params_respect_the_augmentation():
    generator = torch.Generator().manual_seed(0)
    params = draw_params(1000, Augmentation(crop_padding=2, flip=True), generator)
    assert params.offsets.shape == (1000, 2)
    assert int(params.offsets.min()) == 0 and int(params.offsets.max()) == 4
    assert 400 < int(params.flips.sum()) < 600
    no_flip = draw_params(1000, Augmentation(crop_padding=2, flip=False), torch.Generator().manual_seed(0))
    assert not bool(no_flip.flips.any())
    assert torch.equal(no_flip.offsets, params.offsets), "the draws do not depend on which ops are on"


def test_augment_applies_crop_then_flip():
    images = _images(n=5)
    aug = Augmentation(crop_padding=2, flip=True)
    params = draw_params(5, aug, torch.Generator().manual_seed(4))
    out = augment(images, aug, params)
    assert torch.equal(out, hflip(random_crop(images, 2, params.offsets), params.flips))
    assert not Augmentation().active
    with pytest.raises(ValueError, match="non-negative"):
        Augmentation(crop_padding=-1)
