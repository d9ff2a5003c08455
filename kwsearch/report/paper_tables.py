"""The front as a paper prints it: a Markdown and a LaTeX (booktabs) table of the baselines and
the Pareto-optimal trials by cost, with parameters (and MACs) in millions and the accuracy in
percent with its 95% interval. Written beside the report and shown on the page to copy.

:func:`front_rows` gathers the rows (of one study or several); :func:`markdown` and
:func:`latex` write them; :func:`render` shows both on the page."""

from __future__ import annotations

import json
from html import escape
from typing import NamedTuple

from kwsearch.formats import format_millions
from kwsearch.report.analysis import config_diff
from kwsearch.report.data import StudyData, present

_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    "\\": r"\textbackslash{}",
}


class FrontRow(NamedTuple):
    study: str | None  # the study's name where the table compares several
    model: str  # "trial 12", or "baseline static"
    config: str  # the difference from the static baseline
    params: int
    macs: int | None
    accuracy: float
    low: float | None  # the accuracy's 95% interval (None: unknown)
    high: float | None


def front_rows(data: StudyData, study: str | None = None) -> list[FrontRow]:
    """The study's baselines, then its Pareto-optimal configs, each by parameters (a config the
    front holds several trials of, seeds of a grid, is one row naming them all)."""
    rows = []
    front = data.search[data.search["number"].isin(data.front)] if len(data.trials) else data.trials
    trials_of: dict[str, list[int]] = {}
    for row in front.sort_values("number").to_dict("records"):
        trials_of.setdefault(row["config"], []).append(row["number"])
    front = front[front["number"].isin([numbers[0] for numbers in trials_of.values()])]
    for kind, group in (("baseline", data.baselines), ("search", front)):
        for row in group.sort_values(["params", "number"]).to_dict("records"):
            config = json.loads(row["config"]) if present(row.get("config")) else None
            numbers = ", ".join(str(n) for n in trials_of.get(row["config"], [row["number"]]))
            rows.append(
                FrontRow(
                    study=study,
                    model=f"baseline {row['label']}" if kind == "baseline" else f"trial {numbers}",
                    # a baseline is named by its label; a trial by what it changed
                    config="" if kind == "baseline" else config_diff(config, data.baseline_config),
                    params=int(row["params"]),
                    macs=int(row["macs"]) if present(row.get("macs")) else None,
                    accuracy=float(row["accuracy"]),
                    low=float(row["accuracy_low"]) if present(row.get("accuracy_low")) else None,
                    high=float(row["accuracy_high"]) if present(row.get("accuracy_high")) else None,
                )
            )
    return rows


def _cells(rows: list[FrontRow]) -> tuple[list[str], list[list[str]]]:
    """The header and the cells as text, before any markup."""
    with_macs = bool(rows) and all(r.macs is not None for r in rows)
    compared = any(r.study is not None for r in rows)
    header = (["Study"] if compared else []) + ["Model", "Config", "Params (M)"]
    header += (["MACs (M)"] if with_macs else []) + ["Accuracy (%)", "95% CI (%)"]
    params = format_millions([r.params for r in rows])
    macs = format_millions([r.macs for r in rows]) if with_macs else []
    cells = []
    for i, r in enumerate(rows):
        line = ([r.study or ""] if compared else []) + [r.model, r.config, params[i]]
        line += ([macs[i]] if with_macs else []) + [f"{100 * r.accuracy:.2f}"]
        line.append(f"{100 * r.low:.2f}–{100 * r.high:.2f}" if r.low is not None else "–")
        cells.append(line)
    return header, cells


def markdown(rows: list[FrontRow]) -> str:
    """A GitHub-flavoured Markdown table of ``rows``."""
    header, cells = _cells(rows)
    numeric = {"Params (M)", "MACs (M)", "Accuracy (%)", "95% CI (%)"}
    rule = ["--:" if h in numeric else "---" for h in header]
    lines = [header, rule, *([c.replace("|", "\\|") for c in line] for line in cells)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def latex(rows: list[FrontRow]) -> str:
    """A LaTeX table of ``rows`` (the booktabs package's rules)."""
    header, cells = _cells(rows)
    align = "".join("r" if h.endswith("(M)") or h.startswith("Accuracy") else "l" for h in header)
    align = align[:-1] + "c"  # the interval
    body = [" & ".join(_latex(c) for c in line) + r" \\" for line in cells]
    return "\n".join(
        [
            rf"\begin{{tabular}}{{{align}}}",
            r"\toprule",
            " & ".join(_latex(h) for h in header) + r" \\",
            r"\midrule",
            *body,
            r"\bottomrule",
            r"\end{tabular}",
            "",
        ]
    )


def _latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text).replace("–", "--")


def render(markdown_text: str, latex_text: str, files: tuple[str, str] | None = None) -> str:
    """Both tables on the page, each with a button that copies it (``files``: the names they
    are written under, beside the page)."""
    parts = []
    for kind, text, box in (("Markdown", markdown_text, "front-md"), ("LaTeX", latex_text, "front-tex")):
        name = f" (<code>{escape(files[kind == 'LaTeX'])}</code>)" if files else ""
        parts.append(
            f"<h3>{kind}{name} <button data-copy='{box}'>copy</button></h3>"
            f"<pre class='copy' id='{box}'>{escape(text)}</pre>"
        )
    return "".join(parts) + f"<script>{COPY_SCRIPT}</script>"


COPY_SCRIPT = """
document.querySelectorAll("button[data-copy]").forEach((button) => {
  button.addEventListener("click", () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    const done = () => { button.textContent = "copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => { button.textContent = "select and copy"; });
    } else {  // a file opened from disk may not be a secure context: select the text instead
      const range = document.createRange();
      range.selectNodeContents(document.getElementById(button.dataset.copy));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      button.textContent = "selected: press Ctrl+C";
    }
  });
});
"""
