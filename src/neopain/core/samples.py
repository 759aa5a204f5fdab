"""Sample-sheet loading and validation.

A sample sheet is a CSV or TSV (by extension) with one row per video and at
least the columns ``video_id``, ``subject_id``, ``path`` and ``label``.  A
``path`` is a video file, a folder of frames or a single image; relative paths
resolve against ``data_root`` when given, otherwise against the sheet's folder.

Format: UTF-8 (a byte-order mark is dropped), LF or CRLF line ends.  Only a
*whole line* whose first non-blank character is ``#`` is a comment; a ``#``
anywhere else is data (``cam#2``, ``take#2.mp4``, ``infant#12``).  Blank
lines are skipped.

Everything is checked before any job runs; the first problem found stops the
run with a :class:`SampleSheetError` naming the sheet, the line of the file
(1-based, comment and blank lines counted, as an editor shows it) and the field.
:func:`check_study` adds the study-level checks (two labels, enough subjects for
every protocol).  Paths can be checked separately (:func:`missing_paths`), so a
lint or dry run needs no data.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

REQUIRED = ("video_id", "subject_id", "path", "label")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class SampleSheetError(ValueError):
    """A problem in a sheet (sample sheet, video sheet, epochs file), with the line and
    field it concerns."""


def read_sheet(path: str | os.PathLike, what: str = "sample sheet",
               required: Iterable[str] = REQUIRED) -> pd.DataFrame:
    """A CSV/TSV sheet (the format above) as a DataFrame of strings; ``df.attrs["lines"]``
    holds each row's line number in the file (``df.attrs["header_line"]`` the header's).
    The one reader of every sheet: sample sheets, ``predict.videos``, epoch files.
    ``what`` names the sheet and ``required`` its columns in the messages."""
    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(f"{path}: {what} not found")
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SampleSheetError(f"{path}: cannot parse {what}: not UTF-8 ({exc})") from exc
    kept: list[tuple[int, str]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        kept.append((n, line))
    if not kept:
        raise SampleSheetError(f"{path}: the {what} is empty (no header line; "
                               f"required columns: {', '.join(required)})")
    try:
        rows = [next(csv.reader(io.StringIO(line), delimiter=sep)) for _, line in kept]
    except csv.Error as exc:
        raise SampleSheetError(f"{path}: cannot parse {what}: {exc}") from exc
    header = [c.strip() for c in rows[0]]
    for (n, _), row in zip(kept[1:], rows[1:]):
        if len(row) != len(header):
            raise SampleSheetError(
                f"{path}: line {n}: {len(row)} field(s), the header (line {kept[0][0]}) has "
                f"{len(header)} (separator: {'tab' if sep == chr(9) else 'comma'})")
    df = pd.DataFrame(rows[1:], columns=header, dtype=str)
    df.attrs["lines"] = [n for n, _ in kept[1:]]
    df.attrs["header_line"] = kept[0][0]
    return df


def resolve_path(value: str, root: Path) -> Path:
    """A sheet's path field: absolute, or relative to ``root``."""
    p = Path(value.strip())
    return p if p.is_absolute() else root / p


def load_samples(
    sheet: str | os.PathLike,
    labels: Iterable[str],
    data_root: str | os.PathLike | None = None,
    check_paths: bool = True,
) -> pd.DataFrame:
    """Read and validate a sample sheet; return it indexed by ``video_id``.

    The returned frame has the extra columns ``abspath`` (the resolved path) and
    ``sheet_line`` (the row's line in the file).  ``check_paths=False`` leaves the
    paths to :func:`missing_paths` (lint / dry runs without the data).
    """
    sheet = Path(sheet)
    labels = list(labels)
    df = read_sheet(sheet)
    lines = df.attrs["lines"]
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise SampleSheetError(
            f"{sheet}: missing required column(s) {', '.join(missing)} (header on line "
            f"{df.attrs['header_line']}: {', '.join(df.columns) or 'none'}; required: "
            f"{', '.join(REQUIRED)})"
        )
    if df.empty:
        raise SampleSheetError(f"{sheet}: the sample sheet has no rows")
    root = Path(data_root) if data_root else sheet.parent
    seen: dict[str, int] = {}
    abspaths = []
    for i, row in zip(lines, df.itertuples(index=False)):
        where = f"{sheet}: line {i}"
        vid = row.video_id.strip()
        if not vid:
            raise SampleSheetError(f"{where}: field 'video_id' is empty")
        where = f"{sheet}: line {i} (video_id={vid!r})"
        if not ID_RE.match(vid):
            raise SampleSheetError(
                f"{where}: field 'video_id' must match {ID_RE.pattern} (it names result files)"
            )
        if vid in seen:
            raise SampleSheetError(
                f"{where}: field 'video_id' duplicates line {seen[vid]}"
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
        p = resolve_path(row.path, root)
        if check_paths and not p.exists():
            raise SampleSheetError(f"{where}: field 'path': {p} does not exist")
        abspaths.append(str(p.resolve()) if p.exists() else str(p))
    df = df.apply(lambda s: s.str.strip())
    df["abspath"] = abspaths
    df["sheet_line"] = lines
    df.attrs["sheet"] = str(sheet)
    return df.set_index("video_id", drop=False)


def missing_paths(samples: pd.DataFrame) -> list[str]:
    """One message per row whose path does not exist (sheet, line, video, field)."""
    sheet = samples.attrs.get("sheet", "sample sheet")
    return [f"{sheet}: line {r['sheet_line']} (video_id={r['video_id']!r}): field 'path': "
            f"{r['abspath']} does not exist"
            for r in samples.to_dict("records") if not Path(r["abspath"]).exists()]


def protocol_problem(name: str, spec: Mapping, n_subjects: int) -> str | None:
    """Why protocol ``name`` cannot be run on ``n_subjects`` subjects (None: it can)."""
    kind = spec.get("kind")
    if n_subjects < 2:
        return f"protocol {name!r} ({kind}) needs at least 2 subjects, found {n_subjects}"
    if kind == "group_kfold" and int(spec.get("n_splits", 5)) > n_subjects:
        return (f"protocol {name!r}: n_splits={spec.get('n_splits', 5)} exceeds the "
                f"{n_subjects} subjects")
    return None


def check_study(samples: pd.DataFrame, labels: Iterable[str],
                protocols: Mapping[str, Mapping]) -> None:
    """Study-level checks, before any job runs: every configured label has videos
    (a classifier needs two classes) and every protocol has enough subjects."""
    sheet = samples.attrs.get("sheet", "sample sheet")
    absent = [lab for lab in labels if lab not in set(samples["label"])]
    if absent:
        counts = samples["label"].value_counts().to_dict()
        raise SampleSheetError(
            f"{sheet}: field 'label': no video is labelled {', '.join(map(repr, absent))} "
            f"(found {counts}); classifiers need both labels")
    n = samples["subject_id"].nunique()
    for name, spec in protocols.items():
        problem = protocol_problem(name, spec, n)
        if problem:
            raise SampleSheetError(f"{sheet}: field 'subject_id': {problem}")


def subject_labels(samples: pd.DataFrame) -> pd.Series:
    """Majority label per subject (ties: the alphabetically first label)."""
    counts = samples.groupby(["subject_id", "label"]).size().reset_index(name="n")
    counts = counts.sort_values(["subject_id", "n", "label"], ascending=[True, False, True])
    return counts.drop_duplicates("subject_id").set_index("subject_id")["label"].sort_index()


def usable_subjects(samples: pd.DataFrame, qc: dict[str, dict]
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(samples of subjects with usable frames, subjects left out)``.

    A video is usable when its track has an ok frame (status ``ok``,
    ``low_success`` or ``partial``); a subject is left out when none of its
    videos is.  ``qc`` maps video_id to its ``results/tracks/{video}.qc.json``.
    The second frame has ``subject_id``, ``label``, ``videos`` and ``reason``
    (each video with its status), one row per subject left out.
    """
    used = {v: int((qc.get(v) or {}).get("n_ok") or 0) > 0 for v in samples["video_id"]}
    rows = []
    for subject, part in samples.groupby("subject_id", sort=True):
        if any(used[v] for v in part["video_id"]):
            continue
        why = ", ".join(f"{v}: {(qc.get(v) or {}).get('status', 'not tracked')}"
                        for v in part["video_id"])
        rows.append((subject, subject_labels(part).iloc[0], ",".join(part["video_id"]),
                     f"no usable frames ({why})"))
    excluded = pd.DataFrame(rows, columns=["subject_id", "label", "videos", "reason"])
    keep = samples[~samples["subject_id"].isin(set(excluded["subject_id"]))]
    return keep, excluded
