"""The plan of the ``export`` and ``predict`` rules: their inputs from the config.

Read when the workflow is parsed, so it imports nothing heavy (no OpenCV, torch or
scikit-learn): the export rule's input files by ``export.configuration`` (the
``results/`` layout of the stages it reads), and the videos (and baseline recordings)
of ``predict.videos``, a CSV/TSV sheet with ``video_id``, ``path`` [, ``baseline_path``]
(read by :func:`neopain.core.samples.read_sheet`; errors name the sheet, line and field).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from neopain.core.samples import ID_RE, read_sheet, resolve_path


def read_video_sheet(path: str | os.PathLike, data_root: str | os.PathLike | None = None
                     ) -> dict[str, str]:
    """``video_id -> absolute path`` from a CSV/TSV with columns ``video_id``, ``path``
    (other columns ignored; relative paths against ``data_root`` or the sheet's folder)."""
    path = Path(path)
    df = read_sheet(path, "video sheet", ("video_id", "path"))
    missing = [c for c in ("video_id", "path") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need video_id, path)")
    root = Path(data_root) if data_root else path.parent
    out: dict[str, str] = {}
    for i, r in df.iterrows():
        vid, p = str(r["video_id"]).strip(), str(r["path"]).strip()
        row = f"{path}: line {df.attrs['lines'][i]} (video_id={vid!r})"
        if not ID_RE.match(vid):
            raise ValueError(f"{row}: video_id must match {ID_RE.pattern}")
        if vid in out:
            raise ValueError(f"{row}: duplicate video_id")
        ap = resolve_path(p, root)
        if not ap.exists():
            raise ValueError(f"{row}: path {str(ap)!r} does not exist")
        out[vid] = str(ap.resolve())
    return out


def read_baseline_sheet(path: str | os.PathLike, data_root: str | os.PathLike | None = None
                        ) -> dict[str, str]:
    """``video_id -> absolute baseline path`` from the sheet's optional ``baseline_path``
    column (a baseline recording of the same patient; empty cells: the recording itself)."""
    path = Path(path)
    df = read_sheet(path, "video sheet", ("video_id", "path"))
    if "baseline_path" not in df.columns:
        return {}
    root = Path(data_root) if data_root else path.parent
    out = {}
    for i, r in df.iterrows():
        b = r["baseline_path"]
        if not b.strip():
            continue
        ap = resolve_path(b, root)
        if not ap.exists():
            raise ValueError(f"{path}: line {df.attrs['lines'][i]} (video_id="
                             f"{str(r['video_id']).strip()!r}): baseline_path {str(ap)!r} "
                             "does not exist")
        out[str(r["video_id"]).strip()] = str(ap.resolve())
    return out


def predict_baselines(predict_cfg: dict) -> dict[str, str]:
    """The ``predict`` rule's baseline recordings per video (``baseline_path`` column)."""
    if not (predict_cfg.get("model") and predict_cfg.get("videos")):
        return {}
    return read_baseline_sheet(predict_cfg["videos"], predict_cfg.get("data_root"))


def predict_videos(predict_cfg: dict) -> dict[str, str]:
    """The ``predict`` rule's videos: ``{}`` unless both ``model`` and ``videos`` are set."""
    if not (predict_cfg.get("model") and predict_cfg.get("videos")):
        return {}
    return read_video_sheet(predict_cfg["videos"], predict_cfg.get("data_root"))


def export_inputs(export_cfg: Mapping[str, Any], layer_targets, protocols, selectors,
                  nested_tables=(), nested_protocols=(), nested_on: bool = False
                  ) -> dict[str, list[str]]:
    """The ``export`` rule's inputs: with ``nested`` (the default) the nested search's
    feature tables (and, when the nested stage runs, its summary and predictions); a
    named configuration's files; or every layer's (``best``: chosen from Table 5 when
    the job runs)."""
    named = export_cfg.get("configuration", "nested")
    paper = {"table5": "results/evaluation/table5.parquet",
             "metrics": "results/evaluation/metrics.parquet", "summary": [], "nested": []}
    if named == "nested":
        return {"table5": [], "metrics": [], "scores": [], "splits": [],
                "features": [f"results/features/{b}/{layer}/features.parquet"
                             for b, layer in nested_tables],
                "summary": ["results/evaluation/summary.parquet"] if nested_on else [],
                "nested": ([f"results/nested/{p}/predictions.parquet"
                            for p in nested_protocols] if nested_on else [])}
    if named not in (None, "best"):
        b, layer, p, s = (named["backbone"], named["layer"], named["protocol"],
                          named["selector"])
        return {**paper, "features": [f"results/features/{b}/{layer}/features.parquet"],
                "scores": [f"results/scores/{b}/{layer}/{p}/{s}.parquet"],
                "splits": [f"results/splits/{p}.parquet"]}
    return {**paper,
        "features": [f"results/features/{b}/{layer}/features.parquet"
                     for b, layer in layer_targets],
        "scores": [f"results/scores/{b}/{layer}/{p}/{s}.parquet"
                   for b, layer in layer_targets for p in protocols for s in selectors],
        "splits": [f"results/splits/{p}.parquet" for p in protocols],
    }
