"""Frozen features vs fine-tuned vs cascaded: the comparison table of the
``evaluate_finetune`` rule, with subject-clustered DeLong p-values."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

COMPARE_METHODS = ("frozen", "finetune", "cascade")
GROUP = ["backbone", "layer", "protocol"]


def comparison_table(scores: Mapping[str, pd.DataFrame], aggregation: str = "mean",
                     quantile: float = 0.9, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> pd.DataFrame:
    """One row per backbone x layer x protocol x method (``scores``: method -> score
    rows with backbone/layer columns; ``frozen`` holds every selector x k x classifier
    and its row is the best by frame accuracy, chosen on the test results as Table 5).
    Two-sided DeLong p-values of each method against ``frozen`` and (cascade) against
    ``finetune`` on the same pooled test rows, at frame and video level."""
    from neopain.learn.clustered import clustered_delong
    from neopain.learn.evaluate import config_label, config_rows, table5
    from neopain.learn.metrics import metrics_table, video_level

    rows, chosen = [], {}
    for method in COMPARE_METHODS:
        sc = scores.get(method)
        if sc is None or not len(sc):
            continue
        # a fine-tuned network is one configuration: shown even when it is constant
        t5 = table5(metrics_table(sc, aggregation, quantile, n_boot, seed, level),
                    allow_constant=method != "frozen")
        for _, r in t5.iterrows():
            part, k = config_rows(sc, r), r["k"]
            key = (r["backbone"], r["layer"], r["protocol"])
            chosen[key + (method,)] = {"frame": part,
                                       "video": video_level(part, aggregation, quantile)}
            row = {**{g: r[g] for g in GROUP}, "method": method,
                   "configuration": (f"{config_label(r['selector'], k)} {r['classifier']}"
                                     if method == "frozen"
                                     else f"{method} ({int(k)} features)"),
                   "selector": r["selector"], "k": int(k), "classifier": r["classifier"]}
            row.update({c: r[c] for c in t5.columns if c.startswith(("frame_", "video_"))})
            row.update({c: r[c] for c in ("n_frames", "n_videos", "n_subjects")})
            rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    ids = {"frame": ["fold", "video_id", "subject_id", "frame"],
           "video": ["fold", "video_id", "subject_id"]}
    for against in ("frozen", "finetune"):
        for lv in ("frame", "video"):
            col = f"p_{lv}_vs_{against}"
            vals = []
            for _, r in out.iterrows():
                key = (r["backbone"], r["layer"], r["protocol"])
                a, b = chosen.get(key + (r["method"],)), chosen.get(key + (against,))
                p = np.nan
                if a is not None and b is not None and r["method"] != against \
                        and COMPARE_METHODS.index(r["method"]) > COMPARE_METHODS.index(against):
                    j = a[lv].merge(b[lv], on=ids[lv], suffixes=("_a", "_b"))
                    if len(j) and (j["y_a"] == j["y_b"]).all() and j["y_a"].nunique() == 2 \
                            and j["subject_id"].nunique() >= 2:   # subject-clustered (issue 17)
                        p = clustered_delong(j["y_a"].to_numpy(), j["score_a"].to_numpy(),
                                             j["score_b"].to_numpy(),
                                             j["subject_id"].to_numpy())["p"]
                vals.append(p)
            out[col] = vals
    order = {m: i for i, m in enumerate(COMPARE_METHODS)}
    out["_o"] = out["method"].map(order)
    return out.sort_values(GROUP + ["_o"]).drop(columns="_o").reset_index(drop=True)
