"""Replay: the best configurations of a study trained with its full recipe, once per seed, on Ray;
results stored beside the study, linked to the proxy trials they replay.

``run_replay`` (in :mod:`kwsearch.replay.runner`, which imports Ray) runs or resumes a replay;
``load`` rebuilds a replayed model; how far the proxy ranking held is
:func:`kwsearch.stats.proxy_agreement`.
"""

from kwsearch.replay.export import load
from kwsearch.replay.select import ReplayError, select_trials

__all__ = ["ReplayError", "load", "run_replay", "select_trials"]


def __getattr__(name: str):
    if name == "run_replay":  # lazily: it imports Ray
        from kwsearch.replay.runner import run_replay

        return run_replay
    raise AttributeError(f"module 'kwsearch.replay' has no attribute {name!r}")
