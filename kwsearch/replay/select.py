"""Which proxy trials a replay trains: named ones, or K spread along the Pareto front."""

from __future__ import annotations

from kwsearch.records import TrialRecord, front_of, spread_along_front


class ReplayError(ValueError):
    """A replay that cannot run (unknown study or trial, nothing to replay); exit code 2."""


def select_trials(
    trials: list[TrialRecord],
    objectives: list[str],
    *,
    study_name: str,
    top: int | None = None,
    numbers: list[int] | None = None,
) -> list[TrialRecord]:
    """The trials to replay: ``numbers`` (each must have trained), or ``top`` spread along the
    front. Raises ReplayError naming the study or trial when that cannot be done."""
    if (top is None) == (numbers is None):
        raise ReplayError("give either --top K or --trials I,J (not both)")
    if not any(t.status == "complete" for t in trials):
        raise ReplayError(f"study {study_name!r} has no complete trials to replay")
    if top is not None:
        if top < 1:
            raise ReplayError(f"--top: must be >= 1, got {top}")
        return spread_along_front(front_of(trials, objectives), objectives, top)
    by_number = {t.number: t for t in trials}
    chosen = []
    for number in dict.fromkeys(numbers):
        trial = by_number.get(number)
        if trial is None:
            raise ReplayError(f"study {study_name!r} has no trial {number} (its trials: 0-{len(trials) - 1})")
        if trial.status == "duplicate":
            raise ReplayError(
                f"study {study_name!r}: trial {number} repeats trial {trial.duplicate_of}; replay that one"
            )
        if not trial.replayable:
            reason = trial.error or trial.status
            raise ReplayError(f"study {study_name!r}: trial {number} never trained ({reason})")
        chosen.append(trial)
    return chosen
