"""The live view of a running search: trials by status, the budget spent, the current front and
its hypervolume. A rich panel in a terminal; one line per finished trial when piped."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from kwsearch.records import StudyStore, front_of
from kwsearch.search.summary import StudySummary, summarize

REFRESH_SECONDS = 1.0


def _format(name: str, value: float) -> str:
    return f"{value:.4f}" if name == "accuracy" else f"{value / 1e6:.3f}M"


class SearchProgress:
    """Call :meth:`changed` whenever the storage changed; it redraws (or, piped, prints the trials
    finished since) at most once a second, and always at the end."""

    def __init__(
        self,
        store: StudyStore,
        budget_line: Callable[[StudySummary], str],
        enabled: bool | None = None,
    ) -> None:
        self.store = store
        self.objectives = store.record.objectives
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
            self._live.update(self._render(summarize(self.store)))
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

    def _render(self, summary: StudySummary) -> Group:
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
        counts.add_row("", self.budget_line(summary), f"hypervolume {summary.hypervolume:.4f}")
        front = Table(title="current front", title_justify="left")
        front.add_column("trial", justify="right")
        for name in summary.objectives:
            front.add_column(name, justify="right")
        front.add_column("config")
        objectives = summary.objectives
        for trial in sorted(front_of(self.store.trials(), objectives), key=lambda t: t.number):
            values = trial.objectives(objectives)
            front.add_row(
                str(trial.number),
                *(_format(n, values[n]) for n in objectives),
                " ".join(f"{k}={v}" for k, v in trial.params.items()),
            )
        for label, values in summary.baselines.items():
            front.add_row(f"[dim]{label}[/]", *(f"[dim]{_format(n, values[n])}[/]" for n in objectives), "")
        return Group(counts, front)
