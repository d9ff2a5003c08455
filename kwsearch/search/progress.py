"""The live view of a running search: trials by status, the budget spent, each running trial's
progress, the time left, the current front and its hypervolume. A rich panel in a terminal; one
line per finished trial when piped."""

from __future__ import annotations

import datetime
import statistics
import sys
import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from kwsearch.formats import format_accuracy, format_cost, format_duration
from kwsearch.records import FINISHED, StudyStore, TrialRecord, front_of
from kwsearch.search.summary import StudySummary, summarize

REFRESH_SECONDS = 1.0


def _format(name: str, value: float) -> str:
    return format_accuracy(value) if name == "accuracy" else format_cost(value, name)


def time_left(trials: list[TrialRecord], wanted: int | None, epochs: int) -> float | None:
    """Seconds until the trial budget (``wanted`` trained trials) is spent, estimated from the
    trials so far: each running trial's remaining epochs at the mean epoch time, and each trial
    not yet started at the mean time of a finished trained trial (pruned ones included, so early
    stopping is counted), run as many at a time as run now. None without a trial budget or
    before a trained trial finished."""
    finished = [t for t in trials if t.trained and t.status in FINISHED and t.seconds is not None]
    if wanted is None or not finished:
        return None
    running = [t for t in trials if t.status == "running"]
    per_trial = statistics.fmean(t.seconds for t in finished)
    epoch_times = [e["epoch_seconds"] for t in finished for e in t.history if "epoch_seconds" in e]
    per_epoch = statistics.fmean(epoch_times) if epoch_times else per_trial / max(1, epochs)
    started = len(finished) + len(running)
    waiting = max(0, wanted - started) * per_trial
    ongoing = sum(max(0, epochs - len(t.history)) * per_epoch for t in running)
    return (waiting + ongoing) / max(1, len(running))


class SearchProgress:
    """Call :meth:`changed` whenever the storage changed; it redraws (or, piped, prints the trials
    finished since) at most once a second, and always at the end."""

    def __init__(
        self,
        store: StudyStore,
        budget_line: Callable[[StudySummary], str],
        enabled: bool | None = None,
        *,
        trials: int | None = None,
    ) -> None:
        """``trials``: the trained trials wanted (the time left is estimated towards it)."""
        self.store = store
        self.objectives = store.record.objectives
        self.epochs = int((store.record.settings.get("proxy") or {}).get("epochs") or 1)
        self.trials_wanted = trials
        self.budget_line = budget_line
        self.interactive = sys.stderr.isatty() if enabled is None else enabled
        self._console = Console(stderr=True)
        self._live: Live | None = None
        self._last_draw = 0.0
        self._announced: set[tuple[str, int]] = set()

    def __enter__(self) -> SearchProgress:
        if self.interactive:
            self._live = Live(console=self._console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        self.changed(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self.changed(force=True)
        if self._live is not None:
            self._live.__exit__(*exc)

    def changed(self, force: bool = False) -> None:
        # at most once a second: reading the whole study for every proposal and epoch would cost
        # the driver time that grows with the study
        now = time.monotonic()
        if not force and now - self._last_draw < REFRESH_SECONDS:
            return
        self._last_draw = now
        if self.interactive:
            self._live.update(self.render())
        else:
            self._announce_finished()

    def _announce_finished(self) -> None:
        objectives = self.objectives
        kinds = (
            (self.store.baselines(), "baseline"),
            (self.store.trials(), "trial"),
            (self.store.confirmations(), "confirmation"),
        )
        for trials, kind in kinds:
            for trial in trials:
                key = (kind, trial.number)
                if trial.status in ("running", "waiting", "duplicate") or key in self._announced:
                    continue
                self._announced.add(key)
                values = trial.objectives(objectives)
                detail = (
                    "  ".join(f"{n} {_format(n, v)}" for n, v in values.items())
                    if values
                    else trial.error or ""
                )
                label = trial.baseline or (
                    f"of trial {trial.confirms} (seed {trial.seed})"
                    if kind == "confirmation"
                    else str(trial.number)
                )
                print(f"{kind} {label}: {trial.status}  {detail}", file=sys.stderr, flush=True)

    def render(self) -> Group:
        """The panel for the study as stored now."""
        summary = summarize(self.store)
        trials = self.store.trials()
        counts = Table.grid(padding=(0, 2))
        counts.add_row(
            f"[bold]{summary.name}[/]",
            f"complete {summary.complete}",
            f"running {summary.running}",
            f"pruned {summary.pruned}",
            f"failed {summary.failed}",
            f"infeasible {summary.infeasible}",
            *([f"confirmation runs {summary.confirmations}"] if summary.confirmations else []),
        )
        left = time_left(trials, self.trials_wanted, self.epochs)
        counts.add_row(
            "",
            self.budget_line(summary),
            f"hypervolume {summary.hypervolume:.4f}",
            # without a trial budget (wall clock, GPU hours, a grid) there is nothing to count down
            *(
                []
                if self.trials_wanted is None
                else ["time left " + ("estimating" if left is None else f"about {format_duration(left)}")]
            ),
        )
        front = Table(title="current front", title_justify="left")
        front.add_column("trial", justify="right")
        for name in summary.objectives:
            front.add_column(name, justify="right")
        front.add_column("config")
        objectives = summary.objectives
        for trial in sorted(front_of(trials, objectives), key=lambda t: t.number):
            values = trial.objectives(objectives)
            front.add_row(
                str(trial.number),
                *(_format(n, values[n]) for n in objectives),
                " ".join(f"{k}={v}" for k, v in trial.params.items()),
            )
        for label, values in summary.baselines.items():
            front.add_row(f"[dim]{label}[/]", *(f"[dim]{_format(n, values[n])}[/]" for n in objectives), "")
        return Group(counts, self._running(trials), front)

    def _running(self, trials: list[TrialRecord]) -> Table:
        """One row per running trial: its epoch, its accuracy so far, how long it has run."""
        table = Table(title="running", title_justify="left")
        for column in ("trial", "epoch", "accuracy so far", "elapsed"):
            table.add_column(column, justify="right")
        table.add_column("config")
        now = datetime.datetime.now()
        for trial in trials:
            if trial.status != "running":
                continue
            elapsed = format_duration((now - trial.started).total_seconds()) if trial.started else "–"
            table.add_row(
                str(trial.number),
                f"{len(trial.history)}/{self.epochs}",
                format_accuracy(trial.accuracy),
                elapsed,
                " ".join(f"{k}={v}" for k, v in trial.params.items()),
            )
        return table
