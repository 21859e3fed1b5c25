"""The top of a run's report: key numbers and provenance first, full tables collapsed.

notebooks/01_train.py displays :func:`header` before any figure and :func:`collapsed` for the
full config and summary, so the page rendered by ``ltlab batch`` reads top-down: what came out
(percent, one decimal), what produced it (code, machine, command), then the figures.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from ltlab.evaluation.health import check_run
from ltlab.evaluation.run_dir import PROVENANCE_FILE

# summary.json key -> label; fractions shown in percent
KEY_NUMBERS = {"top1": "top-1", "balanced_acc": "balanced", "many": "many", "medium": "medium", "few": "few",
               "ece": "ECE", "ece_ts": "ECE after TS", "auroc_msp": "AUROC (MSP)"}
CI_KEY = {"auroc_msp": "auroc"}   # summary.json names the MSP failure AUROC's interval auroc_ci

CSS = """<style>.ltlab-head table{border-collapse:collapse;margin:0.3em 0 0.8em}
.ltlab-head td,.ltlab-head th{border:1px solid #ccc;padding:3px 9px;text-align:right}
.ltlab-head th{background:#f3f3f3} .ltlab-head p.warn{background:#fff3cd;border:1px solid #e0a800;padding:4px 8px} .ltlab-head td.l,.ltlab-head th.l{text-align:left}
.ltlab-head code{white-space:pre-wrap} details.ltlab summary{cursor:pointer;font-weight:bold}</style>"""


class HTML:
    """Rendered by Jupyter (and nbconvert) through _repr_html_; str() is the markup."""

    def __init__(self, markup: str):
        self.markup = markup

    def _repr_html_(self) -> str:
        return self.markup

    def __str__(self) -> str:
        return self.markup


def percent(v) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f}"


def interval(ci) -> str:
    """' [65.0, 66.7]' (percent) for a summary's [lo, hi], '' when the run has none."""
    return "" if not ci else f" <small>[{percent(ci[0])}, {percent(ci[1])}]</small>"


def minutes(seconds) -> str:
    if seconds is None:
        return "n/a"
    s = float(seconds)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def provenance_rows(prov: dict) -> list[tuple[str, str]]:
    """(label, value) pairs, values plain text."""
    if not prov:
        return [("provenance", f"no {PROVENANCE_FILE} in the run directory")]
    commit = prov.get("git_commit")
    if commit:
        code = f"{commit[:10]}" + (" (uncommitted changes in ltlab/)" if prov.get("git_dirty") else " (clean)")
    else:
        code = "not a git checkout"
    date = prov.get("finished") or prov.get("started") or "n/a"
    rows = [("ltlab", f"{prov.get('ltlab', 'n/a')}, commit {code}"),
            ("torch", f"{prov.get('torch', 'n/a')} (Python {prov.get('python', 'n/a')})"),
            ("device", f"{prov.get('device', 'n/a')}" + (f", {prov['world_size']} processes"
                                                          if prov.get("world_size", 1) > 1 else "")),
            ("date", f"{date}" + (f", resumed {len(prov['resumed'])}x" if prov.get("resumed") else "")),
            ("wall time", minutes(prov.get("train_seconds")) + " of training"),
            ("command", prov.get("argv", "n/a")),
            ("reproduce", prov.get("reproduce", "n/a"))]
    return rows


# the knob a post-hoc method applies at test time, as its predictions record it:
# (array, what to call it, the array of the val curve it was chosen from when it was)
POSTHOC_KNOBS = (("la_tau", "logit adjustment τ", "la_tau_grid"), ("tau", "τ-norm τ", "tau_grid"),
                 ("tde_alpha", "TDE α", None))


def posthoc_knob(run_dir) -> str:
    """'; logit adjustment τ = 1.2, chosen on the validation split' for a run whose predictions
    carry a post-hoc knob, else ''."""
    f = Path(run_dir) / "predictions" / "test.npz"
    if not f.is_file():
        return ""
    import numpy as np

    with np.load(f) as arrays:
        for key, name, grid in POSTHOC_KNOBS:
            if key in arrays.files and arrays[key].size == 1:
                how = "chosen on the validation split" if grid and grid in arrays.files and \
                    arrays[grid].size > 1 else "as configured"
                return f"; {name} = {float(arrays[key]):.3g}, {how}"
    return ""


def header(run_dir) -> HTML:
    """Key numbers (test split, last epoch) and provenance of a finished run."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    f = run_dir / PROVENANCE_FILE
    prov = json.loads(f.read_text()) if f.is_file() else {}
    head = "".join(f"<th>{html.escape(v)}</th>" for v in KEY_NUMBERS.values())
    cells = "".join(f"<td>{percent(summary.get(k))}{interval(summary.get(CI_KEY.get(k, k) + '_ci'))}</td>"
                    for k in KEY_NUMBERS)
    ci = (f" Brackets: {100 * summary['ci_level']:g}% interval, {summary.get('ci_method', 'bootstrap')} "
          f"({summary.get('ci_resamples')} resamples)." if summary.get("ci_level") else "")
    found = check_run(run_dir) if (run_dir / "predictions" / "test.npz").is_file() else []
    warnings = "".join(f"<p class='warn'>&#9888; {html.escape(w)}</p>" for w in found)
    t = summary.get("temperature")
    note = f"; TS: temperature {t:.3g} fitted on the validation split" if t is not None else ""
    note += posthoc_knob(run_dir)
    prov_rows = "".join(f"<tr><th class='l'>{html.escape(k)}</th><td class='l'><code>{html.escape(str(v))}</code></td></tr>"
                        for k, v in provenance_rows(prov))
    title = f"{prov.get('method') or ''} on {prov.get('dataset') or ''}, seed {prov.get('seed')}" if prov else run_dir.name
    return HTML(f"""{CSS}<div class="ltlab-head"><h2>{html.escape(title)}</h2>
{warnings}<p>Test split, last epoch, in percent{html.escape(note)}.{html.escape(ci)}</p>
<table><tr>{head}</tr><tr>{cells}</tr></table>
<table>{prov_rows}</table><p>Run directory: <code>{html.escape(str(run_dir))}</code></p></div>""")


def collapsed(title: str, mapping: dict) -> HTML:
    """A two-column table inside <details>: everything kept, nothing in the way."""
    rows = "".join(f"<tr><th class='l'>{html.escape(str(k))}</th><td class='l'>{html.escape(str(v))}</td></tr>"
                   for k, v in mapping.items())
    return HTML(f"""{CSS}<details class="ltlab ltlab-head"><summary>{html.escape(title)} ({len(mapping)} entries)</summary>
<table>{rows}</table></details>""")
