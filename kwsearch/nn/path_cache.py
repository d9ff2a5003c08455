"""Where measured path choices are kept between runs: one small JSON file per user.

The file is ``$KWSEARCH_PATH_CACHE`` when set, else ``kwsearch/paths.json`` under the user's cache
folder (``$XDG_CACHE_HOME``, or ``~/.cache``). It holds one section per device, torch version and
revision of the paths' code (a choice timed on one GPU, under one torch, or of one revision of
the paths says nothing about another), and in each an entry per layer signature and input: the
path taken and the milliseconds each path took.

The file is always rewritten whole through a temporary file renamed into place, so a reader sees
an old or a new file, never part of one. A file that does not parse (corrupt, truncated, another
format) counts as empty and is replaced by the next write. A write first re-reads the file and
merges, so processes sharing it (several trials on one machine) keep each other's entries unless
two write at the same instant; then one's new entries are lost and timed again next time. Of two
processes that timed the same layer, the first to write decides for every later run.
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kwsearch.atomic import write_text_atomically

CACHE_ENV = "KWSEARCH_PATH_CACHE"
FORMAT = 1
# The paths' own revision: raised whenever a path's implementation changes how fast it runs, so
# that timings of the old code are not read as the new code's (they stay in the file, unread).
# 2: the CPU's chunked assembling paths and reordered batched_matmul and input_mixing (issue 17).
# 3: KernelWarehouse's mixing and input_mixing products and ODConv's bank product in float32 on a
#    CPU on oneDNN (issue 17).
PATHS_REVISION = 3


def cache_file() -> Path:
    """The path-choice cache file this process uses (it need not exist yet)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kwsearch" / "paths.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    """The cache section of ``device`` under this torch and these paths: the processor (and, on
    a CPU, the thread count, which moves the balance between paths), the torch version and
    :data:`PATHS_REVISION`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        name = f"{_cpu_model()}, {torch.get_num_threads()} threads"
    else:
        name = device.type
    return f"{device.type}: {name}; torch {torch.__version__}; paths r{PATHS_REVISION}"


def _read_sections(file: Path) -> dict[str, dict[str, Any]]:
    """Every device section of ``file``; empty when it is missing or does not parse."""
    try:
        content = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        return {}
    sections = content.get("devices")
    if not isinstance(sections, dict):
        return {}
    return {name: entries for name, entries in sections.items() if isinstance(entries, dict)}


class PathCache:
    """The measured choices of one device under this torch, read from ``file`` (default:
    :func:`cache_file`)."""

    def __init__(self, device: torch.device, file: Path | None = None) -> None:
        self.file = file if file is not None else cache_file()
        self.section = device_description(device)
        self.entries: dict[str, Any] = _read_sections(self.file).get(self.section, {})

    def lookup(self, key: str) -> tuple[str, dict[str, float]] | None:
        """(path, milliseconds by path) stored under ``key``, or None (absent or malformed)."""
        entry = self.entries.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return None
        times = entry.get("milliseconds")
        times = times if isinstance(times, dict) else {}
        return entry["path"], {p: float(t) for p, t in times.items() if isinstance(t, int | float)}

    def store(self, choices: Mapping[str, tuple[str, Mapping[str, float]]]) -> None:
        """Add ``choices`` (key -> (path, milliseconds by path)) to the file, merged with what it
        holds now. An entry another process wrote since this cache was read stays: once stored, a
        choice only changes when this process re-timed it, so runs that read it (a resumed trial)
        agree. A file that cannot be written gives a warning: the choices stay in force for this
        process and are timed again by the next."""
        if not choices:
            return
        sections = _read_sections(self.file)
        current = sections.setdefault(self.section, {})
        for key, (path, times) in choices.items():
            if key in current and current[key] != self.entries.get(key):
                continue  # written by another process since we read the file: theirs stands
            current[key] = {"path": path, "milliseconds": {p: round(t, 4) for p, t in times.items()}}
        self.entries = current
        text = json.dumps({"format": FORMAT, "devices": sections}, indent=1, sort_keys=True)
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(text + "\n", self.file)
        except OSError as error:
            warnings.warn(f"could not write the path-choice cache {self.file}: {error}", stacklevel=2)
