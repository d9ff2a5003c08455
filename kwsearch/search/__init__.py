"""The search engine: spaces, studies, budgets, samplers, the search policy run on Ray, early
stopping and the study's summary. Studies are stored through :mod:`kwsearch.records`."""

from kwsearch.search.space import Dimension, Space, SpaceError
from kwsearch.search.study import Study, StudyError, load_study, parse_study
from kwsearch.search.summary import StudySummary, summarize

__all__ = [
    "Dimension",
    "Space",
    "SpaceError",
    "Study",
    "StudyError",
    "StudySummary",
    "load_study",
    "parse_study",
    "summarize",
]
