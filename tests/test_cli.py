"""The installed `kwsearch` console script, run as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KWSEARCH = Path(sys.executable).parent / "kwsearch"


def run(*args):
    return subprocess.run([str(KWSEARCH), *args], capture_output=True, text=True, timeout=120, env=os.environ)


def test_help_lists_each_subcommand_with_a_description():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert "doctor" in result.stdout
    assert "Report what this machine offers kwsearch" in result.stdout


def test_no_arguments_prints_help():
    result = run()
    assert "Usage" in result.stdout + result.stderr


def test_version_prints_the_version():
    from kwsearch import __version__

    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__


def test_doctor_says_where_the_data_set_was_found():
    from kwsearch.data import FASHION_MNIST, locate_files

    result = run("doctor")
    assert result.returncode == 0, result.stderr
    try:
        locate_files(FASHION_MNIST, download=False)
    except Exception:
        pytest.skip("Fashion-MNIST is not installed here")
    line = next(line for line in result.stdout.splitlines() if "fashion_mnist" in line)
    assert "found in /" in line and Path(line.split("found in ")[1].strip()).is_dir()


def test_doctor_json_reports_the_environment():
    result = run("doctor", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    import torch

    assert facts["torch"] == torch.__version__
    assert facts["cuda_available"] == torch.cuda.is_available()
    assert facts["fashion_mnist"] == "found" or facts["fashion_mnist"].startswith("missing:")
    assert all(Path(folder).is_dir() for folder in facts["fashion_mnist_folders"])
    assert bool(facts["fashion_mnist_folders"]) == (facts["fashion_mnist"] == "found")


def test_unknown_subcommand_is_a_usage_error():
    result = run("frobnicate")
    assert result.returncode == 2


EXITING = """
import atexit, gc, sys, threading, time
from kwsearch.cli import main

gc.disable()  # the interpreter's final collection runs all the same

class Cycle:  # garbage in a reference cycle: only a collection frees it
    def __del__(self):
        print("collected at exit", flush=True)

cycle = Cycle()
cycle.me = cycle
del cycle
atexit.register(lambda: print("atexit handler ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished"))).start()
sys.argv = ["kwsearch", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [(["--version"], 0, ""), (["search", "missing.yaml"], 2, "missing.yaml: cannot read")],
)
def test_the_command_ends_without_the_final_collection_but_with_everything_else_an_exit_does(
    tmp_path, args, code, message
):
    """main() ends the process itself: the interpreter's last garbage collection (1 to 2 s once
    torch and Ray are loaded) is skipped, while running threads finish, atexit handlers run,
    buffered output is written and the exit status is the command's."""
    result = subprocess.run(
        [sys.executable, "-c", EXITING, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == code, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["thread finished", "atexit handler ran"], result.stdout
    assert "collected at exit" not in result.stdout
    assert message in result.stderr
    if code == 0:
        from kwsearch import __version__

        assert lines[0] == __version__
