"""One self-contained HTML page with every lab experiment: figure, reading, table, numbers.

The page references only the files the report writes beside it (NAME.png, NAME.json); it
loads nothing from the network. It is well-formed XML (XHTML syntax), so tools can parse it.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path

from .. import __version__
from . import EXPERIMENTS
from .result import LabResult, _cell

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
         "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:90%;margin:.5em 0}"
         "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f4f4f4}"
         "section{margin-bottom:3em}p.reading{font-size:105%}")


def _table(result: LabResult) -> str:
    if not result.table:
        return ""
    cols = list(result.table[0])
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in result.table)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(results: list[LabResult], title: str, meta: str) -> str:
    toc = "".join(f'<li><a href="#{escape(r.name)}">{escape(r.title)}</a></li>' for r in results)
    sections = []
    for r in results:
        img = f'<img src="{escape(r.figure.name)}" alt="{escape(r.title)}" />' if r.figure else ""
        data = f'<p>Numbers behind the figure: <a href="{escape(r.json.name)}">{escape(r.json.name)}</a></p>' if r.json else ""
        sections.append(f'<section id="{escape(r.name)}"><h2>{escape(r.title)} <small>(sgdlab lab {escape(r.name)})</small></h2>'
                        f'<p class="reading">{escape(r.reading)}</p>{img}{_table(r)}{data}</section>')
    return ('<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8" />'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{escape(title)}</h1><p>{escape(meta)}</p><ol>{toc}</ol>{''.join(sections)}</body></html>\n")


def write_report(out, *, quick: bool = False, data="digits", data_dir=None, seed: int = 0, experiments=None,
                 progress=None) -> Path:
    """Run the experiments (all by default) into ``out`` and write ``out/index.html``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results, t0 = [], time.perf_counter()
    for name in experiments or EXPERIMENTS:
        if progress:
            progress(name)
        kwargs = {"seed": seed, "out": out, "quick": quick}
        if name != "minima":
            kwargs.update(data=data, data_dir=data_dir)
        results.append(EXPERIMENTS[name](**kwargs))
    meta = (f"sgdlab {__version__}; data: {data}; seed {seed}; {'quick' if quick else 'full'} settings; "
            f"all experiments ran in {time.perf_counter() - t0:.0f} s.")
    page = out / "index.html"
    page.write_text(render(results, "sgdlab: the gradient-descent lab", meta))
    return page
