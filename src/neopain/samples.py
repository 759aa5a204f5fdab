"""Sample-sheet loading and validation.

A sample sheet is a CSV or TSV (by extension) with one row per video and at
least the columns ``video_id``, ``subject_id``, ``path`` and ``label``.  A
``path`` is a video file, a folder of frames or a single image; relative paths
resolve against ``data_root`` when given, otherwise against the sheet's folder.

Everything is checked before any job runs; the first problem found stops the
run with a :class:`SampleSheetError` naming the sheet, the row (1-based, as in
a spreadsheet with the header on line 1) and the field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import pandas as pd

REQUIRED = ("video_id", "subject_id", "path", "label")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SampleSheetError(ValueError):
    """A problem in the sample sheet, with the row and field it concerns."""


def read_sheet(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(f"{path}: sample sheet not found")
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, comment="#")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SampleSheetError(f"{path}: cannot parse sample sheet: {exc}") from exc
    df.columns = [c.strip() for c in df.columns]
    return df


def load_samples(
    sheet: str | os.PathLike,
    labels: Iterable[str],
    data_root: str | os.PathLike | None = None,
    check_paths: bool = True,
) -> pd.DataFrame:
    """Read and validate a sample sheet; return it indexed by ``video_id``.

    The returned frame has an extra column ``abspath`` (the resolved path).
    """
    sheet = Path(sheet)
    labels = list(labels)
    df = read_sheet(sheet)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise SampleSheetError(
            f"{sheet}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(df.columns) or 'none'}; required: {', '.join(REQUIRED)})"
        )
    if df.empty:
        raise SampleSheetError(f"{sheet}: the sample sheet has no rows")
    root = Path(data_root) if data_root else sheet.parent
    seen: dict[str, int] = {}
    abspaths = []
    for i, row in enumerate(df.itertuples(index=False), start=2):
        where = f"{sheet}: row {i}"
        vid = row.video_id.strip()
        if not vid:
            raise SampleSheetError(f"{where}: field 'video_id' is empty")
        where = f"{sheet}: row {i} (video_id={vid!r})"
        if not ID_RE.match(vid):
            raise SampleSheetError(
                f"{where}: field 'video_id' must match {ID_RE.pattern} (it names result files)"
            )
        if vid in seen:
            raise SampleSheetError(
                f"{where}: field 'video_id' duplicates row {seen[vid]}"
            )
        seen[vid] = i
        if not row.subject_id.strip():
            raise SampleSheetError(f"{where}: field 'subject_id' is empty")
        if row.label.strip() not in labels:
            raise SampleSheetError(
                f"{where}: field 'label' has unknown label {row.label!r} "
                f"(allowed: {', '.join(labels)})"
            )
        if not row.path.strip():
            raise SampleSheetError(f"{where}: field 'path' is empty")
        p = Path(row.path.strip())
        p = p if p.is_absolute() else root / p
        if check_paths and not p.exists():
            raise SampleSheetError(f"{where}: field 'path': {p} does not exist")
        abspaths.append(str(p.resolve()) if p.exists() else str(p))
    df = df.apply(lambda s: s.str.strip())
    df["abspath"] = abspaths
    return df.set_index("video_id", drop=False)
