"""The chance reference of Tables 5-7: always answering the larger class.

With 109 of 200 recordings positive, always answering "pain" scores accuracy 0.545; a
configuration at 0.550 is not a result. :func:`chance_table` gives, per protocol and
level (keyframe, recording), the accuracy of the majority class on the pooled test rows,
with balanced accuracy and AUC 0.5 (a constant score); :func:`with_chance_rows` puts it
under each protocol's rows of a Table 5/6 for display.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from neopain.learn.evaluate import TABLE_METRICS


def chance_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The chance reference per protocol and level: always answering the larger class
    (ties: positive) and a constant score (AUC 0.5), on the pooled test rows."""
    rows = []
    for (proto, lv), g in metrics.groupby(["protocol", "level"], sort=True):
        top = g.sort_values(["n", "n_pos"], ascending=False).iloc[0]
        n, n_pos = int(top["n"]), int(top["n_pos"])
        pos_major = n_pos * 2 >= n
        rows.append({"protocol": proto, "level": lv, "n": n, "n_pos": n_pos,
                     "majority": "positive" if pos_major else "negative",
                     "accuracy": (max(n_pos, n - n_pos) / n) if n else float("nan"),
                     "auc": 0.5, "balanced_accuracy": 0.5,
                     "sensitivity": 1.0 if pos_major else 0.0,
                     "specificity": 0.0 if pos_major else 1.0,
                     "n_subjects": int(top["n_subjects"])})
    return pd.DataFrame(rows, columns=["protocol", "level", "n", "n_pos", "majority",
                                       "accuracy", "auc", "balanced_accuracy",
                                       "sensitivity", "specificity", "n_subjects"])


def with_chance_rows(table: pd.DataFrame, chance: pd.DataFrame) -> pd.DataFrame:
    """A Table 5/6 for display: after each protocol's rows, its chance row (majority
    class, AUC 0.5) labelled ``chance``."""
    parts = []
    protocols = list(dict.fromkeys(list(table["protocol"]) + list(chance["protocol"])))
    for proto in protocols:
        g = table[table["protocol"] == proto]
        if len(g):
            parts.append(g)
        row = {c: np.nan for c in table.columns}
        row.update({"backbone": "chance", "layer": "-", "protocol": proto,
                    "selector": "-", "classifier": "majority class"})
        for _, c in chance[chance["protocol"] == proto].iterrows():
            for m in TABLE_METRICS:
                row[f"{c['level']}_{m}"] = c[m]
            row["n_frames" if c["level"] == "frame" else "n_videos"] = c["n"]
            row["n_subjects"] = c["n_subjects"]
        parts.append(pd.DataFrame([row]))
    return pd.concat(parts, ignore_index=True) if parts else table
