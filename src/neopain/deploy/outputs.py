"""What a prediction writes: tables, the timeline figure and page, the summary.

For source ``NAME`` (:func:`write_outputs`): ``NAME.frames.{parquet,csv}``,
``NAME.epochs.{parquet,csv}``, ``NAME.timeline.png`` (probability, smoothed line broken
at gaps, tracking gaps shaded, threshold, epoch decisions; with the face mesh the
PSPI-like intensity on a right-hand axis), ``NAME.timeline.html`` (the PNG inlined as
base64 plus the tables; no script, no external resource), ``NAME.summary.json``; and
only with ``annotate`` (faces are PHI; off by default) ``NAME.annotated.mp4``
(:func:`write_annotated`).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from neopain.deploy.exported import ExportedModel
from neopain.faces.video import Frame, VideoError


def plot_timeline(frames: pd.DataFrame, epochs: pd.DataFrame, threshold: float, path,
                  title: str) -> None:
    """The timeline PNG (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    t = frames["timestamp"].to_numpy(np.float64)
    ok = frames["ok"].to_numpy(bool)
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / 30
    # gaps: runs of frames without a scored face
    i = 0
    while i < len(t):
        if ok[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(t) and not ok[j + 1]:
            j += 1
        ax.axvspan(t[i] - dt / 2, t[j] + dt / 2, color="0.85", lw=0, zorder=0)
        i = j + 1
    ax.plot(t[ok], frames["probability"].to_numpy()[ok], ".", ms=2.5, c="tab:blue",
            alpha=0.45, label="frame probability")
    ax.plot(t, frames["smoothed"].to_numpy(np.float64), "-", c="tab:blue", lw=1.8,
            label="smoothed (NaN at gaps)")
    ax.axhline(threshold, ls="--", c="tab:red", lw=1, label=f"threshold {threshold:.2f}")
    pspi = (frames["pspi"].to_numpy(np.float64) if "pspi" in frames else np.zeros(0))
    if np.isfinite(pspi).any():  # the PSPI-like facial-action intensity, own axis
        ax2 = ax.twinx()
        ax2.plot(t, pspi, "-", c="tab:purple", lw=0.9, alpha=0.8)
        ax2.set_ylabel("PSPI-like (IOD)", color="tab:purple", fontsize=8)
        ax2.set_ylim(0, max(float(np.nanmax(pspi)) * 1.1, 1e-3))
        ax2.tick_params(axis="y", colors="tab:purple", labelsize=7)
        ax.plot([], [], "-", c="tab:purple", lw=0.9, label="PSPI-like intensity (right axis)")
    for _, e in epochs.iterrows():
        colour = {1: "tab:red", 0: "tab:green"}.get(
            None if pd.isna(e["decision"]) else int(e["decision"]), "0.6")
        ax.axvspan(e["start"], e["end"], ymin=0.965, ymax=1.0, color=colour, lw=0,
                   alpha=0.9 if colour != "0.6" else 0.5)
        ax.axvline(e["start"], c="0.5", lw=0.5, ls=":")
    ends = [float(e) for e in epochs["end"]] + ([float(t.max()) + dt] if len(t) else [1.0])
    ax.set(xlim=(float(t.min()) - dt if len(t) else 0.0, max(ends)), ylim=(-0.02, 1.06),
           xlabel="time (s)", ylabel="P(pain)", title=title)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color="0.85", label="no face tracked (missing, not 0)"),
                Patch(color="tab:red", label="epoch: pain"),
                Patch(color="tab:green", label="epoch: no pain"),
                Patch(color="0.6", alpha=0.5, label="epoch: insufficient coverage")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def _html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
                s = "&ndash;"
            elif isinstance(v, float):
                s = f"{v:.3f}"
            else:
                s = html.escape(str(v))
            cells.append(f"<td>{s}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def timeline_html(png: bytes, summary: dict, epochs: pd.DataFrame) -> str:
    """A self-contained page: the PNG inlined, the summary and the epoch table."""
    s = summary
    facts = [
        ("video", s["path"]), ("status", s["status"] + (f": {s['error']}" if s["error"] else "")),
        ("frames processed", s["n_frames_processed"]),
        ("frames with a scored face", f"{s['n_ok']} ({100 * s['success_rate']:.1f}%)"),
        ("model", f"{s['model']['name']} (sha256 {s['model']['sha256'][:16]}...)"),
        ("threshold", f"{s['threshold']:.4f}"), ("smoother", s["smoother"]),
        ("epoch decision", s["epoch_rule"]),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts)
    img = base64.b64encode(png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>neopain: {html.escape(s['video_id'])}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1100px}}
table{{border-collapse:collapse;margin:0.8em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;
font-size:0.9em;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>Pain timeline: {html.escape(s['video_id'])}</h1>
<p>Research software output, not a diagnosis. Grey bands: no face tracked (missing values,
not zero).</p>
<img alt="pain probability timeline" src="data:image/png;base64,{img}">
<h2>Summary</h2><table>{rows}</table>
<h2>Epochs</h2>{_html_table(epochs)}
</body></html>
"""


def predict_paths(out_dir: str | os.PathLike, video_id: str) -> dict[str, Path]:
    out = Path(out_dir)
    return {k: out / f"{video_id}.{k.replace('_', '.')}" for k in (
        "frames_parquet", "frames_csv", "epochs_parquet", "epochs_csv", "timeline_png",
        "timeline_html", "summary_json")}


def write_outputs(result: dict, out_dir: str | os.PathLike, model: ExportedModel,
                  source_sha256: str | None = None) -> dict[str, Path]:
    """Write every output of one prediction into ``out_dir`` (atomic per file)."""
    from neopain.core import provenance

    s = result["summary"]
    paths = predict_paths(out_dir, s["video_id"])
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    sources = {"model": model.sha256}
    if source_sha256:
        sources[f"video:{s['video_id']}"] = source_sha256
    prov = provenance.make_provenance("predict", s["options"], sources,
                                      params={"model": s["model"], "options": s["options"]})
    frames, epochs = result["frames"], result["epochs"]
    provenance.write_table(pa.Table.from_pandas(frames, preserve_index=False),
                           paths["frames_parquet"], prov)
    provenance.write_table(pa.Table.from_pandas(epochs, preserve_index=False),
                           paths["epochs_parquet"], prov)
    provenance.write_text(frames.to_csv(index=False, na_rep=""), paths["frames_csv"])
    provenance.write_text(epochs.to_csv(index=False, na_rep=""), paths["epochs_csv"])
    title = (f"{s['video_id']}: {s['n_ok']}/{s['n_frames_processed']} frames with a face; "
             f"{model.info['configuration']['classifier']} on "
             f"{model.info['backbone']['name']}/{model.info['backbone']['layer']}")
    with provenance.atomic_path(paths["timeline_png"]) as tmp:
        plot_timeline(frames, epochs, model.threshold, tmp, title)
    provenance.write_text(timeline_html(paths["timeline_png"].read_bytes(), s, epochs),
                          paths["timeline_html"])
    provenance.write_json({**s, "source_sha256": source_sha256}, paths["summary_json"])
    return paths


def write_annotated(frames_iter: Iterable[Frame], result: dict, threshold: float,
                    out: str | os.PathLike) -> Path:
    """Write the processed frames (``frames_iter``: the source decoded as the prediction
    saw it) with box, landmarks and probability (PHI!)."""
    import cv2

    frames = result["frames"].set_index("frame")
    tr = result["track"].select(["frame", "ok", "x1", "y1", "x2", "y2",
                                 "landmarks"]).to_pydict()
    boxes = {f: (o, (x1, y1, x2, y2), lm) for f, o, x1, y1, x2, y2, lm in zip(
        tr["frame"], tr["ok"], tr["x1"], tr["y1"], tr["x2"], tr["y2"], tr["landmarks"])}
    out = Path(out)
    ts = result["frames"]["timestamp"].to_numpy()
    fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 10.0
    writer = None
    thr = threshold
    try:
        for fr in frames_iter:
            if fr.index not in frames.index:
                continue
            img = cv2.cvtColor(fr.image, cv2.COLOR_RGB2BGR)
            if writer is None:
                h, w = img.shape[:2]
                writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"),
                                         float(fps), (w, h))
                if not writer.isOpened():
                    raise OSError(f"{out}: cannot open a video writer (mp4v)")
            row = frames.loc[fr.index]
            ok, box, lm = boxes.get(fr.index, (False, None, None))
            p = row["probability"]
            if ok and box is not None and lm is not None:
                colour = (40, 40, 230) if p >= thr else (60, 200, 60)
                x1, y1, x2, y2 = (int(round(v)) for v in box)
                cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
                for x, y in np.asarray(lm).reshape(5, 2):
                    cv2.circle(img, (int(round(x)), int(round(y))), 3, (255, 255, 0), -1)
                text = f"P(pain) {p:.2f}"
            else:
                text = f"no face ({row['reason']})"
            cv2.putText(img, f"t={fr.timestamp:.2f}s  {text}", (10, 30),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(img, f"t={fr.timestamp:.2f}s  {text}", (10, 30),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
            writer.write(img)
    except VideoError:
        pass
    finally:
        if writer is not None:
            writer.release()
    return out
