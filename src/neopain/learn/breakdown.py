"""Per-subject and per-video test results of the Table 5 configurations.

Which infants and which recordings drive a result: :func:`per_subject` (one row per
subject and label), :func:`per_video` (every recording's aggregated score and vote).
"""

from __future__ import annotations

import pandas as pd

from neopain.learn.evaluate import CONFIG_COLUMNS, config_label, config_rows
from neopain.learn.metrics import video_level


def per_subject(scores: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Per-subject test results of each Table 5 configuration, by subject x label.

    One row per (backbone, layer, protocol, subject, label ``y``): a subject usually has
    recordings of both classes, so each class gets its own row with the number of its
    recordings and keyframes, their mean frame score and the share of its frames (and of
    its videos, by majority vote) classified correctly.
    """
    rows = []
    for _, r in best.iterrows():
        part = config_rows(scores, r)
        videos = part.groupby(["subject_id", "y", "video_id"], sort=True)["pred"].mean()
        video_ok = ((videos >= 0.5).astype(int) == videos.index.get_level_values("y"))
        for (subj, y), g in part.groupby(["subject_id", "y"], sort=True):
            rows.append({
                "backbone": r["backbone"], "layer": r["layer"], "protocol": r["protocol"],
                "configuration": f"{config_label(r['selector'], r['k'])} {r['classifier']}",
                "selector": r["selector"], "k": int(r["k"]), "classifier": r["classifier"],
                "subject_id": subj,
                "y": int(y), "n_videos": int(g["video_id"].nunique()), "n_frames": int(len(g)),
                "mean_score": float(g["score"].mean()),
                "frame_accuracy": float((g["pred"] == g["y"]).mean()),
                "video_accuracy": float(video_ok.loc[(subj, y)].mean()),
            })
    cols = ["backbone", "layer", "protocol", "configuration", *CONFIG_COLUMNS, "subject_id",
            "y", "n_videos", "n_frames", "mean_score", "frame_accuracy", "video_accuracy"]
    return pd.DataFrame(rows, columns=cols)


def per_video(scores: pd.DataFrame, best: pd.DataFrame, aggregation: str = "mean",
              quantile: float = 0.9) -> pd.DataFrame:
    """Per-video predictions of each Table 5 configuration: video, subject, label ``y``,
    aggregated score, predicted class (majority vote), correct, keyframes, fold."""
    frames = []
    for _, r in best.iterrows():
        part = config_rows(scores, r)
        if part.empty:
            continue
        v = video_level(part, aggregation, quantile)
        n = part.groupby("video_id").size()
        v["n_frames"] = v["video_id"].map(n).astype(int)
        v["configuration"] = f"{config_label(r['selector'], r['k'])} {r['classifier']}"
        frames.append(v)
    cols = ["backbone", "layer", "protocol", "configuration", *CONFIG_COLUMNS, "fold",
            "video_id", "subject_id", "y", "score", "pred", "correct", "n_frames"]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    out["correct"] = out["pred"] == out["y"]
    return out[cols].sort_values(["backbone", "layer", "protocol", "subject_id",
                                  "video_id"]).reset_index(drop=True)
