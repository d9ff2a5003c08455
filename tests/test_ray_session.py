"""The Ray a driver starts for itself (:func:`kwsearch.execution.ray_session`)."""

import os
import time

import pytest

from kwsearch.execution import ray_session

pytestmark = pytest.mark.slow


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue  # ended meanwhile
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


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
    monkeypatch.delenv("RAY_prestart_worker_first_driver", raising=False)
    with ray_session(None) as node:
        assert node["CPU"] >= 1
        time.sleep(3)  # Ray's prestarted workers (one per CPU) were up within 2 s of its start
        processes = [_command(pid) for pid in _descendants(os.getpid())]
        assert any("raylet" in command for command in processes)  # the Ray this session started
        assert [command for command in processes if command.startswith("ray::IDLE")] == []
    assert not ray.is_initialized()
