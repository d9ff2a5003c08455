"""Calibration: how well a study's proxy ranks configurations like full training, measured on
configs spread over the space's cost range, with the proxy's own seed-to-seed noise and the
cheaper proxies its learning curves hold. Stored beside the study (its plan and runs).

``run_calibration`` (in :mod:`kwsearch.calibrate.runner`, which imports Ray) runs or resumes one;
:func:`calibration_of` reads a stored one back (what ``kwsearch report`` shows, without torch or
Ray).
"""

from kwsearch.calibrate.analysis import TARGET, Calibration, CheapProxy, analyse, calibration_of

__all__ = [
    "TARGET",
    "Calibration",
    "CalibrationError",
    "CheapProxy",
    "analyse",
    "calibration_of",
    "run_calibration",
]


def __getattr__(name: str):
    # lazily: choosing configs builds models (torch), running them needs Ray
    if name == "CalibrationError":
        from kwsearch.calibrate.select import CalibrationError

        return CalibrationError
    if name == "run_calibration":
        from kwsearch.calibrate.runner import run_calibration

        return run_calibration
    raise AttributeError(f"module 'kwsearch.calibrate' has no attribute {name!r}")
