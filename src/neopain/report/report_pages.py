"""The report's result pages: Tables 5-7, DeLong, per-subject, per-video and tracking QC
as self-contained HTML (:mod:`neopain.report.report_html`), each with a caption in plain words.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from neopain.learn.chance import with_chance_rows
from neopain.learn.evaluate import TABLE_METRICS, configuration_shown, with_selector_label
from neopain.report.report_html import MIN_SUBJECTS_CI, caption, display, page, table

PLAIN = {"accuracy": "accuracy", "auc": "AUC", "balanced_accuracy": "balanced accuracy",
         "sensitivity": "sensitivity", "specificity": "specificity"}


def _names(df: pd.DataFrame) -> dict[str, str]:
    names = {"n_frames": "keyframes", "n_videos": "recordings", "n_subjects": "subjects",
             "selector": "features selected", "classifier": "classifier",
             "frame_constant": "constant per keyframe", "video_constant":
             "constant per recording", "subject_id": "subject", "video_id": "recording",
             "y": "label", "mean_score": "mean score", "frame_accuracy": "keyframes right",
             "video_accuracy": "recordings right", "configuration": "configuration",
             "score": "score", "pred": "predicted", "correct": "right", "fold": "fold",
             "n": "n", "p": "p", "diff": "AUC difference", "se": "SE", "z": "z",
             "config_a": "configuration A", "config_b": "configuration B",
             "auc_a": "AUC A", "auc_b": "AUC B", "level": "unit"}
    for lv, unit in (("frame", "per keyframe"), ("video", "per recording")):
        for m, plain in PLAIN.items():
            names[f"{lv}_{m}"] = f"{plain} {unit}"
    return {c: names.get(c, c.replace("_", " ")) for c in df.columns}


def _label_names(df: pd.DataFrame, positive: str, negative: str) -> pd.DataFrame:
    out = df.copy()
    for c in ("y", "pred"):
        if c in out.columns:
            out[c] = out[c].map(lambda v: positive if v == 1 else negative)
    return out


def best_table_page(t: pd.DataFrame, chance: pd.DataFrame, title: str, chosen: str,
                    n_configurations: int, notes: list[str]) -> str:
    """Table 5 or 6 with the chance row after each protocol."""
    shown = with_chance_rows(with_selector_label(t), chance)
    cols = (["backbone", "layer", "protocol", "selector", "classifier"]
            + [f"{lv}_{m}{s}" for lv in ("frame", "video") for m in TABLE_METRICS
               for s in ("", "_lo", "_hi")]
            + ["n_frames", "n_videos", "n_subjects"]
            + [c for c in ("frame_constant", "video_constant") if c in shown.columns])
    shown = shown[[c for c in cols if c in shown.columns]]
    is_chance = (shown["backbone"] == "chance").to_numpy()
    flags = np.zeros(len(shown), bool)
    for c in ("frame_constant", "video_constant"):
        if c in shown.columns:
            flags |= shown[c].fillna(False).astype(bool).to_numpy()
    cap = (f"The best configuration per backbone, layer and protocol, chosen on the test "
           f"results by {chosen} among {n_configurations} configurations: an optimistic "
           "upper bound. Each cell: estimate (95% CI, bootstrap over subjects). The "
           "yellow 'chance' row answers the larger class every time (AUC 0.5); red rows "
           "answer one class for every recording at the other level (a constant "
           "predictor). Constant predictors are never chosen.")
    body = table(display(shown, _names(shown)), row_class=lambda i: (
        "chance" if is_chance[i] else "flag" if flags[i] else ""))
    return page(title, [caption(cap), body] + [caption(n, "note") for n in notes])


def delong_page(dl: pd.DataFrame, notes: list[str]) -> str:
    cap = ("Is the best ReliefF configuration's AUC different from the best SU "
           "configuration's? Two-sided DeLong test on the same test rows, clustered by "
           "subject (Obuchowski 1997): a subject's keyframes and recordings count as one "
           "independent unit, so p-values are not inflated by many frames per infant.")
    return page("Comparison of feature selectors (DeLong)",
                [caption(cap), table(display(dl, _names(dl)))]
                + [caption(n, "note") for n in notes])


def per_subject_page(ps: pd.DataFrame, positive: str, negative: str) -> str:
    cap = ("Each Table 5 configuration's test results per subject and label: how many "
           "recordings and keyframes of that label the subject has, their mean score and "
           "the share classified correctly. Shows which infants drive a result.")
    d = _label_names(configuration_shown(ps), positive, negative)
    return page("Results per subject", [caption(cap), table(display(d, _names(d)))])


def per_video_page(pv: pd.DataFrame, positive: str, negative: str) -> str:
    cap = ("Every recording's prediction by each Table 5 configuration: its label, the "
           "aggregated score of its keyframes and the class predicted by majority vote. "
           "Click a column header to sort. The same table is results/evaluation/"
           "per_video.parquet.")
    d = _label_names(configuration_shown(pv), positive, negative)
    return page("Predictions per recording", [caption(cap), table(display(d, _names(d)))])


def table7_page(t7: pd.DataFrame, notes: list[str]) -> str:
    cap = ("Table 7: per protocol, deep features alone, optical strain alone and both "
           "fused; the best configuration of each, chosen on the test results by frame "
           "accuracy (optimistic). Each cell: estimate (95% CI, bootstrap over subjects).")
    t7 = with_selector_label(t7)
    return page("Table 7: deep, strain and fused features",
                [caption(cap), table(display(t7, _names(t7)))]
                + [caption(n, "note") for n in notes])


def finetune_page(ft: pd.DataFrame, notes: list[str]) -> str:
    cap = ("Frozen features (the best Table 5 configuration) against fine-tuned and "
           "cascaded fine-tuned networks, per backbone and protocol, per keyframe and per "
           "recording; p: subject-clustered DeLong test against the method named in the "
           "column. Each cell: estimate (95% CI, bootstrap over subjects).")
    ft = configuration_shown(ft)
    return page("Fine-tuning", [caption(cap), table(display(ft, _names(ft)))]
                + [caption(n, "note") for n in notes])


def qc_page(qc: pd.DataFrame, left_out: list[dict], show_faces) -> str:
    """Tracking QC: counts per status (whatever statuses the QC table has), the
    distribution of per-video success rates, and the recordings left out and why."""
    counts = (qc["status"].astype(str).value_counts().sort_index()
              .rename_axis("status").reset_index(name="recordings"))
    counts["share"] = counts["recordings"] / max(1, len(qc))
    edges = np.linspace(0.0, 1.0, 11)
    rates = qc["success_rate"].fillna(0.0).to_numpy()
    hist, _ = np.histogram(rates, bins=edges)
    dist = pd.DataFrame({"tracked frames": [f"{int(a * 100)}\u2013{int(b * 100)}%"
                                            for a, b in zip(edges[:-1], edges[1:])],
                         "recordings": hist})
    bars = _bars(hist)
    lo = pd.DataFrame(left_out, columns=["video_id", "subject_id", "label", "why"])
    faces = {True: "with faces (report.show_faces: true)",
             "blurred": "with blurred faces (report.show_faces: blurred)"}.get(
        show_faces, "without any face pixel: landmarks on a blank canvas "
                    "(report.show_faces: false)")
    meaning = {"ok": "a face was tracked in enough frames",
               "partial": "only part of the recording is usable",
               "low_success": "a face was tracked in too few frames",
               "no_face": "no face was found", "error": "the video could not be read"}
    said = "; ".join(f"{st}: {meaning[st]}" for st in counts["status"] if st in meaning)
    parts = [
        caption(f"{len(qc)} recordings were tracked. " + (f"Status {said}." if said else "")),
        "<h2>Recordings per tracking status</h2>",
        table(display(counts, {"share": "share of recordings"})),
        "<h2>Share of frames with a tracked face, per recording</h2>",
        bars, table(display(dist)),
        f"<h2>Recordings left out ({len(lo)})</h2>",
        table(display(lo, {"video_id": "recording", "subject_id": "subject",
                           "why": "why"})) if len(lo) else caption("None."),
        "<h2>Montages</h2>",
        caption(f"One montage per recording in this category, {faces}: a timeline of the "
                "tracking outcome of every frame and sampled aligned crops with landmarks."),
    ]
    return page("Tracking quality", parts)


def _bars(hist: np.ndarray) -> str:
    """An inline SVG bar chart (no image file to load)."""
    w, h, top = 26, 90, max(1, int(hist.max()) if hist.size else 1)
    rects = []
    for i, v in enumerate(hist):
        bh = int(round(h * v / top))
        rects.append(f'<rect x="{i * w + 2}" y="{h - bh + 4}" width="{w - 4}" '
                     f'height="{bh}" fill="#4a7bd0"><title>{int(v)}</title></rect>'
                     f'<text x="{i * w + w // 2}" y="{h + 18}" font-size="9" '
                     f'text-anchor="middle">{i * 10}</text>')
    return (f'<svg width="{len(hist) * w + 30}" height="{h + 24}" role="img" '
            f'aria-label="histogram of tracking success rates">{"".join(rects)}'
            f'<text x="{len(hist) * w + 2}" y="{h + 18}" font-size="9">%</text></svg>')


def notes_for(params: dict) -> list[str]:
    agg = params.get("aggregation", "mean")
    if agg == "quantile":
        agg = f"{params.get('quantile', 0.9):g}-quantile"
    return [f"Per recording: the {agg} of its keyframe scores for AUC, the majority vote of "
            "its keyframes for the predicted class. Test predictions pooled over folds. "
            f"Intervals from {params.get('n_boot', 1000)} bootstrap replicates over subjects "
            f"(seed {params.get('seed', 0)}); with fewer than {MIN_SUBJECTS_CI} subjects "
            "they print as n/a (too few subjects).",
            "All configurations: metrics.csv (download) and results/evaluation/"
            "metrics.parquet."]


def summary_page(summ: pd.DataFrame) -> str:
    """The study's headline table (:mod:`neopain.report.summary`), honest estimate first."""
    cap = ("How well does it recognise pain, per recording? 'nested' is the honest "
           "estimate: its configuration is chosen inside each training fold, so the test "
           "subjects never influence the choice. Rows marked optimistic chose their "
           "configuration on the test results (as the papers' tables do); 'median' is a "
           "typical configuration; 'permuted' reruns the whole search with shuffled labels "
           "(should be near AUC 0.5); 'chance' answers the larger class every time. Each "
           "cell: estimate (95% CI, bootstrap over subjects).")
    cols = ["protocol", "estimate", "auc", "auc_lo", "auc_hi", "balanced_accuracy",
            "balanced_accuracy_lo", "balanced_accuracy_hi", "sensitivity", "specificity",
            "n_videos", "n_pos", "n_subjects", "n_configurations", "optimistic",
            "description", "configuration"]
    shown = summ[cols]
    names = {**_names(shown), "auc": "AUC per recording", "balanced_accuracy":
             "balanced accuracy per recording", "n_pos": "recordings with pain",
             "n_configurations": "configurations searched", "description": "what it is"}
    est = shown["estimate"].to_numpy()
    body = table(display(shown, names), row_class=lambda i: (
        "chance" if est[i] == "chance" else "flag" if shown["optimistic"].iloc[i] else ""))
    return page("Summary: the honest estimate beside the optimistic one", [caption(cap), body])
