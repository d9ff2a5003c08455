"""The one trainer on two data-parallel workers (two processes in a gloo group, as Ray Train sets
them up): KernelWarehouse's shared warehouses stay one parameter, equal on both workers after a
step; a model without batch statistics trains on two workers exactly as on one with the same
batch; SLaK's masks are the same on both workers through initialisation and rewiring; a run
interrupted after an epoch resumes on both workers to the very weights of an uninterrupted one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kwsearch.models import parse_model_config
from kwsearch.nn import warehouse_managers
from kwsearch.nn.sparsity import MASK_BUFFER
from kwsearch.train import DataParallel, Recipe, RecipeError, train_model
from kwsearch.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

SMALL = {"num_classes": 4, "height": 12, "width": 12, "channels": 1, "num_train": 320, "num_test": 64}
SIXTEEN = {**SMALL, "height": 16, "width": 16, "num_train": 288}
KW = {
    "backbone": "resnet18_cifar",
    "num_classes": 4,
    "in_chans": 1,
    "width": 0.0625,
    "input_size": [12, 12],
    "conv": {"family": "kw", "sharing_range": "layer_conv"},
}
# No batch statistics anywhere (LayerNorm in the blocks and in KernelWarehouse's attention): two
# workers' half batches then make exactly the gradient of one whole batch.
CONVNEXT = {
    "backbone": "convnext_nano",
    "num_classes": 4,
    "in_chans": 1,
    "width": 0.0625,
    "input_size": [16, 16],
    "backbone_args": {"patch_size": 2},
    "conv": {"family": "kw", "norm_layer": "layer", "sharing_range": "layer_pwconv", "cell_num_ratio": 1},
}
SLAK = {
    "backbone": "slak_nano",
    "num_classes": 4,
    "in_chans": 1,
    "width": 0.125,
    "input_size": [16, 16],
    "backbone_args": {"patch_size": 2, "kernel_size": [9, 7, 5, 3], "width_factor": 1.0},
    # snip reads each worker's own first batch; rewiring every 2 steps regrows at random
    "conv": {"family": "slak", "small_kernel": 3, "sparse_init": "snip", "update_frequency": 2},
}


def recipe(workers: int, **fields) -> Recipe:
    # 65 validation images in batches of 64: the last batch's one image is one worker's, so the
    # workers evaluate different numbers of batches (nothing in evaluation may wait for the other)
    defaults = {"epochs": 1, "batch_size": 32, "val_size": 65, "eval_batch_size": 64, "lr": 0.05, "seed": 4}
    return Recipe(**{**defaults, **fields, "workers": workers})


class Interrupt(Exception):
    pass


def _train(config, data, recipe_, workers=None, **kwargs):
    """Train, keeping the parameters after the first step and the model itself."""
    kept = {}

    def keep(model, step):
        kept["model"] = model
        if step == 1:  # the parameters (each worker's own batch statistics are shared at the epoch's end)
            kept["first_step"] = {k: v.detach().clone() for k, v in model.named_parameters()}

    if workers is not None:
        kwargs["workers"] = workers
    result = train_model(
        parse_model_config(config),
        "synthetic",
        recipe_,
        data_options=data,
        step_hooks=[keep],
        progress=False,
        **kwargs,
    )
    return result, kept


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, size: int, rendezvous: str, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=size)
    try:
        workers = DataParallel()
        found = {}
        result, kept = _train(KW, SMALL, recipe(2, epochs=2), workers, checkpoint_dir=Path(folder, "a"))
        model = kept["model"]
        shared = {id(p) for manager in warehouse_managers(model) for p in manager.warehouses}
        found["kw"] = {
            "first_step": kept["first_step"],
            "last": _state(model),
            "history": result.history,
            "warehouses": len(shared),
            "parameters": len(list(model.parameters())),
            "warehouse_names": [n for n, p in model.named_parameters() if id(p) in shared],
        }

        def stop_after_first(metrics):
            if metrics["epoch"] == 1:
                raise Interrupt

        resumed_folder = Path(folder, "b")
        with contextlib.suppress(Interrupt):
            _train(
                KW,
                SMALL,
                recipe(2, epochs=2),
                workers,
                checkpoint_dir=resumed_folder,
                on_epoch=stop_after_first,
            )
        dist.barrier()  # rank 0 has written the checkpoint (the others stopped as soon as they got there)
        saved = load_checkpoint(resumed_folder)
        resumed, kept = _train(KW, SMALL, recipe(2, epochs=2), workers, checkpoint_dir=resumed_folder)
        found["resumed"] = {
            "last": _state(kept["model"]),
            "from": resumed.resumed_from_epoch,
            "history": resumed.history,
            "random_states": len(saved["worker_rng"]),
            "states_differ": not torch.equal(
                saved["worker_rng"][0]["torch"], saved["worker_rng"][1]["torch"]
            ),
        }

        result, kept = _train(CONVNEXT, SIXTEEN, recipe(2, batch_size=16, augment=False), workers)
        found["convnext"] = {"first_step": kept["first_step"], "history": result.history}

        result, kept = _train(SLAK, SIXTEEN, recipe(2), workers)
        model = kept["model"]
        found["slak"] = {
            "masks": {n: b.clone() for n, b in model.named_buffers() if n.endswith(MASK_BUFFER)},
            "last": _state(model),
        }
        torch.save(found, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """What each of two data-parallel workers trained, by rank."""
    folder = tmp_path_factory.mktemp("data-parallel")
    mp.start_processes(
        _worker, args=(2, str(folder / "rendezvous"), str(folder)), nprocs=2, start_method="spawn", join=True
    )
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]


def _metrics(history):
    """An epoch's metrics without where its time went (each worker's own clock and process)."""
    timing = ("started_at", "ended_at", "process")
    return [
        {k: v for k, v in epoch.items() if not k.endswith("seconds") and k not in timing} for epoch in history
    ]


def _assert_equal_states(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_shared_warehouses_are_one_parameter_equal_on_both_workers_after_a_step(two_workers):
    first, second = (found["kw"] for found in two_workers)
    # each warehouse is one parameter, listed once although several layers assemble from it
    assert first["warehouses"] >= 2 and len(first["warehouse_names"]) == first["warehouses"]
    _assert_equal_states(first["first_step"], second["first_step"])
    _assert_equal_states(first["last"], second["last"])
    # the metrics are those of the whole data (every validation image once), the same on both
    assert _metrics(first["history"]) == _metrics(second["history"])
    assert first["history"][-1]["val_images"] == 65


def test_two_workers_make_the_step_of_one_worker_with_the_whole_batch(two_workers):
    alone, kept = _train(CONVNEXT, SIXTEEN, recipe(1, batch_size=16, augment=False))
    together = two_workers[0]["convnext"]
    for key, value in kept["first_step"].items():
        expected = value.float()
        scale = expected.abs().max().clamp_min(1e-6)
        assert ((together["first_step"][key].float() - expected).abs().max() / scale) < 1e-5, key
    # after an epoch the rounding of the two ways has grown, still far below any real difference
    for a, b in zip(alone.history, together["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)


def test_slak_masks_are_the_same_on_both_workers(two_workers):
    first, second = (found["slak"] for found in two_workers)
    assert first["masks"] and first["masks"].keys() == second["masks"].keys()
    for name, mask in first["masks"].items():
        assert torch.equal(mask, second["masks"][name]), name
        weight = first["last"][name.removesuffix(MASK_BUFFER) + "weight"]
        assert torch.count_nonzero(weight[~mask]) == 0
    _assert_equal_states(first["last"], second["last"])


def test_an_interrupted_run_resumes_on_both_workers_to_the_uninterrupted_weights(two_workers):
    for found in two_workers:
        resumed = found["resumed"]
        assert resumed["from"] == 1 and resumed["random_states"] == 2 and resumed["states_differ"]
        assert [h["epoch"] for h in resumed["history"]] == [1, 2]
        _assert_equal_states(resumed["last"], found["kw"]["last"])
        assert resumed["history"][-1]["val_accuracy"] == found["kw"]["history"][-1]["val_accuracy"]


def test_a_recipe_of_several_workers_is_not_trained_by_one_process():
    with pytest.raises(RecipeError, match="workers: 2 data-parallel workers train through Ray Train"):
        train_model(parse_model_config(KW), "synthetic", recipe(2), data_options=SMALL, progress=False)
