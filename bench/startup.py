"""What a user waits for around `kwsearch search`: a second driver's refusal, a resume after
`kill -9` (until the interrupted trial trains again, and from which epoch), and refusals that
need the Ray cluster (`--address` nobody listens on, a trial no node can hold).

    .venv/bin/python bench/startup.py [--before PATH] [--cap 120]

Runs a tiny search (generated 12x12 data, one trial at a time, 6 epochs a trial) in a temporary
folder through the `kwsearch` command of this checkout; with ``--before PATH`` (another checkout
of kwsearch, e.g. `git worktree add /tmp/base COMMIT`) every scenario runs with that code too,
in the same run, and the ratio after/before is printed. A command still running after ``--cap``
seconds is killed and printed as "> cap".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STUDY = {
    "name": "startup",
    "space": {
        "backbone": "resnet18_cifar",
        "num_classes": 4,
        "in_chans": 1,
        "input_size": [12, 12],
        "width": 0.0625,
        "dropout": {"float": [0.0, 0.5]},
        "conv": {"family": "static"},
    },
    "data": {
        "name": "synthetic",
        "options": {
            "num_classes": 4,
            "height": 12,
            "width": 12,
            "channels": 1,
            "num_train": 3000,
            "num_test": 64,
        },
    },
    "proxy": {"epochs": 6, "batch_size": 64, "val_size": 64, "augment": False},
    "early_stopping": False,
    "sampler": {"name": "random", "seed": 0},
    "budget": {"trials": 3},
    "resources": {"cpu": 1, "max_concurrent": 1, "threads": 1},
    "baselines": [],
}


def command(code: Path | None, *args: str) -> tuple[list[str], dict[str, str]]:
    """The kwsearch command line, run with the checkout ``code`` (None: this environment's)."""
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return [sys.executable, "-c", "from kwsearch.cli import main; main()", *args], env


def start(code: Path | None, folder: Path, *args: str) -> subprocess.Popen:
    argv, env = command(code, "search", "study.yaml", "--runs-dir", "runs", "--json", *args)
    return subprocess.Popen(
        argv, cwd=folder, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(2)  # Ray's daemons in the session go with it


def running_histories(folder: Path) -> dict[int, list[dict]]:
    """Trial number -> its stored epochs, for the study's RUNNING trials (read with sqlite3)."""
    db = folder / "runs" / "startup" / "study.db"
    if not db.exists():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=5)) as connection:
            rows = connection.execute(
                "SELECT t.number, a.value_json FROM trial_user_attributes a JOIN trials t "
                "ON a.trial_id = t.trial_id JOIN studies s ON t.study_id = s.study_id "
                "WHERE s.study_name = 'startup' AND t.state = 'RUNNING' AND a.key = 'history'"
            ).fetchall()
    except sqlite3.OperationalError:
        return {}
    return {number: json.loads(history) for number, history in rows}


def wait_for(condition, cap: float) -> float | None:
    started = time.time()
    while time.time() - started < cap:
        if condition():
            return time.time() - started
        time.sleep(0.05)
    return None


def timed_exit(code: Path | None, folder: Path, cap: float, *args: str) -> tuple[float | None, int | None]:
    """Seconds until ``kwsearch search ARGS`` exits (None past ``cap``) and its exit code."""
    started = time.time()
    process = start(code, folder, *args)
    try:
        process.wait(timeout=cap)
        return time.time() - started, process.returncode
    except subprocess.TimeoutExpired:
        return None, None
    finally:
        stop(process)


def scenarios(code: Path | None, cap: float) -> dict[str, tuple[float | None, str]]:
    found: dict[str, tuple[float | None, str]] = {}
    with tempfile.TemporaryDirectory(prefix="kwstartup") as temp:
        folder = Path(temp)
        (folder / "study.yaml").write_text(yaml.safe_dump(STUDY))
        first = start(code, folder)
        try:
            # a trial midway: at least one of its 6 epochs stored, at most 3
            def midway() -> bool:
                return any(1 <= len(h) <= 3 for h in running_histories(folder).values())

            assert wait_for(midway, cap), "no trial ran"
            seconds, returncode = timed_exit(code, folder, cap)
            found["second driver refused"] = (seconds, f"exit {returncode}")
            assert wait_for(midway, cap), "no trial ran"  # (again: the first may have finished)
            (number, before), *_ = [(n, h) for n, h in running_histories(folder).items() if h]
        finally:
            stop(first)
        started = time.time()
        again = start(code, folder)
        try:
            # the interrupted trial trains again: a new epoch stored (its own next one, or a
            # first epoch trained again, which took another time)
            resumed = wait_for(lambda: running_histories(folder).get(number, before) != before, cap)
            after = running_histories(folder).get(number) or []
            continued = bool(after) and after[0]["train_seconds"] == before[0]["train_seconds"]
            found["resume: the interrupted trial's next epoch"] = (
                resumed,
                f"it had {len(before)} epochs, then stored epoch {int(after[-1]['epoch']) if after else '?'}"
                + (" (continued)" if continued else " (started over)"),
            )
            done = again.wait(timeout=cap)
            found["resume: the whole resumed run"] = (time.time() - started, f"exit {done}")
        except subprocess.TimeoutExpired:
            found["resume: the whole resumed run"] = (None, "")
        finally:
            stop(again)
        seconds, returncode = timed_exit(code, folder, cap, "--name", "other", "--address", "127.0.0.1:1")
        found["--address nobody listens on"] = (seconds, f"exit {returncode}")
        (folder / "study.yaml").write_text(yaml.safe_dump({**STUDY, "resources": {"cpu": 64}}))
        seconds, returncode = timed_exit(code, folder, cap, "--name", "big")
        found["a trial no node can hold (cpu: 64)"] = (seconds, f"exit {returncode}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="another checkout to compare with")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds after which a command is killed")
    args = parser.parse_args()
    after = scenarios(None, args.cap)
    before = scenarios(args.before.resolve(), args.cap) if args.before else None

    def show(seconds: float | None) -> str:
        return f"{seconds:7.1f} s" if seconds is not None else f"> {args.cap:.0f} s".rjust(9)

    for name, (seconds, note) in after.items():
        line = f"{name:<45} {show(seconds)}  {note}"
        if before is not None:
            then, then_note = before[name]
            ratio = f"{seconds / then:.2f}x" if seconds and then else "-"
            line += f"   before {show(then)}  {then_note}   after/before {ratio}"
        print(line)


if __name__ == "__main__":
    main()
