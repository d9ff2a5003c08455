"""The one Ray driver: a policy says what to run next, the driver hands it to Ray Tune and tells
the policy what each run reported, as it comes.

Search, replay and calibration are policies (:class:`RunPolicy`); the driver is what they share:
mapping Ray's trials to runs, per-epoch history (a retried or resumed run reports from its own
epoch on), errors with their tracebacks, wall time, and how a run ended.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ray.tune.search import Searcher

from kwsearch.execution._trainable import METRICS
from kwsearch.models import ModelConfig
from kwsearch.records import History
from kwsearch.train import Recipe


@dataclass
class Run:
    """One training run a policy asks for. ``key`` names it to the early-stopping scheduler;
    ``cost_point`` (its costs, in the objectives' order) makes it subject to early stopping;
    ``folder`` makes it checkpoint every epoch and resume; ``history`` holds the epochs a resumed
    run finished before; ``measure`` makes its worker time the model before training it
    (``image_size``: of the images it trains on; ``limits``: measured costs over which it does not
    train); ``handle`` is the policy's own (the record it writes, say)."""

    key: str
    model: ModelConfig
    recipe: Recipe
    folder: Path | None = None
    cost_point: list[float] | None = None
    history: History = field(default_factory=list)
    measure: dict[str, Any] | None = None
    handle: Any = None


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``finished`` (trained to its last epoch), ``failed`` (an error, with its
    message and traceback) or ``stopped`` (Ray stopped it: the scheduler, or the end of the
    search, or a measured cost over its limit: it never trained). ``history`` holds every epoch
    known, ``seconds`` the wall time of this attempt: from its start in a worker (from its
    proposal when it never started in one); ``measured`` what the worker measured before training
    (:func:`kwsearch.train.timing.measure_costs`) when the run asked."""

    kind: Literal["finished", "failed", "stopped"]
    history: History
    seconds: float
    error: str | None = None
    traceback: str | None = None
    resumed_from_epoch: int = 0
    measured: dict[str, Any] | None = None


# What a policy answers when its next run depends on runs still going (ask again when one ends).
WAIT = "wait"


class RunPolicy(Protocol):
    def next_run(self) -> Run | Literal["wait"] | None:
        """The next run; :data:`WAIT` when it depends on runs still going; None when there is
        nothing more to run."""

    def on_epoch(self, run: Run, history: History) -> None:
        """``run`` finished an epoch; ``history`` is every epoch it has."""

    def on_finish(self, run: Run, outcome: Outcome) -> None:
        """``run`` ended."""


@dataclass
class _Live:
    run: Run
    started: float
    history: History
    placed: bool = False  # it started in a worker, at ``started``
    error: str | None = None
    traceback: str | None = None
    final: dict[str, Any] | None = None
    measured: dict[str, Any] | None = None


class Driver(Searcher):
    """Ray Tune's searcher over a :class:`RunPolicy`."""

    def __init__(self, policy: RunPolicy) -> None:
        # no metric: Ray would then reject the error report of a failing run (it has no accuracy)
        super().__init__()
        self.policy = policy
        self.live: dict[str, _Live] = {}
        # how many runs the cluster holds at once (run_tune sets it; None: propose whenever asked)
        self.slots: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the tuner's settings to restore an experiment; the driver's state is the
        # study's storage (resume goes through it), so the pickle keeps nothing of it.
        return {}

    @property
    def unfinished(self) -> int:
        """Runs Ray had when it stopped (Ctrl-C): cut off, to be run again next time."""
        return len(self.live)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self._may_propose():
            return None  # Ray Tune asks again later
        run = self.policy.next_run()
        if run is None:
            return Searcher.FINISHED
        if run == WAIT:
            return None  # Ray Tune asks again later
        self.live[trial_id] = _Live(run, time.time(), list(run.history))
        return {
            "key": run.key,
            "model": run.model,
            "recipe": run.recipe,
            "folder": str(run.folder) if run.folder else None,
            "cost_point": run.cost_point,
            "measure": run.measure,
        }

    def _may_propose(self) -> bool:
        """A free slot gets a run at once; beyond the slots one run waits, ready for the next slot
        to free, proposed once every other run is in a worker. A proposal made earlier would know
        fewer finished runs; one made later would keep a free slot waiting on the driver."""
        if self.slots is None or len(self.live) < self.slots:
            return True
        return len(self.live) == self.slots and all(live.placed for live in self.live.values())

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        live = self.live.get(trial_id)
        if live is None:
            return
        if "started_at" in result and not live.placed:
            # the run's first report (the trainable's, before anything else): its wall time counts
            # from its start in a worker, not from its proposal, as the time it waited for a free
            # slot is no time spent on it
            live.started, live.placed = max(live.started, result["started_at"]), True
        if "error" in result:
            live.error, live.traceback = result["error"], result.get("traceback", "")
        elif "measured" in result:
            live.measured = json.loads(result["measured"])
        elif "finished" in result:
            live.final = result
        elif "epoch" in result:
            metrics = {k: result[k] for k in METRICS if k in result}
            # a retried run starts over, a resumed one reports from its checkpoint's epoch on
            live.history = [h for h in live.history if h["epoch"] < metrics["epoch"]] + [metrics]
            self.policy.on_epoch(live.run, live.history)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        live = self.live.get(trial_id)
        if live is None:
            return
        # Ray skips on_trial_result for the result its scheduler stopped a run on
        if result and not error and "error" not in result and live.final is None and _unseen(result, live):
            self.on_trial_result(trial_id, result)
        del self.live[trial_id]
        seconds = time.time() - live.started
        if error or live.error is not None:
            outcome = Outcome(
                "failed",
                live.history,
                seconds,
                error=live.error or "the run's worker failed",
                traceback=live.traceback,
                measured=live.measured,
            )
        elif live.final is not None:
            outcome = Outcome(
                "finished",
                json.loads(live.final["history"]),
                seconds,
                resumed_from_epoch=int(live.final["resumed_from_epoch"]),
                measured=live.measured,
            )
        else:
            outcome = Outcome("stopped", live.history, seconds, measured=live.measured)
        self.policy.on_finish(live.run, outcome)


def _unseen(result: dict, live: _Live) -> bool:
    return "finished" in result or not live.history or result.get("epoch", 0) > live.history[-1]["epoch"]
