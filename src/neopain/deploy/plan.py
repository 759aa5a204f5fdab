"""The ``predict`` rule's plan: the videos (and baseline recordings) of ``predict.videos``.

Read when the workflow is parsed, so it imports nothing heavy (no OpenCV, torch or
scikit-learn). ``predict.videos`` is a CSV/TSV sheet with ``video_id``, ``path`` [,
``baseline_path``], read by :func:`neopain.core.samples.read_sheet`; errors name the
sheet, line and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from neopain.core.samples import ID_RE, read_sheet, resolve_path


def _existing(root: Path, value: str, where: str, column: str) -> str:
    path = resolve_path(value, root)
    if not path.exists():
        raise ValueError(f"{where}: {column} {str(path)!r} does not exist")
    return str(path.resolve())


def read_predict_sheet(predict: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """``(videos, baselines)``: video_id -> absolute path of each video to predict and of
    its baseline recording (optional column ``baseline_path``; empty: the recording
    itself). Relative paths are against ``predict.data_root``, else the sheet's folder.
    Both empty unless ``predict.model`` and ``predict.videos`` are set."""
    if not (predict.get("model") and predict.get("videos")):
        return {}, {}
    sheet = Path(predict["videos"])
    df = read_sheet(sheet, "video sheet", ("video_id", "path"))
    missing = [c for c in ("video_id", "path") if c not in df.columns]
    if missing:
        raise ValueError(f"{sheet}: missing column(s) {', '.join(missing)} (need video_id, path)")
    root = Path(predict["data_root"]) if predict.get("data_root") else sheet.parent
    videos: dict[str, str] = {}
    baselines: dict[str, str] = {}
    for line, row in zip(df.attrs["lines"], df.to_dict("records")):
        vid = str(row["video_id"]).strip()
        where = f"{sheet}: line {line} (video_id={vid!r})"
        if not ID_RE.match(vid):
            raise ValueError(f"{where}: video_id must match {ID_RE.pattern}")
        if vid in videos:
            raise ValueError(f"{where}: duplicate video_id")
        videos[vid] = _existing(root, str(row["path"]), where, "path")
        if str(row.get("baseline_path") or "").strip():
            baselines[vid] = _existing(root, str(row["baseline_path"]), where, "baseline_path")
    return videos, baselines
