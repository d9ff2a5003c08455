"""Pareto reports: one self-contained HTML file per study, with the data behind it as CSV and
Parquet files and the front as a paper's table beside it; or one page comparing several studies.

    from kwsearch.report import load, write_comparison, write_report
    write_report(load("sqlite:///runs/demo/study.db", "demo"), Path("reports/demo.html"))
    write_comparison([load(url, "kw"), load(url, "odconv")], Path("reports/kw_vs_odconv.html"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kwsearch.report import paper_tables
from kwsearch.report.compare import compare
from kwsearch.report.compare import render as render_comparison
from kwsearch.report.data import ReportError, StudyData, load, replay_command
from kwsearch.report.page import render

__all__ = [
    "ComparisonFiles",
    "ReportError",
    "ReportFiles",
    "StudyData",
    "default_output",
    "load",
    "replay_command",
    "write_comparison",
    "write_report",
]


@dataclass
class ReportFiles:
    html: Path
    csv: Path
    parquet: Path
    history_csv: Path
    front_md: Path
    front_tex: Path


@dataclass
class ComparisonFiles:
    html: Path
    front_md: Path
    front_tex: Path


def default_output(name: str, folder: Path = Path("reports")) -> Path:
    """``reports/<name>.html``, the name made safe for a file name."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "study"
    return folder / f"{stem}.html"


def write_report(data: StudyData, out: Path) -> ReportFiles:
    """Write the page to ``out`` and, beside it, ``<stem>.csv`` and ``<stem>.parquet`` (one row
    per trial and baseline), ``<stem>.history.csv`` (one row per trial and epoch), and the front
    as a paper's table, ``<stem>.front.md`` and ``<stem>.front.tex``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        html=out,
        csv=out.with_suffix(".csv"),
        parquet=out.with_suffix(".parquet"),
        history_csv=out.with_suffix(".history.csv"),
        front_md=out.with_suffix(".front.md"),
        front_tex=out.with_suffix(".front.tex"),
    )
    paper = _paper_tables(paper_tables.front_rows(data), files.front_md, files.front_tex)
    table = data.trials.copy()
    table.to_csv(files.csv, index=False)
    for column in table.columns:  # Parquet wants one type per column; params mix numbers and labels
        if column.startswith("param:") and table[column].dtype == object:
            table[column] = table[column].map(lambda v: None if v is None else str(v))
    table.to_parquet(files.parquet, index=False)
    data.history.to_csv(files.history_csv, index=False)
    out.write_text(render(data, paper, (files.front_md.name, files.front_tex.name)), encoding="utf-8")
    return files


def write_comparison(studies: list[StudyData], out: Path) -> ComparisonFiles:
    """Write the page comparing ``studies`` (two or more, with the same objectives) to ``out``
    and, beside it, their fronts as a paper's table, ``<stem>.front.md`` and ``<stem>.front.tex``.
    Raises ReportError when the studies do not compare."""
    comparison = compare(studies)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = ComparisonFiles(out, out.with_suffix(".front.md"), out.with_suffix(".front.tex"))
    rows = [
        row
        for label, data in zip(comparison.labels, studies, strict=True)
        for row in paper_tables.front_rows(data, study=label)
    ]
    paper = _paper_tables(rows, files.front_md, files.front_tex)
    html = render_comparison(comparison, *paper, (files.front_md.name, files.front_tex.name))
    out.write_text(html, encoding="utf-8")
    return files


def _paper_tables(rows: list[paper_tables.FrontRow], markdown: Path, latex: Path) -> tuple[str, str]:
    """Write ``rows`` as Markdown and LaTeX tables; return both texts."""
    texts = (paper_tables.markdown(rows), paper_tables.latex(rows))
    markdown.write_text(texts[0], encoding="utf-8")
    latex.write_text(texts[1], encoding="utf-8")
    return texts
