"""ROC figures of the chosen configurations, with subject-bootstrap bands.

:func:`roc_curves_for` gives the frame- and video-level curves of one table row's
configuration, :func:`table_roc_curves` one per-recording curve per row of a table,
:func:`plot_roc` draws them (matplotlib Agg).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from neopain.learn.evaluate import config_label
from neopain.learn.metrics import MIN_SUBJECTS_CI, video_level


def plot_roc(curves: list[tuple], path, title: str, n_boot: int = 200, seed: int = 0,
             level: float = 0.95) -> None:
    """ROC curves into a PNG (matplotlib Agg). Each curve is (label, y, score) or
    (label, y, score, subjects); with subjects, a shaded pointwise ``level`` band from a
    subject bootstrap (:func:`neopain.learn.clustered.roc_band`) is drawn under the curve."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from neopain.learn.clustered import roc_band

    fig, ax = plt.subplots(figsize=(5.2, 5.0), dpi=110)
    for curve in curves:
        label, y, s = curve[:3]
        if len(np.unique(y)) == 2:
            fpr, tpr, _ = roc_curve(y, s)
            line, = ax.plot(fpr, tpr, lw=1.6, label=label)
            if len(curve) > 3 and n_boot:
                g, lo, hi = roc_band(y, s, curve[3], n_boot, seed, level)
                if not np.isnan(lo).all():
                    ax.fill_between(g, lo, hi, color=line.get_color(), alpha=0.18, lw=0)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="chance (AUC 0.5)")
    ax.set(xlabel="false positive rate (1 - specificity)",
           ylabel="true positive rate (sensitivity)", xlim=(0, 1), ylim=(0, 1.01), title=title)
    # long labels (n, positives, AUC [CI]) go below the axes, never over the curves
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), fontsize=6.5, frameon=False)
    fig.tight_layout()
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def table_roc_curves(scores: pd.DataFrame, table: pd.DataFrame, aggregation: str = "mean",
                     quantile: float = 0.9) -> list[tuple]:
    """Per-recording ROC data of every row of a results table (Table 5 or 6): one curve per
    chosen configuration, labelled with backbone, layer, protocol, n, positives and AUC."""
    out = []
    for _, row in table.iterrows():
        part = scores[(scores.backbone == row["backbone"]) & (scores.layer == row["layer"])
                      & (scores.protocol == row["protocol"])]
        label, *rest = roc_curves_for(part, row, aggregation, quantile)[1]
        name = f"{row['backbone']} {row['layer']} ({row['protocol']}), " \
               f"{config_label(row['selector'], row['k'])} {row['classifier']}"
        out.append((f"{name}: {label}", *rest))
    return out


def roc_curves_for(scores: pd.DataFrame, best_row: pd.Series, aggregation: str = "mean",
                   quantile: float = 0.9) -> list[tuple]:
    """Frame- and video-level ROC data (label, y, score, subjects) of one Table 5 row's
    configuration; the label names the unit, n, positives, AUC and its CI."""
    part = scores[(scores.selector == best_row["selector"]) & (scores.k == int(best_row["k"]))
                  & (scores.classifier == best_row["classifier"])]
    out = []
    for lv, df in (("frame", part), ("video", video_level(part, aggregation, quantile))):
        auc, lo, hi = (best_row.get(f"{lv}_auc"), best_row.get(f"{lv}_auc_lo"),
                       best_row.get(f"{lv}_auc_hi"))
        unit = "keyframes" if lv == "frame" else "recordings"
        y = df["y"].to_numpy()
        label = (f"per {'keyframe' if lv == 'frame' else 'recording'} ({len(y)} {unit}, "
                 f"{int((y == 1).sum())} positive): AUC "
                 + ("n/a" if auc is None or pd.isna(auc) else f"{auc:.3f}"))
        n_subj = df["subject_id"].nunique()
        if n_subj < MIN_SUBJECTS_CI:
            label += ", CI n/a (too few subjects)"
            out.append((label, y, df["score"].to_numpy()))     # no band either
            continue
        if lo is not None and not pd.isna(lo):
            label += f" [{lo:.3f}, {hi:.3f}]"
        out.append((label, y, df["score"].to_numpy(), df["subject_id"].to_numpy()))
    return out
