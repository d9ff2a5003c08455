"""The papers' ImageNet training recipes, by name: ``recipe: {preset: kw_resnet_imagenet}`` in a
replay recipe (or any recipe) starts from one; the fields written beside it replace the preset's.

Each preset gives what the trainer applies (epochs, optimizer, learning rate for the whole step's
batch, warmup, schedule, weight decay, label smoothing, input size) and says where it comes from
and what of the published recipe kwsearch does not apply (its augmentation is random crops with
padding and flips on the device; mixing, RandAugment, random erasing and weight EMA are not
implemented). The attention temperature is not a recipe field: the conv spec carries it, as the
fraction of the run the reference anneals over (:data:`temperature` names the schedule that
applies, so that a shortened preset anneals as the full one does). Model-side settings of the
references (drop path, dropout, SLaK's sparsity) are model config fields.

``batch_size`` is the whole step's, as published summed over GPUs; the number of workers is the
user's (``workers: 8`` for the papers' eight GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kwsearch.models.mobilenetv2 import KW_TEMPERATURE as KW_MOBILENETV2_TEMPERATURE
from kwsearch.models.mobilenetv2 import SOFTMAX_TEMPERATURE as SOFTMAX_MOBILENETV2_TEMPERATURE
from kwsearch.nn import KW_DEFAULT_SCHEDULE, SOFTMAX_DEFAULT_SCHEDULE, TemperatureSchedule


@dataclass(frozen=True)
class RecipePreset:
    """A published recipe: the ``recipe`` fields it sets, its ``source``, the ``temperature``
    schedule its family's conv spec applies (None for a family without one), and the published
    settings kwsearch does not apply (``not_applied``)."""

    name: str
    recipe: dict[str, Any]
    source: str
    temperature: TemperatureSchedule | None
    not_applied: tuple[str, ...]


_IMAGENET = {"resolution": (224, 224), "augment": True}

# ConvNeXt's training script, which KernelWarehouse and SLaK both build on (their main.py
# defaults): timm's RandAugment, mixing, random erasing and bicubic random-resized crops.
_CONVNEXT_AUGMENTATION = (
    "random-resized crops (bicubic) and colour jitter 0.4",
    "RandAugment rand-m9-mstd0.5-inc1",
    "mixup 0.8, cutmix 1.0",
    "random erasing 0.25",
)
# ConvNeXt's optimisation, the same in both main.py files: 300 epochs of AdamW at a batch of
# 4096, 20 warmup epochs, cosine to 1e-6, label smoothing 0.1.
_CONVNEXT_RECIPE = {
    **_IMAGENET,
    "epochs": 300,
    "batch_size": 4096,
    "optimizer": "adamw",
    "lr": 4e-3,
    "betas": (0.9, 0.999),
    "weight_decay": 0.05,
    "warmup_epochs": 20,
    "lr_schedule": "cosine",
    "min_lr": 1e-6,
    "label_smoothing": 0.1,
}
_RESIZED_CROPS = (
    "random-resized crops (torchvision's RandomResizedCrop(224); test: resize 256, centre 224)",
)

_PRESETS = (
    RecipePreset(
        "kw_resnet_imagenet",
        _CONVNEXT_RECIPE,
        "OSVAI/KernelWarehouse main.py defaults (300 epochs, AdamW lr 4e-3 at a batch of 4096, weight "
        "decay 0.05, 20 warmup epochs, cosine to 1e-6, label smoothing 0.1) as its README trains "
        "configs/resnet18 and resnet50 (8 GPUs x 128 x update_freq 4); ConvNeXt (configs/convnext) "
        "trains the same way",
        KW_DEFAULT_SCHEDULE,
        (
            *_CONVNEXT_AUGMENTATION,
            "drop path 0.1 (the model config's drop_path; 0.3 for ConvNeXt)",
            "weight EMA (ConvNeXt's config)",
        ),
    ),
    RecipePreset(
        "kw_mobilenetv2_imagenet",
        {
            **_IMAGENET,
            "epochs": 150,
            "batch_size": 256,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 4e-5,
            "warmup_epochs": 0,
            "lr_schedule": "cosine",
            "min_lr": 1e-6,
            "label_smoothing": 0.1,
        },
        "OSVAI/KernelWarehouse configs/mobilenetv2_*/kw*.json (150 epochs, SGD lr 0.05 with timm's "
        "Nesterov momentum, weight decay 4e-5, no warmup, label smoothing 0.1 by main.py's default) at "
        "the README's batch of 256 (8 GPUs x 32)",
        KW_MOBILENETV2_TEMPERATURE,
        _RESIZED_CROPS,
    ),
    RecipePreset(
        "odconv_resnet_imagenet",
        {
            **_IMAGENET,
            "epochs": 100,
            "batch_size": 256,
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 1e-4,
            "warmup_epochs": 0,
            "lr_schedule": "step",
            "lr_steps": (0.3, 0.6, 0.9),
            "lr_gamma": 0.1,
            "label_smoothing": 0.0,
        },
        "OSVAI/ODConv README's ResNet command (--epochs 100 --lr 0.1 --wd 1e-4 --lr-decay schedule "
        "--schedule 30 60 90) and main.py (SGD momentum 0.9, a global batch of 256)",
        SOFTMAX_DEFAULT_SCHEDULE,
        (
            *_RESIZED_CROPS,
            "weight decay on every parameter (kwsearch leaves norms, biases and attention undecayed)",
            "dropout 0.2 before the classifier in the README's example (the model config's dropout)",
        ),
    ),
    RecipePreset(
        "odconv_mobilenetv2_imagenet",
        {
            **_IMAGENET,
            "epochs": 150,
            "batch_size": 256,
            "optimizer": "sgd",
            "lr": 0.05,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 4e-5,
            "warmup_epochs": 0,
            "lr_schedule": "cosine",
            "min_lr": 0.0,
            "label_smoothing": 0.0,
        },
        "OSVAI/ODConv README's MobileNetV2 command (--epochs 150 --lr 0.05 --wd 4e-5 --lr-decay cos) "
        "and main.py (SGD momentum 0.9, a global batch of 256)",
        SOFTMAX_MOBILENETV2_TEMPERATURE,
        (
            *_RESIZED_CROPS,
            "weight decay on every parameter (kwsearch leaves norms, biases and attention undecayed)",
            "dropout 0.2 before the classifier in the README's example (the model config's dropout)",
        ),
    ),
    RecipePreset(
        "slak_imagenet",
        _CONVNEXT_RECIPE,
        "VITA-Group/SLaK README's SLaK-T command (--epochs 300 --lr 4e-3, 4 GPUs x 128 x update_freq 8 = "
        "a batch of 4096) and main.py defaults (AdamW, weight decay 0.05, 20 warmup epochs, cosine to "
        "1e-6, label smoothing 0.1); its sparsity (-u 2000 --sparsity 0.4 --sparse_init snip "
        "--prune_rate 0.5 --growth random) is the conv spec's",
        None,
        (*_CONVNEXT_AUGMENTATION, "drop path 0.1 (the model config's drop_path)", "weight EMA"),
    ),
)

RECIPE_PRESETS: dict[str, RecipePreset] = {preset.name: preset for preset in _PRESETS}
