"""Which of a study's answers are within its proxy's noise: each config's accuracy with its 95%
interval (over its seeds where it ran with several), the front on those accuracies, the trials
statistically tied with the front, and whether the front's own members are tied."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

from kwsearch.records import TrialRecord, front_of
from kwsearch.stats._intervals import Estimate, accuracy_estimate, significantly_better


@dataclass(frozen=True)
class FrontNoise:
    """``estimates``: per complete trial, its config's accuracy (the mean over every run of that
    config: its seeds, confirmation runs) with its interval; ``front``: the Pareto-optimal trials
    on those accuracies and the costs; ``tied``: trials off the front that no front member
    costing no more (in every cost) beats beyond noise; ``within_noise``: the front has two or
    more members and none is more accurate than another beyond noise; ``flat_steps``: pairs of
    neighbours along the front (cheaper, dearer) where the dearer one is not more accurate
    beyond noise (what the extra cost buys is within noise)."""

    estimates: dict[int, Estimate]
    front: list[int]
    tied: list[int] = field(default_factory=list)
    within_noise: bool = False
    flat_steps: list[tuple[int, int]] = field(default_factory=list)

    def describe(self) -> list[str]:
        """What a person must know before reading the front, in words."""
        if not self.front:
            return []
        if any(not self.estimates[n].known for n in self.front):
            return [
                "The number of validation images is not stored: the front's accuracies have no intervals."
            ]
        lines = []
        if self.within_noise:
            numbers = ", ".join(str(n) for n in self.front)
            lines.append(
                f"The front (trials {numbers}) is within noise: no member is more accurate than another "
                "beyond its 95% interval, so this proxy does not tell them apart by accuracy."
            )
        elif self.flat_steps:
            steps = ", ".join(f"{a} to {b}" for a, b in self.flat_steps)
            lines.append(
                f"Along the front, these steps to a dearer config gain no accuracy beyond noise: {steps}."
            )
        if self.tied:
            lines.append(
                f"{len(self.tied)} trial(s) off the front are statistically tied with it (no front member "
                "that costs no more is more accurate beyond noise): " + ", ".join(map(str, self.tied)) + "."
            )
        return lines

    def as_dict(self) -> dict:
        return {
            "front": self.front,
            "tied_with_front": self.tied,
            "front_within_noise": self.within_noise,
            "flat_steps": [list(step) for step in self.flat_steps],
            "accuracy_ci95": {
                str(n): [e.value, e.low, e.high, e.runs] for n, e in sorted(self.estimates.items())
            },
        }


def front_noise(
    trials: list[TrialRecord],
    objectives: list[str],
    *,
    images: int | None = None,
    extra_runs: dict[int, list[float]] | None = None,
) -> FrontNoise:
    """The noise of ``trials``' front. A trial's runs are every complete trial with its config
    (grid seeds) and its ``extra_runs`` (confirmation accuracies, by trial number); ``images``
    is the number of validation images per run where a trial's history does not say."""
    complete = [t for t in trials if t.objectives(objectives) is not None]
    runs: dict[str, list[float]] = {}
    for trial in complete:
        runs.setdefault(_identity(trial), []).append(trial.accuracy)
    for number, accuracies in (extra_runs or {}).items():
        trial = next((t for t in complete if t.number == number), None)
        if trial is not None:
            runs[_identity(trial)].extend(accuracies)
    estimates = {t.number: accuracy_estimate(runs[_identity(t)], _images(t) or images) for t in complete}
    front = front_of(complete, objectives, accuracy={n: e.value for n, e in estimates.items()})
    front_numbers = sorted(t.number for t in front)
    costs = {t.number: [getattr(t.costs, name) for name in objectives[1:]] for t in complete}
    tied = [
        t.number
        for t in complete
        if t.number not in front_numbers
        and not any(
            all(a <= b for a, b in zip(costs[f], costs[t.number], strict=True))
            and significantly_better(estimates[f], estimates[t.number])
            for f in front_numbers
        )
    ]
    members = [estimates[n] for n in front_numbers]
    within = len(members) > 1 and not any(significantly_better(a, b) for a in members for b in members)
    by_cost = sorted(front_numbers, key=lambda n: (costs[n], n))
    flat = [
        (cheaper, dearer)
        for cheaper, dearer in itertools.pairwise(by_cost)
        if not significantly_better(estimates[dearer], estimates[cheaper])
    ]
    return FrontNoise(estimates, front_numbers, sorted(tied), within, flat)


def _identity(trial: TrialRecord) -> str:
    return json.dumps(trial.config, sort_keys=True)


def _images(trial: TrialRecord) -> int | None:
    images = trial.history[-1].get("val_images") if trial.history else None
    return int(images) if images else None
