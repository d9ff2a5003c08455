"""`kwsearch search` as a user runs it, in subprocesses: resume after the driver is killed with
SIGKILL (a running trial continues from its last finished epoch), and a search that joins a Ray
cluster started with `ray start --head`."""

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from kwsearch.records import StudyStore
from tests.helpers import ray_trials, status_of, stored_trials, tiny_study, wait_for_no_members

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1", "PYTHONUNBUFFERED": "1"}


def identity(trial):
    return json.dumps([trial.user_attrs["config"], trial.user_attrs.get("seed", 0)], sort_keys=True)


def ready_to_kill(db: Path, study: str) -> bool:
    """In Optuna study ``study``, two trials finished and one running midway (read with sqlite3:
    opening the storage with Optuna while the driver creates it would race on its tables)."""
    if not db.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=5)) as connection:
            of_study = "JOIN studies s ON t.study_id = s.study_id WHERE s.study_name = ?"
            states = dict(
                connection.execute(
                    f"SELECT t.state, count(*) FROM trials t {of_study} GROUP BY t.state", (study,)
                ).fetchall()
            )
            histories = connection.execute(
                "SELECT a.value_json FROM trial_user_attributes a JOIN trials t ON a.trial_id = t.trial_id "
                f"{of_study} AND t.state = 'RUNNING' AND a.key = 'history'",
                (study,),
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return False
    # at most 2 of its 4 epochs done, so that it is still running when the signal lands
    midway = [h for (h,) in histories if 1 <= len(json.loads(h)) <= 2]
    return states.get("COMPLETE", 0) >= 2 and len(midway) == 1


def start_search_until_one_runs(tmp_path, name: str, seed: int, trials: int, kill_in: str = "", **settings):
    """Start a tiny search (4 epochs a trial, one at a time) in its own process session and wait
    until two trials finished and a third is midway, in the study or the companion named by
    ``kill_in`` (".confirmations"): (command, run folder, driver process)."""
    study = tiny_study(
        name,
        {"dropout": {"float": [0.0, 0.5]}},
        proxy={"epochs": 4, "batch_size": 64, "val_size": 64, "augment": False},
        sampler={"name": "random", "seed": seed},
        budget={"trials": trials},
        resources={"cpu": 1, "max_concurrent": 1, "threads": 1},
        **settings,
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    command = [str(BIN / "kwsearch"), "search", str(path), "--json", "--runs-dir", str(tmp_path / "runs")]
    run_dir = tmp_path / "runs" / name
    driver = subprocess.Popen(
        command, cwd=tmp_path, env=ENV, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 180
    while not ready_to_kill(run_dir / "study.db", name + kill_in):
        if driver.poll() is not None or time.time() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
            output = driver.communicate()
            raise AssertionError(f"the search never had 2 finished trials and one running: {output}")
        time.sleep(0.1)
    return command, run_dir, driver


def test_resume_after_kill_9_loses_and_duplicates_no_trial(tmp_path):
    command, run_dir, driver = start_search_until_one_runs(tmp_path, "resume", seed=0, trials=4)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and every process it started
    driver.wait(timeout=30)
    leftover = wait_for_no_members(driver.pid, seconds=15)
    assert leftover == [], "processes of the killed driver outlived it"

    before = {t.number: t for t in stored_trials(run_dir, "resume")}
    finished = {n: t for n, t in before.items() if status_of(t) == "complete"}
    interrupted = [n for n, t in before.items() if status_of(t) == "running"]
    assert len(finished) >= 2 and len(interrupted) == 1

    again = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    after = {t.number: t for t in stored_trials(run_dir, "resume")}
    trained = [t for t in after.values() if t.user_attrs.get("trained")]
    assert len(trained) == 4 == summary["complete"] == summary["trials"]
    assert summary["running"] == summary["failed"] == 0
    # the finished trials kept their numbers and values; the interrupted one re-ran under its number
    for number, trial in finished.items():
        assert after[number].values == trial.values
        assert after[number].user_attrs["history"] == trial.user_attrs["history"]
    assert status_of(after[interrupted[0]]) == "complete"
    assert after[interrupted[0]].params == before[interrupted[0]].params
    assert len(after[interrupted[0]].user_attrs["history"]) == 4
    # ... from its last finished epoch: its checkpoint (written before the epoch was stored)
    done_before = before[interrupted[0]].user_attrs["history"]
    (resumed,) = [
        t["last_result"]["resumed_from_epoch"]
        for t in ray_trials(run_dir).values()
        if t["config"]["key"] == str(interrupted[0]) and "resumed_from_epoch" in t["last_result"]
    ]
    assert 1 <= len(done_before) <= resumed <= len(done_before) + 1

    def timed(history):  # an epoch trained again would take another time
        return [(int(h["epoch"]), h["train_seconds"]) for h in history]

    assert timed(after[interrupted[0]].user_attrs["history"])[: len(done_before)] == timed(done_before)
    assert list((run_dir / "checkpoints").iterdir()) == []  # removed once each trial ended
    assert len({identity(t) for t in trained}) == len(trained)
    # a seeded sampler restarts its sequence: what it proposes again is stored as a duplicate
    for trial in after.values():
        if status_of(trial) == "duplicate":
            assert identity(trial) == identity(after[trial.user_attrs["duplicate_of"]])


def test_confirmation_runs_resume_after_kill_9_apart_from_the_budget(tmp_path):
    """`confirm: {top: 1, seeds: 3}`: after the 2-trial budget the cheapest front member trains
    with 3 more seeds; killed during the third, the same command finishes the confirmation under
    the same records, and the front is read on the mean of 4 runs."""
    command, run_dir, driver = start_search_until_one_runs(
        tmp_path, "confirm", seed=2, trials=2, kill_in=".confirmations", confirm={"top": 1, "seeds": 3}
    )
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    wait_for_no_members(driver.pid, seconds=15)
    store = StudyStore.open(f"sqlite:///{run_dir / 'study.db'}", "confirm")
    before = store.confirmations()
    assert sorted(c.status for c in before) == ["complete", "complete", "running"]

    again = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    after = store.confirmations()
    assert len(after) == 3 and all(c.status == "complete" for c in after)  # the killed one re-ran
    (confirmed,) = {c.confirms for c in after}
    assert sorted(c.seed for c in after) == [1, 2, 3] and all(len(c.history) == 4 for c in after)
    assert {(c.number, c.seed) for c in before if c.status == "complete"} <= {
        (c.number, c.seed) for c in after
    }
    # apart from the budget: the search trained its 2 trials, no more
    assert summary["complete"] == summary["trials"] == 2 and summary["confirmations"] == 3
    assert summary["accuracy"][str(confirmed)][3] == 4  # read on the mean of its 4 runs
    assert "confirmation of trial" in again.stderr


def test_ctrl_c_stops_the_search_with_exit_130_and_the_same_command_continues_it(tmp_path):
    command, _, driver = start_search_until_one_runs(tmp_path, "interrupt", seed=1, trials=3)
    try:
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C sends the terminal's foreground group
        out, err = driver.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, err
    assert json.loads(out.decode().strip().splitlines()[-1])["interrupted"] is True
    again = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["complete"] == 3 and summary["interrupted"] is False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_search_joins_a_ray_cluster_started_with_ray_start(tmp_path):
    study = tiny_study(
        "cluster",
        {"width": {"choice": [0.0625, 0.125]}},
        sampler={"name": "random", "seed": 0},
        budget={"trials": 2},
    )
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(study))
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="kwray", dir="/tmp")  # Ray's socket paths must stay short
    # --block keeps the head's processes in this session, so stopping it stops only this cluster
    # (`ray stop --force` would stop every Ray instance on the machine, other users' included)
    env = {**ENV, "RAY_AUTH_MODE": "token"}  # `ray start` turns token authentication on
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.time() + 120
        while subprocess.run(
            [str(BIN / "ray"), "status", f"--address={address}"], env=env, capture_output=True, timeout=60
        ).returncode:
            assert head.poll() is None, head.communicate()
            assert time.time() < deadline, "the Ray head never came up"
            time.sleep(1)
        result = subprocess.run(
            [
                str(BIN / "kwsearch"),
                "search",
                str(path),
                "--address",
                address,
                "--json",
                "--runs-dir",
                "runs",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert {"trials", "complete", "pruned", "failed", "infeasible", "pareto"} <= set(summary)
        assert summary["trials"] == summary["complete"] == 2
        assert summary["pruned"] == summary["failed"] == summary["infeasible"] == 0
        assert summary["pareto"] and all(isinstance(n, int) for n in summary["pareto"])
        # the trials ran in the cluster's workers (their logs are in its temp dir), not in a Ray
        # the driver started for itself
        pids = {t["last_result"]["pid"] for t in ray_trials(tmp_path / "runs" / "cluster").values()}
        logs = "\n".join(p.name for p in Path(temp_dir).glob("session_*/logs/python-core-worker-*.log"))
        assert pids and all(f"_{pid}.log" in logs for pid in pids)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
        try:
            head.wait(timeout=5)  # it may wait ~30 s on a GCS it stopped first: no need to
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        leftover = wait_for_no_members(head.pid, seconds=15)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert leftover == [], "the cluster's processes outlived its head"
