"""Never end a failed run with stale tables that look current.

When a run fails (``onerror`` in ``workflow/rules/report.smk``), every file under
``results/evaluation/`` that this run did not remake although something it depends on
changed (a per-video or aggregated table written by this run, or the sample sheet edited
after it) is renamed ``<name>.stale`` and listed in ``results/evaluation/STALE.md``.
Snakemake then sees the tables as missing and remakes them on the next run; a successful
run removes ``STALE.md`` and the ``.stale`` copies.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

UPSTREAM = ("tracks", "crops", "keyframes", "features", "strain", "splits", "selection",
            "scores", "fusion", "finetune", "cascade")
EVALUATION = Path("results") / "evaluation"
NOTE = EVALUATION / "STALE.md"


def _newest(root: Path, since: float) -> tuple[float, str] | None:
    best = None
    for p in root.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            m = p.stat().st_mtime
            if m >= since and (best is None or m > best[0]):
                best = (m, str(p))
    return best


def set_aside_stale(workdir: str | os.PathLike, run_start: float,
                    sheet: str | os.PathLike | None = None) -> list[str]:
    """Rename the evaluation files the failed run left out of date; return their paths."""
    work = Path(workdir)
    ev = work / EVALUATION
    if not ev.is_dir():
        return []
    changed = [x for d in UPSTREAM for x in [_newest(work / "results" / d, run_start)] if x]
    sheet_time = (work / sheet).stat().st_mtime if sheet and (work / sheet).is_file() else 0
    stale = []
    for p in sorted(ev.rglob("*")):
        if not p.is_file() or p.suffix == ".stale" or p == work / NOTE:
            continue
        m = p.stat().st_mtime
        if m < run_start and (changed or sheet_time > m):
            p.replace(p.with_name(p.name + ".stale"))
            stale.append(str(p.relative_to(work)))
    if stale:
        why = (f"newer inputs, e.g. {Path(max(changed)[1]).relative_to(work)}" if changed
               else f"the sample sheet {sheet} changed after them")
        lines = ["# Stale results", "",
                 f"The run of {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(run_start))}"
                 f" failed before remaking these tables ({why}). They were renamed "
                 "`<name>.stale`; see the failed jobs in the Snakemake log and "
                 "`results/qc/tracking.md`, fix them and rerun.", ""]
        lines += [f"* `{s}` -> `{s}.stale`" for s in stale]
        tmp = work / (str(NOTE) + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, work / NOTE)
    return stale


def clear_stale(workdir: str | os.PathLike) -> None:
    """After a successful run: drop ``STALE.md`` and the ``.stale`` copies."""
    ev = Path(workdir) / EVALUATION
    if ev.is_dir():
        for p in ev.rglob("*.stale"):
            p.unlink()
    (Path(workdir) / NOTE).unlink(missing_ok=True)
