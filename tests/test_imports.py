"""The layers import one way: no import cycle among kwsearch's modules, and reading a study (the
report) never loads the search's runner or Ray."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "kwsearch"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the kwsearch modules it imports when it is imported (module-level statements;
    imports inside functions run later, on purpose)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: kwsearch imports absolutely"
                base = node.module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_kwsearch_modules():
    graph = import_graph()
    assert len(graph) > 50 and "kwsearch.records._store" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_writing_a_report_loads_neither_ray_nor_the_search_runner(tmp_path):
    study = tmp_path / "study.db"
    shutil.copy(Path(__file__).parent / "data" / "schema1" / "study.db", study)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from kwsearch.report import load, write_report\n"
        f"write_report(load('sqlite:///{study}', 'v1study'), Path({str(tmp_path / 'r.html')!r}))\n"
        "unwanted = ('ray', 'kwsearch.search.runner')\n"
        "print([m for m in sys.modules if m in unwanted or m.startswith('ray.')])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "r.html").stat().st_size > 1000
