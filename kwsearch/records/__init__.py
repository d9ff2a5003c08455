"""A study's record in its Optuna storage: the only code that converts to and from Optuna's trial
and study attributes.

Search, replay, calibration and report read and write studies through :class:`StudyStore` and
the typed records it returns (:class:`StudyRecord`, :class:`TrialRecord`, :class:`ReplayRecord`,
:class:`CalibrationPlan`, :class:`CalibrationRecord`); a record written by one release is read by
the next (``StudyRecord.schema``).

    store = StudyStore.open("sqlite:///runs/demo/study.db", "demo")
    front = front_of(store.trials(), store.record.objectives)
"""

from kwsearch.records._access import (
    Storage,
    StoreError,
    StudyBusy,
    check_free,
    check_storage,
    default_storage,
    driver_lock,
    open_storage,
)
from kwsearch.records._front import (
    front_of,
    normalized_hypervolume,
    objective_point,
    resolved_reference_point,
    spread_along_front,
)
from kwsearch.records._store import StudyStore, is_companion
from kwsearch.records._study import SCHEMA, CalibrationConfig, CalibrationPlan, StudyRecord
from kwsearch.records._trial import (
    FINISHED,
    MEASURED,
    CalibrationRecord,
    Costs,
    History,
    ReplayRecord,
    Status,
    TrialRecord,
)
from kwsearch.records._write import CalibrationWriter, ReplayWriter, TrialWriter

__all__ = [
    "FINISHED",
    "MEASURED",
    "SCHEMA",
    "CalibrationConfig",
    "CalibrationPlan",
    "CalibrationRecord",
    "CalibrationWriter",
    "Costs",
    "History",
    "ReplayRecord",
    "ReplayWriter",
    "Status",
    "Storage",
    "StoreError",
    "StudyBusy",
    "StudyRecord",
    "StudyStore",
    "TrialRecord",
    "TrialWriter",
    "check_free",
    "check_storage",
    "default_storage",
    "driver_lock",
    "front_of",
    "is_companion",
    "normalized_hypervolume",
    "objective_point",
    "open_storage",
    "resolved_reference_point",
    "spread_along_front",
]
