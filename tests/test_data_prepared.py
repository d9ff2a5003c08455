"""Image folders beyond memory: a generated folder of a few thousand small JPEGs is prepared into an
on-disk cache (shorter side, centre square), which resumes after `kill -9`, refuses to open when
partial or damaged (naming the file), is read in memory or streamed by background threads into
the very same batches, and trains a model either way to the very same history."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from kwsearch.data import (
    Augmentation,
    DataSourceError,
    DeviceLoader,
    StreamedDataset,
    StreamLoader,
    channel_stats,
    eval_loader,
    load_dataset,
    open_image_cache,
    prepare_image_cache,
    train_loader,
    verify_image_cache,
)
from kwsearch.data import datasets as datasets_module
from kwsearch.models import parse_model_config
from kwsearch.train import Recipe, RecipeError, train_model

Image = pytest.importorskip("PIL.Image")

CLASSES = ("red", "green", "blue", "grey")
TRAIN, VAL = 2400, 400  # per split, spread over the classes
SIZE = 8


def _picture(label: int, index: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy image whose class shows in its colour; widths and heights vary, so that resizing
    and the centre crop have work to do."""
    height, width = 12 + index % 5, 12 + (index * 7) % 9
    pixels = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
    if label < 3:
        pixels[..., label] += 150
    else:
        pixels += 80
    return pixels


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """ImageNet's layout: train/<class>/*.jpg and val/<class>/*.jpg, 2,800 JPEGs in all."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN), ("val", VAL)):
        for i in range(count):
            label = i % len(CLASSES)
            path = root / split / CLASSES[label] / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_picture(label, i, rng)).save(path, quality=90)
    return root


@pytest.fixture(scope="module")
def cache(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "prepared"
    summary = prepare_image_cache(image_folder, out, SIZE, workers=2, chunk=256, progress=False)
    assert summary.parts == {"train": TRAIN, "test": VAL} and summary.reused == 0
    return out


def test_preparation_keeps_the_centre_square_at_the_shorter_side(tmp_path):
    """A wide image of three vertical bands keeps its middle band; a tall one its middle rows."""
    wide = np.zeros((20, 100, 3), dtype=np.uint8)
    wide[:, :35, 0], wide[:, 35:65, 1], wide[:, 65:, 2] = 255, 255, 255
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    for name, pixels in (("wide", wide), ("tall", tall)):
        path = tmp_path / "source" / name / "0.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(pixels).save(path)
    prepare_image_cache(tmp_path / "source", tmp_path / "cache", 10, workers=1, progress=False)
    part = open_image_cache(tmp_path / "cache").parts["all"]
    assert part.images.shape == (2, 3, 10, 10) and part.labels.tolist() == [0, 1]  # classes: tall, wide
    for image in part.images:  # the middle 20 of 100 px (the shorter side is 20): inside the green band
        assert image[1].min() >= 250 and image[0].max() <= 5 and image[2].max() <= 5


def test_cache_holds_every_image_labelled_with_its_statistics(cache, image_folder):
    opened = open_image_cache(cache)
    assert opened.classes == tuple(sorted(CLASSES)) and opened.size == SIZE and opened.channels == 3
    train, test = opened.parts["train"], opened.parts["test"]
    assert train.images.shape == (TRAIN, 3, SIZE, SIZE) and test.images.shape == (VAL, 3, SIZE, SIZE)
    names = sorted((p.parent.name, p.name) for p in (image_folder / "train").rglob("*.jpg"))
    assert train.labels.tolist() == [opened.classes.index(folder) for folder, _ in names]
    # the class colour survives: each class's mean colour is its own
    images = torch.from_numpy(np.array(train.images)).float()
    for label, name in enumerate(opened.classes):
        means = images[torch.from_numpy(train.labels) == label].mean(dim=(0, 2, 3))
        if name in ("red", "green", "blue"):
            assert int(means.argmax()) == ("red", "green", "blue").index(name)
    mean, std = channel_stats(torch.from_numpy(np.array(train.images)))
    assert train.mean == pytest.approx(mean, abs=1e-12) and train.std == pytest.approx(std, abs=1e-12)
    assert verify_image_cache(cache, progress=False) == len(train.digests) + len(test.digests)
    # prepared again: nothing to do
    again = prepare_image_cache(image_folder, cache, SIZE, workers=2, chunk=256, progress=False)
    assert again.reused == again.chunks


def test_interrupted_preparation_is_refused_then_resumed_to_the_same_cache(image_folder, cache, tmp_path):
    out = tmp_path / "interrupted"
    # small chunks, one thread: many journal entries, so that the kill lands in the middle
    script = (
        "from kwsearch.data import prepare_image_cache; "
        f"prepare_image_cache({str(image_folder)!r}, {str(out)!r}, {SIZE}, workers=1, chunk=16)"
    )
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    journal = out / "train.progress"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            assert process.poll() is None, "the preparation finished before it could be interrupted"
            if journal.is_file() and len(journal.read_text().splitlines()) > 3:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the preparation journalled no chunk in time")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with pytest.raises(
        DataSourceError, match=r"interrupted \(train.progress: \d+ of 150 chunks done\)"
    ) as error:
        open_image_cache(out)
    assert f"kwsearch prepare {image_folder} {out} --size {SIZE}" in str(error.value)
    with pytest.raises(DataSourceError, match="partial"):
        load_dataset("prepared", out)
    done = 0  # the chunks journalled whole (a line cut by the kill does not count)
    for line in journal.read_text().splitlines()[1:]:
        try:
            json.loads(line)
            done += 1
        except ValueError:
            break

    summary = prepare_image_cache(image_folder, out, SIZE, workers=2, chunk=16, progress=False)
    assert summary.reused == done >= 3 and summary.chunks == 150 + 25
    assert not journal.exists()
    resumed, fresh = open_image_cache(out), open_image_cache(cache)
    for name in ("train", "test"):
        assert np.array_equal(resumed.parts[name].images, fresh.parts[name].images)
        assert np.array_equal(resumed.parts[name].labels, fresh.parts[name].labels)
        assert resumed.parts[name].mean == fresh.parts[name].mean
    verify_image_cache(out, progress=False)


def test_damaged_caches_are_refused_naming_the_file(cache, tmp_path, image_folder):
    def copy(name):
        target = tmp_path / name
        target.mkdir()
        for file in cache.iterdir():
            (target / file.name).write_bytes(file.read_bytes())
        return target

    truncated = copy("truncated")
    with open(truncated / "train.images", "r+b") as images:
        images.truncate(1000)
    with pytest.raises(DataSourceError, match=r"train.images: 1,000 bytes, but 2,400 images of 3x8x8 take"):
        open_image_cache(truncated)

    manifest = copy("manifest")
    (manifest / "manifest.json").write_text('{"format": "kwsearch-image-cache", "vers')
    with pytest.raises(DataSourceError, match=r"manifest.json: not a readable manifest"):
        load_dataset("prepared", manifest)

    labels = copy("labels")
    (labels / "test.labels.npy").unlink()
    with pytest.raises(DataSourceError, match=r"test.labels.npy: not readable"):
        open_image_cache(labels)

    flipped = copy("flipped")
    with open(flipped / "train.images", "r+b") as images:
        images.seek(300 * 3 * SIZE * SIZE + 5)  # inside image 300, the second chunk of 256
        byte = images.read(1)
        images.seek(-1, os.SEEK_CUR)
        images.write(bytes([byte[0] ^ 0xFF]))
    open_image_cache(flipped)  # the structure is whole: only re-reading finds it
    with pytest.raises(DataSourceError, match=r"train.images: images 256-511 differ from what was prepared"):
        verify_image_cache(flipped, progress=False)
    cli = [sys.executable, "-c", "from kwsearch.cli import main; main()"]
    result = subprocess.run(
        [*cli, "prepare", str(image_folder), str(flipped), "--size", str(SIZE), "--verify"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "images 256-511 differ" in result.stderr

    with pytest.raises(DataSourceError, match="not a prepared image cache"):
        open_image_cache(tmp_path)
    with pytest.raises(DataSourceError, match="no such folder"):
        open_image_cache(tmp_path / "nowhere")


def test_streamed_batches_are_the_in_memory_batches(cache):
    memory = load_dataset("prepared", cache, loading="memory")
    stream = load_dataset("prepared", cache, loading="stream")
    assert isinstance(stream, StreamedDataset) and not isinstance(memory, StreamedDataset)
    assert load_dataset("prepared", cache) is memory  # a small cache: in memory by default
    assert stream.mean == memory.mean and stream.image_size == memory.image_size == (SIZE, SIZE)
    augmentation = Augmentation(crop_padding=2, flip=True)
    for epoch in (0, 3):
        a = train_loader(memory, 64, seed=5, augmentation=augmentation)
        b = train_loader(stream, 64, seed=5, augmentation=augmentation)
        assert isinstance(b, StreamLoader) and len(a) == len(b) == TRAIN // 64
        for (x, y), (sx, sy) in zip(a.epoch(epoch), b.epoch(epoch), strict=True):
            assert torch.equal(x, sx) and torch.equal(y, sy)
    # two workers' shares are the whole batch, in order
    whole = list(eval_loader(stream, 150, split="test"))
    shares = [list(eval_loader(stream, 150, split="test", shard=(rank, 2))) for rank in (0, 1)]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shares, strict=True):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    # at another resolution both resize alike (once at load, or per batch on the device)
    small = load_dataset("prepared", cache, loading="memory", image_size=6)
    streamed = load_dataset("prepared", cache, loading="stream", image_size=6)
    x, _ = next(iter(eval_loader(small, 32, split="test")))
    sx, _ = next(iter(eval_loader(streamed, 32, split="test")))
    assert x.shape == (32, 3, 6, 6) and torch.equal(x, sx)


def test_an_abandoned_epoch_stops_its_readers(cache):
    stream = load_dataset("prepared", cache, loading="stream")
    loader = train_loader(stream, 16, seed=0)
    first = next(iter(loader))[0]  # what the trainer does to choose its paths
    assert first.shape == (16, 3, SIZE, SIZE)
    assert not [t for t in threading.enumerate() if t.name.startswith("kwsearch-reader")]


def test_loader_checks(cache):
    stream = load_dataset("prepared", cache, loading="stream")
    with pytest.raises(ValueError, match="does not split evenly over 3 workers"):
        train_loader(stream, 64, shard=(0, 3))
    with pytest.raises(ValueError, match="shard must be"):
        DeviceLoader(
            torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
            torch.zeros(4, dtype=torch.long),
            batch_size=2,
            mean=(0.5,),
            std=(0.5,),
            shard=(2, 2),
        )
    with pytest.raises(ValueError, match="streaming reads an image cache"):
        load_dataset("synthetic", loading="stream")


def test_automatic_loading_streams_what_would_not_fit(cache, monkeypatch):
    datasets_module.clear_dataset_cache()
    monkeypatch.setattr(datasets_module, "_available_memory", lambda device: 2 * TRAIN * 3 * SIZE * SIZE)
    assert isinstance(load_dataset("prepared", cache), StreamedDataset)  # 2,800 images need more
    assert not isinstance(load_dataset("prepared", cache, image_size=4), StreamedDataset)  # at 4x4 they fit


MODEL = {
    "backbone": "resnet18_cifar",
    "num_classes": 4,
    "in_chans": 3,
    "width": 0.0625,
    "input_size": [SIZE, SIZE],
    "conv": {"family": "static"},
}


def test_training_from_the_cache_streamed_is_training_in_memory(cache):
    config = parse_model_config(MODEL)
    runs = {}
    for loading in ("memory", "stream"):
        recipe = Recipe(
            epochs=2, batch_size=64, lr=0.05, val_size=200, data_loading=loading, evaluate_test=True, seed=3
        )
        runs[loading] = train_model(config, "prepared", recipe, data_root=cache, progress=False)
    memory, stream = runs["memory"], runs["stream"]
    keys = ("train_loss", "val_loss", "val_accuracy", "test_accuracy")
    assert [[h[k] for k in keys] for h in memory.history] == [[h[k] for k in keys] for h in stream.history]
    assert stream.last["test_accuracy"] > 0.6  # four colours: far above a quarter
    with pytest.raises(RecipeError, match="data_loading: stream reads an image cache"):
        train_model(config, "synthetic", Recipe(data_loading="stream"), progress=False)
    assert json.loads((cache / "manifest.json").read_text())["parts"]["train"]["count"] == TRAIN


def test_an_unreadable_image_stops_the_preparation_naming_it(tmp_path):
    for i in range(40):
        path = tmp_path / "source" / ("a" if i % 2 else "b") / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (9, 9), (i, 0, 0)).save(path)
    broken = tmp_path / "source" / "b" / "30.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match=f"{broken}: cannot read the image"):
        prepare_image_cache(tmp_path / "source", tmp_path / "cache", 4, workers=2, chunk=5, progress=False)
    with pytest.raises(DataSourceError, match="interrupted"):
        open_image_cache(tmp_path / "cache")


def test_a_study_on_a_prepared_cache_reads_its_shape_and_refuses_a_missing_one(cache, tmp_path):
    from kwsearch.search import StudyError, parse_study
    from kwsearch.search.preflight import check_networks
    from kwsearch.search.study import data_shape
    from tests.helpers import tiny_study

    space = {"num_classes": len(CLASSES), "in_chans": 3, "input_size": [SIZE, SIZE]}
    study = parse_study(tiny_study("p", space=space, data={"name": "prepared", "root": str(cache)}))
    shape = data_shape(study)  # from the manifest: no image is read
    assert (shape.in_chans, shape.num_classes, shape.image_size) == (3, len(CLASSES), (SIZE, SIZE))
    assert check_networks(study) == []
    with pytest.raises(StudyError, match=r"study: data: root: the prepared data set needs a root"):
        parse_study(tiny_study("p", space=space, data={"name": "prepared"}))
    missing = tmp_path / "nowhere"
    with pytest.raises(StudyError, match=rf"study: data.root: {missing}: no such folder; prepare"):
        parse_study(tiny_study("p", space=space, data={"name": "prepared", "root": str(missing)}))
    wrong = {**space, "num_classes": 10}
    with pytest.raises(StudyError, match=r"num_classes: 10, but prepared has 4 classes"):
        check_networks(
            parse_study(tiny_study("p", space=wrong, data={"name": "prepared", "root": str(cache)}))
        )
