"""The search engine: spaces, studies, budgets, samplers, Ray Tune execution, early stopping and
the study's storage (the record that reports and replays read)."""

from kwsearch.search.pareto import crowding_distance, dominates, hypervolume, non_dominated_sort, pareto_front
from kwsearch.search.records import StudySummary, front_of, status_of, summarize, trial_objectives
from kwsearch.search.space import Dimension, Space, SpaceError
from kwsearch.search.study import Study, StudyError, load_study, parse_study

__all__ = [
    "Dimension",
    "Space",
    "SpaceError",
    "Study",
    "StudyError",
    "StudySummary",
    "crowding_distance",
    "dominates",
    "front_of",
    "hypervolume",
    "load_study",
    "non_dominated_sort",
    "pareto_front",
    "parse_study",
    "status_of",
    "summarize",
    "trial_objectives",
]
