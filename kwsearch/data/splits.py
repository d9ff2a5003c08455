"""Proxy controls over which samples a trial sees: stratified subsets and train/validation splits.

Searches select architectures on a validation split carved out of the training set and never look
at the test set. Every function here is pure and seeded: the random draws come from a CPU
``torch.Generator`` so the same seed picks the same samples on every device, and the returned
indices live on the labels' device, sorted ascending.
"""

from __future__ import annotations

import torch


def _class_counts(labels: torch.Tensor) -> torch.Tensor:
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.numel() == 0:
        raise ValueError(
            f"labels must be a non-empty 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}"
        )
    if int(labels.min()) < 0:
        raise ValueError("labels must be non-negative class indices")
    return torch.bincount(labels.cpu().long())


def _quotas(counts: torch.Tensor, n: int) -> list[int]:
    """Per-class sample counts proportional to ``counts``, summing to exactly ``n``, at least one
    for every class present (largest-remainder rounding; ties go to the lower class index)."""
    present = [k for k, c in enumerate(counts.tolist()) if c > 0]
    total = int(counts.sum())
    exact = {k: n * int(counts[k]) / total for k in present}
    quota = {k: min(int(counts[k]), max(1, int(exact[k]))) for k in present}
    surplus = sum(quota.values()) - n
    # Too few: top up the classes furthest below their exact share that still have samples left.
    while surplus < 0:
        k = max((k for k in present if quota[k] < counts[k]), key=lambda k: (exact[k] - quota[k], -k))
        quota[k] += 1
        surplus += 1
    # Too many (every class got at least one): take back from those furthest above their share.
    while surplus > 0:
        k = max((k for k in present if quota[k] > 1), key=lambda k: (quota[k] - exact[k], -k))
        quota[k] -= 1
        surplus -= 1
    return [quota.get(k, 0) for k in range(len(counts))]


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Return the sorted indices of ``n`` samples drawn per class in proportion to the class sizes.

    The total is exactly ``n`` and every class present gets at least one sample. Deterministic for
    (labels, n, seed), and identical on every device. Raises ValueError when ``n`` is larger than
    the number of samples or smaller than the number of classes present.
    """
    counts = _class_counts(labels)
    available, classes = int(counts.sum()), int((counts > 0).sum())
    if n > available:
        raise ValueError(f"cannot draw {n} samples from {available}")
    if n < classes:
        raise ValueError(
            f"cannot draw {n} samples stratified over {classes} classes: need at least one per class"
        )
    quota = torch.tensor(_quotas(counts, n))
    cpu_labels = labels.cpu().long()
    generator = torch.Generator().manual_seed(seed)
    # A random order, then stably grouped by class: within each class the order stays random, so
    # the first quota[k] samples of class k are a uniform draw from it.
    order = torch.randperm(available, generator=generator)
    order = order[torch.sort(cpu_labels[order], stable=True).indices]
    grouped = cpu_labels[order]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(available) - starts[grouped]
    chosen = order[rank < quota[grouped]]
    return torch.sort(chosen).values.to(labels.device)


def train_val_split(
    labels: torch.Tensor,
    val_size: int | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into stratified, disjoint training and validation sets.

    Give exactly one of ``val_size`` (a count) or ``val_fraction`` (of all samples, rounded to the
    nearest count). Returns (train_indices, val_indices), each sorted, together covering every
    index once. Deterministic for (labels, size, seed). Raises ValueError when both or neither
    size is given, or when the validation set could not hold one sample per class or would leave
    no training sample.
    """
    if (val_size is None) == (val_fraction is None):
        raise ValueError("give exactly one of val_size and val_fraction")
    total = labels.numel()
    if val_fraction is not None:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
        val_size = round(total * val_fraction)
    assert val_size is not None
    if val_size >= total:
        raise ValueError(f"a validation set of {val_size} leaves no training sample out of {total}")
    val = stratified_subset(labels, val_size, seed)
    keep = torch.ones(total, dtype=torch.bool, device=labels.device)
    keep[val] = False
    return torch.nonzero(keep).squeeze(1), val
