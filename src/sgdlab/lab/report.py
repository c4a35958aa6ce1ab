"""One self-contained HTML page with every lab experiment: its claims and verdicts, figure, numbers, machine.

The page references only the files the report writes beside it (NAME.png, NAME.json); it loads
nothing from the network. It is well-formed XML (XHTML syntax), so tools can parse it. Each
verdict is an ``li`` of class ``verdict`` with ``data-experiment``, ``data-claim`` and
``data-verdict`` attributes, taken from the result's ``Verdict`` objects (the same ones its JSON
holds), so a test can check the page against the JSON beside it.
"""

from __future__ import annotations

import time
from html import escape
from pathlib import Path

from .. import __version__
from . import EXPERIMENTS
from . import run as run_experiment
from .result import LabResult, _cell
from .verdict import CAVEAT, FAILS, HOLDS

CSS = """
body{font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#fafafa;margin:0}
main{max-width:1200px;margin:0 auto;padding:1.5em 2em 4em;background:#fff;box-shadow:0 0 12px #0001}
h1{font-size:2em;margin:.3em 0 .2em}
h2{font-size:1.45em;margin:0 0 .3em;border-bottom:2px solid #d0d7de;padding-bottom:.2em}
p.meta{color:#57606a;margin-top:0}.intro{max-width:60em}code,.math{font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:92%;background:#f6f8fa;padding:0 .25em;border-radius:3px}
dl.notation{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em;margin:.5em 0 1em}
dl.notation dt{font-family:ui-monospace,Menlo,Consolas,monospace}dl.notation dd{margin:0}
section.experiment{margin:2.5em 0;padding-top:.5em}
.badge{display:inline-block;border-radius:1em;padding:0 .65em;font-size:80%;font-weight:600;color:#fff;
vertical-align:middle;white-space:nowrap}
.holds{background:#1a7f37}.caveat{background:#9a6700}.fails{background:#cf222e}.quick{background:#6e7781}
.full{background:#0969da}.none{background:#8c959f}
ul.verdicts{list-style:none;padding:0;margin:.6em 0 1em}ul.verdicts li{margin:.45em 0;padding:.45em .7em;
border-left:5px solid #d0d7de;background:#f6f8fa;border-radius:0 4px 4px 0}
ul.verdicts li.v-holds{border-color:#1a7f37}ul.verdicts li.v-caveat{border-color:#9a6700}
ul.verdicts li.v-fails{border-color:#cf222e}.claim{font-weight:600}.evidence{color:#424a53;font-size:90%}
figure{margin:1em 0}figure img{width:100%;height:auto;border:1px solid #d0d7de;border-radius:4px}
figcaption{color:#57606a;font-size:90%}
table{border-collapse:collapse;font-size:88%;margin:.6em 0;display:block;overflow-x:auto;max-width:100%}
td,th{border:1px solid #d0d7de;padding:3px 9px;text-align:right;white-space:nowrap}
th{background:#f6f8fa}tbody tr:nth-child(even){background:#fbfcfd}td:first-child,th:first-child{text-align:left}
table.summary td,table.summary th{white-space:normal;text-align:left}
details{margin:.6em 0}summary{cursor:pointer;color:#0969da}.machine{font-size:88%;color:#424a53}
nav ol{columns:2}
"""

CLASS = {HOLDS: "holds", CAVEAT: "caveat", FAILS: "fails"}

INTRO = (
    "<p class=\"intro\">Batch gradient descent takes one step per pass over all n examples with the exact "
    "gradient; stochastic gradient descent (SGD) takes a step per example; mini-batch SGD per batch of B. "
    "Each experiment below states claims made about them, measures them on this machine, and gives each "
    "claim a verdict decided by a stated rule from its own numbers: "
    "<span class=\"badge holds\">holds</span> <span class=\"badge caveat\">holds with a caveat</span> "
    "<span class=\"badge fails\">does not hold here</span>. Figure titles say what is plotted; the verdicts "
    "are written under each figure. Every number is in the JSON file beside the figure.</p>"
    "<dl class=\"notation\">"
    "<dt>g<sub>i</sub>, G</dt><dd>the gradient of example i's cost; the full gradient G = (1/n) Σ g<sub>i</sub></dd>"
    "<dt>g<sub>B</sub></dt><dd>a mini-batch gradient, the mean of B example gradients</dd>"
    "<dt>Σ, tr Σ</dt><dd>the covariance of the g<sub>i</sub> over the data, and its trace: "
    "E‖g<sub>B</sub> − G‖² = tr Σ / B</dd>"
    "<dt>η, λ<sub>max</sub></dt><dd>the learning rate; the largest eigenvalue of the Hessian H "
    "(gradient descent is stable below η = 2/λ<sub>max</sub>)</dd>"
    "<dt>B_simple, B_noise</dt><dd>tr Σ / ‖G‖² and tr(HΣ) / GᵀHG: noise scales that predict the critical "
    "batch size B_crit (McCandlish et al. 2018)</dd>"
    "<dt>S, E</dt><dd>updates and examples needed to reach a target cost</dd></dl>")


def _table(result: LabResult) -> str:
    if not result.table:
        return ""
    cols = list(dict.fromkeys(c for r in result.table for c in r))
    head = "".join(f"<th>{escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in result.table)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _verdicts(result: LabResult) -> str:
    if not result.verdicts:
        return '<p><span class="badge none">no verdicts</span> this experiment states no claims to judge.</p>'
    items = []
    for v in result.verdicts:
        c = CLASS[v.verdict]
        caveat = f" Caveat: {escape(v.caveat)}." if v.caveat else ""
        items.append(f'<li class="verdict v-{c}" data-experiment="{escape(result.name)}" '
                     f'data-claim="{escape(v.claim)}" '
                     f'data-verdict="{escape(v.verdict)}"><span class="badge {c}">{escape(v.verdict)}</span> '
                     f'<span class="claim">{escape(v.claim)}</span><br /><span class="evidence">Measured: '
                     f'{escape(v.evidence)}. Rule: {escape(v.rule)}.{caveat}</span></li>')
    return f'<ul class="verdicts">{"".join(items)}</ul>'


def _lead(result: LabResult) -> str:
    """The reading without the verdict sentences (they are listed above it, with their badges)."""
    lead = result.reading
    for v in result.verdicts:
        lead = lead.replace(v.sentence(), "")
    return " ".join(lead.split())


def _machine(m: dict | None) -> str:
    if not m:
        return ""
    blas = ", ".join(f"{b.get('internal_api')} {b.get('version')} ({b.get('num_threads')} threads)"
                     for b in m.get("blas") or []) or "unknown"
    load = ""
    if m.get("load_before") is not None:
        load = f"; load average (1/5/15 min) {m['load_before']} before, {m.get('load_after')} after"
    took = f"; ran in {m['elapsed_seconds']:.1f} s" if m.get("elapsed_seconds") is not None else ""
    if m.get("cpu_seconds") is not None:
        took += f" ({m['cpu_seconds']:.1f} s of CPU time)"
    return (f'<p class="machine">Machine: {escape(str(m.get("cpu")))}, {m.get("usable_cpus")} of '
            f'{m.get("logical_cpus")} logical CPUs usable; BLAS {escape(blas)}; Python {m.get("python")}, '
            f'NumPy {m.get("numpy")}{escape(load + took)}.</p>')


def _summary(results) -> str:
    rows = []
    for r in results:
        for v in r.verdicts:
            rows.append(f'<tr><td><a href="#{escape(r.name)}">{escape(r.name)}</a></td><td>{escape(v.claim)}</td>'
                        f'<td><span class="badge {CLASS[v.verdict]}">{escape(v.verdict)}</span></td></tr>')
    if not rows:
        return ""
    return ('<h2>All claims</h2><table class="summary"><thead><tr><th>experiment</th><th>claim</th><th>verdict</th>'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def render(results: list[LabResult], title: str, meta: str) -> str:
    toc = "".join(f'<li><a href="#{escape(r.name)}">{escape(r.title)}</a></li>' for r in results)
    sections = []
    for r in results:
        mode = ('<span class="badge quick">quick settings</span>' if r.quick else
                '<span class="badge full">full settings</span>' if r.quick is not None else "")
        img = (f'<figure><img src="{escape(r.figure.name)}" alt="{escape(r.title)}" />'
               f'<figcaption>sgdlab lab {escape(r.name)}{" --quick" if r.quick else ""}</figcaption></figure>'
               if r.figure else "")
        data = (f'<p>Every number: <a href="{escape(r.json.name)}">{escape(r.json.name)}</a></p>' if r.json else "")
        sections.append(f'<section class="experiment" id="{escape(r.name)}" data-quick="{str(bool(r.quick)).lower()}">'
                        f'<h2>{escape(r.title)} {mode}</h2>{_verdicts(r)}{img}'
                        f'<p class="reading">{escape(_lead(r))}</p>'
                        f'<details open="open"><summary>the numbers</summary>{_table(r)}</details>'
                        f'{data}{_machine(r.machine)}</section>')
    machine = _machine(results[0].machine) if results else ""
    return ('<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8" />'
            f'<meta name="viewport" content="width=device-width, initial-scale=1" />'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
            f'<h1>{escape(title)}</h1><p class="meta">{escape(meta)}</p>{INTRO}{machine}'
            f'{_summary(results)}<nav><h2>Experiments</h2><ol>{toc}</ol></nav>{"".join(sections)}'
            "</main></body></html>\n")


def write_report(out, *, quick: bool = False, data="digits", data_dir=None, seed: int = 0, experiments=None,
                 progress=None) -> Path:
    """Run the experiments (all by default) into ``out`` and write ``out/index.html``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from ..distributed import DistributedError

    results, skipped, t0 = [], [], time.perf_counter()
    for name in experiments or EXPERIMENTS:
        if progress:
            progress(name)
        try:
            results.append(run_experiment(name, seed=seed, out=out, quick=quick, data=data, data_dir=data_dir))
        except DistributedError as e:  # `parallel` without mpi4py/mpiexec: said on the page, not a crash
            skipped.append(f"{name} ({e})")
    ran = "all experiments ran" if not skipped else f"not run: {'; '.join(skipped)}; the others ran"
    meta = (f"sgdlab {__version__}; data: {data}; seed {seed}; {'quick' if quick else 'full'} settings; "
            f"{ran} in {time.perf_counter() - t0:.0f} s "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).")
    page = out / "index.html"
    page.write_text(render(results, "sgdlab: the gradient-descent lab", meta))
    return page
