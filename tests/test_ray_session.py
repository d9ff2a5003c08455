"""The Ray a driver starts for itself (:func:`kwsearch.execution.ray_session`)."""

import os
import time

import pytest

from kwsearch.execution import ray_session
from kwsearch.execution._ray import PRESTART_ENV
from tests.helpers import descendants

pytestmark = pytest.mark.slow


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as cmdline:
            return cmdline.read().replace("\0", " ")
    except OSError:
        return ""


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the processes from /proc")
def test_a_local_session_starts_no_idle_worker_processes_ahead_of_its_runs(monkeypatch):
    import ray

    assert not ray.is_initialized()
    monkeypatch.delenv(PRESTART_ENV, raising=False)
    with ray_session(None) as node:
        assert node["CPU"] >= 1
        time.sleep(3)  # Ray's prestarted workers (one per CPU) were up within 2 s of its start
        processes = [_command(pid) for pid in descendants(os.getpid())]
        assert any("raylet" in command for command in processes)  # the Ray this session started
        assert [command for command in processes if command.startswith("ray::IDLE")] == []
    assert not ray.is_initialized()
