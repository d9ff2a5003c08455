"""Image folders: read with Pillow, resized once, cached as a tensor file that a changed folder
invalidates."""

import os

import pytest
import torch

from kwsearch.data import DataSourceError, load_dataset, read_image_folder
from kwsearch.data import folder as folder_module
from kwsearch.data.folder import cache_path

Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (an optional dependency)")

COLOURS = {"cat": (200, 30, 30), "dog": (20, 180, 40), "eel": (10, 20, 230)}


def _write(path, colour, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def image_root(tmp_path):
    """Three classes of solid-colour PNGs of assorted sizes: 4 cats, 3 dogs, 3 eels."""
    root = tmp_path / "images"
    for name, count in (("cat", 4), ("dog", 3), ("eel", 3)):
        for i in range(count):
            _write(root / name / f"{i}.png", COLOURS[name], size=(12 + i, 10 + 2 * i))
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_folder_is_read_resized_and_labelled(image_root):
    images, labels, classes = read_image_folder(image_root, (6, 5))
    assert classes == ("cat", "dog", "eel")
    assert images.shape == (10, 3, 6, 5) and images.dtype == torch.uint8
    assert labels.tolist() == [0] * 4 + [1] * 3 + [2] * 3
    for k, name in enumerate(classes):
        expected = torch.tensor(COLOURS[name], dtype=torch.uint8).view(3, 1, 1).expand(3, 6, 5)
        assert all(torch.equal(image, expected) for image in images[labels == k])
    grey, _, _ = read_image_folder(image_root, 4, mode="L")
    assert grey.shape == (10, 1, 4, 4)


def test_cache_is_reused_and_invalidated_by_a_changed_file(image_root, monkeypatch):
    images, labels, _ = read_image_folder(image_root, 8)
    cache = cache_path(image_root, 8)
    assert cache.is_file()
    assert not list(image_root.glob("*.tmp")), "the temporary file is renamed, never left"

    def no_reading(*args):
        raise AssertionError("the images were read again although nothing changed")

    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "_read_images", no_reading)
        cached_images, cached_labels, _ = read_image_folder(image_root, 8)
    assert torch.equal(cached_images, images) and torch.equal(cached_labels, labels)

    # Rewrite one dog in another colour, with a later modification time: the cache no longer fits.
    changed = image_root / "dog" / "1.png"
    _write(changed, (1, 2, 3), size=(13, 12))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fresh, _, _ = read_image_folder(image_root, 8)
    assert fresh[5].view(3, -1)[:, 0].tolist() == [1, 2, 3]
    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "_read_images", no_reading)
        assert torch.equal(read_image_folder(image_root, 8)[0], fresh), "the refreshed cache is used"

    # A new file changes the file list: read again, one more image.
    _write(image_root / "eel" / "9.png", COLOURS["eel"])
    assert read_image_folder(image_root, 8)[0].shape[0] == 11


def test_load_dataset_holds_out_a_stratified_test_split(image_root):
    data = load_dataset("folder", root=image_root, image_size=8, test_fraction=0.3)
    assert data.class_names == ("cat", "dog", "eel") and data.num_classes == 3
    assert data.train_images.shape[1:] == (3, 8, 8)
    assert data.train_images.shape[0] + data.test_images.shape[0] == 10
    assert sorted(data.test_labels.tolist()) == [0, 1, 2]
    assert data.flip and data.in_chans == 3
    assert load_dataset("folder", root=image_root, image_size=8, test_fraction=0.3) is data


def test_load_dataset_uses_given_train_and_test_folders(tmp_path):
    root = tmp_path / "split"
    for split, names in (("train", ("cat", "dog", "eel")), ("test", ("dog", "eel"))):
        for name in names:
            _write(root / split / name / "a.png", COLOURS[name])
            _write(root / split / name / "b.png", COLOURS[name])
    data = load_dataset("folder", root=root, image_size=4)
    assert data.train_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.test_labels.tolist() == [1, 1, 2, 2], "test classes keep the training folder's indices"


def test_bad_folders_are_named_in_the_error(tmp_path):
    with pytest.raises(DataSourceError, match="no images found"):
        read_image_folder(tmp_path, 8)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match=r"broken\.png: cannot read the image"):
        read_image_folder(tmp_path, 8)
