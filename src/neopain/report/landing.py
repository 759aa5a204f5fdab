"""The report's landing page, its plain-text summary and its run facts.

:func:`build` turns the evaluation tables into what a clinical reader needs first:

* ``landing.rst`` -- the workflow-level ``report:`` text of ``snakemake --report``
  (``workflow/rules/report.smk`` uses it once it exists): the task; recordings, subjects
  and frames used and left out; the headline result with its CI and how it was chosen;
  the chance level; links to the tables;
* ``summary.txt`` -- the same facts as plain text (``make demo`` ends with it);
* ``landing.json`` -- the same facts as data.

The headline is the ``nested`` row of issue 14's ``summary.parquet`` when that table is
given (an honest estimate: the configuration chosen inside each training fold); without
it, the Table 5 configuration with the best frame accuracy, labelled as an upper bound
over the N configurations it was chosen from (chosen on the test results).

:func:`report_metadata` reads ``results/provenance/run.json`` for the landing page's
metadata (``--report-metadata workflow/report/metadata.yaml``): code version, config as
run, software versions and weights with their sha256.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from neopain.learn.evaluate import with_selector_label
from neopain.core.runrecord import REPORT_TEXT
from neopain.report.report_html import MIN_SUBJECTS_CI, TOO_FEW

#: a per-recording statistic needs recordings of each class from at least this many
#: subjects, else it prints as "n/a (too few subjects)"
MIN_SUBJECTS_CLASS = 2


def _ci_text(v, lo, hi, n_subjects) -> str:
    if pd.isna(v):
        return "n/a"
    if n_subjects < MIN_SUBJECTS_CI or pd.isna(lo):
        return f"{v:.3f} (95% CI {TOO_FEW})"
    return f"{v:.3f} (95% CI {lo:.3f}\u2013{hi:.3f})"


def headline(t5: pd.DataFrame, metrics: pd.DataFrame,
             nested: pd.DataFrame | None = None) -> dict[str, Any]:
    """The headline estimate (see the module docstring) as a dict of plain facts."""
    if nested is not None and not nested.empty and (nested["estimate"] == "nested").any():
        r = nested[nested["estimate"] == "nested"].iloc[0]
        return {
            "source": "nested", "protocol": r.get("protocol"), "level": "video",
            "auc": r["auc"], "auc_lo": r["auc_lo"], "auc_hi": r["auc_hi"],
            "balanced_accuracy": r["balanced_accuracy"],
            "balanced_accuracy_lo": r["balanced_accuracy_lo"],
            "balanced_accuracy_hi": r["balanced_accuracy_hi"],
            "n_videos": int(r["n_videos"]), "n_subjects": int(r["n_subjects"]),
            "n_configurations": int(r["n_configurations"]),
            "optimistic": bool(r.get("optimistic", False)),
            "how": (f"{r.get('description') or 'nested estimate'}: the configuration is "
                    "chosen inside each training fold among "
                    f"{int(r['n_configurations'])} configurations, so the test subjects "
                    "never influence the choice"),
        }
    if t5.empty:
        return {"source": "none", "how": "no configuration predicts both classes"}
    t5 = with_selector_label(t5)   # relieff(15): the configuration as the tables show it
    t = t5.assign(_a=t5["frame_accuracy"].fillna(-1), _u=t5["frame_auc"].fillna(-1))
    r = t.sort_values(["_a", "_u", "backbone", "layer", "protocol", "selector",
                       "classifier"], ascending=[False, False] + [True] * 5).iloc[0]
    n_cfg = int((metrics["level"] == "frame").sum())
    return {
        "source": "best_of_n", "protocol": r["protocol"], "level": "video",
        "auc": r["video_auc"], "auc_lo": r["video_auc_lo"], "auc_hi": r["video_auc_hi"],
        "balanced_accuracy": r["video_balanced_accuracy"],
        "balanced_accuracy_lo": r["video_balanced_accuracy_lo"],
        "balanced_accuracy_hi": r["video_balanced_accuracy_hi"],
        "n_videos": int(r["n_videos"]), "n_subjects": int(r["n_subjects"]),
        "n_configurations": n_cfg, "optimistic": True,
        "configuration": (f"{r['backbone']} {r['layer']} {r['selector']} {r['classifier']}"
                          f" [{r['protocol']}]"),
        "key": {k: str(r[k]) for k in ("backbone", "layer", "protocol", "selector",
                                        "classifier")},
        "how": (f"UPPER BOUND: the best of {n_cfg} configuration{'s' * (n_cfg != 1)}, "
                "chosen on the test results by frame accuracy (Table 5), so optimistic"),
        "constant_per_recording": bool(r.get("video_constant", False)),
    }


def data_facts(qc: pd.DataFrame, videos: pd.DataFrame, t5: pd.DataFrame,
               sheet: pd.DataFrame) -> dict[str, Any]:
    """Recordings, subjects and frames used and left out (and why)."""
    used = set(videos["video_id"]) if not videos.empty else set()
    status = qc.set_index("video_id")["status"].astype(str).to_dict() if not qc.empty else {}
    errors = qc.set_index("video_id")["error"].to_dict() if "error" in qc.columns else {}
    left = []
    for vid in sheet.index:
        if vid in used:
            continue
        st = status.get(vid, "not tracked")
        why = (f"tracking: {st}" + (f" ({errors[vid]})" if isinstance(errors.get(vid), str)
                                    and errors.get(vid) else "")
               if st != "ok" else "not in the test folds (split)")
        left.append({"video_id": vid, "subject_id": str(sheet.loc[vid, "subject_id"]),
                     "label": str(sheet.loc[vid, "label"]), "why": why})
    subj_all = set(sheet["subject_id"].astype(str))
    subj_used = set(videos["subject_id"].astype(str)) if not videos.empty else set()
    n_dec = int(qc["n_frames"].fillna(0).sum()) if not qc.empty else 0
    n_ok = int(qc["n_ok"].fillna(0).sum()) if not qc.empty else 0
    n_key = int(t5["n_frames"].max()) if not t5.empty else 0
    return {"n_recordings": int(len(sheet)), "n_recordings_used": len(used),
            "n_subjects": len(subj_all), "n_subjects_used": len(subj_used),
            "n_frames_decoded": n_dec, "n_frames_tracked": n_ok, "n_keyframes_scored": n_key,
            "left_out": left,
            "status_counts": {str(k): int(v) for k, v in
                              qc["status"].astype(str).value_counts().sort_index().items()}
            if not qc.empty else {}}


def chance_facts(chance: pd.DataFrame, protocol, positive: str, negative: str) -> dict:
    c = chance[(chance["protocol"] == protocol) & (chance["level"] == "video")]
    if c.empty:
        return {}
    c = c.iloc[0]
    major = positive if c["majority"] == "positive" else negative
    n_major = int(c["n_pos"]) if c["majority"] == "positive" else int(c["n"] - c["n_pos"])
    return {"answer": major, "n_major": n_major, "n": int(c["n"]),
            "accuracy": float(c["accuracy"]), "balanced_accuracy": 0.5, "auc": 0.5}


def facts(t5, metrics, chance, qc, videos, sheet, config: Mapping[str, Any],
          nested: pd.DataFrame | None = None) -> dict[str, Any]:
    labels = list(config.get("labels") or ["no_pain", "pain"])
    positive = str(config.get("positive_label") or labels[-1])
    negative = next((str(x) for x in labels if str(x) != positive), "not " + positive)
    head = headline(t5, metrics, nested)
    if head.get("source") == "best_of_n" and not videos.empty:
        key = head["key"]
        v = videos[(videos["backbone"] == key["backbone"]) & (videos["layer"] == key["layer"])
                   & (videos["protocol"] == key["protocol"])
                   & (videos["configuration"] == f"{key['selector']} {key['classifier']}")]
        head["n_subjects_pos"] = int(v.loc[v["y"] == 1, "subject_id"].nunique())
        head["n_subjects_neg"] = int(v.loc[v["y"] == 0, "subject_id"].nunique())
    task = (config.get("report") or {}).get("task") or (
        f"{positive.replace('_', ' ')} vs {negative.replace('_', ' ')} from facial video "
        f"({', '.join(sorted((config.get('extract') or {}).get('backbones') or {}))} "
        f"features; protocols {', '.join(sorted(config.get('protocols') or {}))})")
    return {"task": task, "positive": positive, "negative": negative,
            "illustrative": "demo" in str(config.get("samples", "")),
            "headline": head, "data": data_facts(qc, videos, t5, sheet),
            "chance": chance_facts(chance, head.get("protocol"), positive, negative)}


def summary_lines(f: Mapping[str, Any]) -> list[str]:
    """The landing page's facts as plain sentences (the same for the page and ``make
    demo``)."""
    d, h, c = f["data"], f["headline"], f["chance"]
    lines = [f"Task: {f['task']}."]
    if f["illustrative"]:
        lines.append("The demo's labels are ILLUSTRATIVE (samples/demo.tsv): they exercise "
                     "the pipeline and say nothing about pain.")
    lines.append(f"Data: {d['n_recordings_used']} of {d['n_recordings']} recordings and "
                 f"{d['n_subjects_used']} of {d['n_subjects']} subjects used; "
                 f"{len(d['left_out'])} recording(s) left out. Frames: "
                 f"{d['n_frames_tracked']} of {d['n_frames_decoded']} decoded frames had a "
                 f"tracked face; {d['n_keyframes_scored']} keyframes were scored.")
    if d["left_out"]:
        shown = d["left_out"][:10]
        lines.append("Left out: " + "; ".join(f"{x['video_id']} ({x['why']})" for x in shown)
                     + (f"; and {len(d['left_out']) - 10} more (Tracking QC page)."
                        if len(d["left_out"]) > 10 else "."))
    if h.get("source") == "none":
        lines.append("Result: none (no configuration predicts both classes).")
    elif min(h.get("n_subjects_pos", 2), h.get("n_subjects_neg", 2)) < MIN_SUBJECTS_CLASS:
        lines.append(
            f"Result per recording ({h['protocol']}, {h['n_videos']} recordings, "
            f"{h['n_subjects']} subjects; {h['n_subjects_pos']} with {f['positive']} and "
            f"{h['n_subjects_neg']} with {f['negative']} recordings): AUC {TOO_FEW}; "
            f"balanced accuracy {TOO_FEW}.")
        lines.append(f"How chosen: {h['how']}; configuration {h['configuration']}.")
    else:
        ns = h["n_subjects"]
        lines.append(
            f"Result per recording ({h['protocol']}, {h['n_videos']} recordings, {ns} "
            f"subjects): AUC {_ci_text(h['auc'], h['auc_lo'], h['auc_hi'], ns)}; balanced "
            f"accuracy {_ci_text(h['balanced_accuracy'], h['balanced_accuracy_lo'], h['balanced_accuracy_hi'], ns)}.")  # noqa: E501
        lines.append(f"How chosen: {h['how']}"
                     + (f"; configuration {h['configuration']}." if h.get("configuration")
                        else ".")
                     + (" Per recording it answers one class for every recording (a "
                        "constant predictor at that level)."
                        if h.get("constant_per_recording") else ""))
    if c:
        lines.append(f"Chance level: always answering \"{c['answer']}\" (the larger class, "
                     f"{c['n_major']} of {c['n']} recordings) gives accuracy "
                     f"{c['accuracy']:.3f}, balanced accuracy 0.500 and AUC 0.500.")
    lines.append("Where: the report is built by `snakemake --report results/report.html` "
                 "(or `make report`); tables in results/evaluation/ (Parquet, Markdown), "
                 "their HTML pages in results/report/, per-video predictions in "
                 "results/evaluation/per_video.parquet.")
    return lines


def landing_rst(f: Mapping[str, Any]) -> str:
    """The workflow-level report text (reStructuredText, rendered by Snakemake)."""
    lines = summary_lines(f)
    title = "neopain report"
    out = [title, "=" * len(title), ""]
    for line in lines:
        key, _, rest = line.partition(": ")
        out += [f"**{_rst(key)}:** {_rst(rest)}", ""]
    # `name`_ links are the report's own targets for its result files (Snakemake)
    out += ["**Tables** (in *1. Results*): `table5.html`_ (best per backbone, layer and "
            "protocol, chosen per keyframe), `table6.html`_ (chosen per recording), "
            "`delong.html`_, `per_subject.html`_, `per_video.html`_; every configuration: "
            "`metrics.csv`_ (download). Tracking quality: `tracking_qc.html`_ (*2. Tracking "
            "QC*); ROC curves in *3. ROC curves*. The run's code version, config, software "
            "and weights are listed below.", ""]
    return "\n".join(out) + "\n"


def _rst(s: str) -> str:
    """Plain text safe for reStructuredText inline markup and the Jinja pass."""
    s = str(s)
    for ch in ("\\", "*", "`", "_", "|"):
        s = s.replace(ch, "\\" + ch)
    return s.replace("{", "(").replace("}", ")")


# ----------------------------------------------------------------------------
# run facts and the landing page's metadata
# ----------------------------------------------------------------------------
def run_section_rst(rec: Mapping[str, Any]) -> str:
    """The Run section (reStructuredText with raw HTML) from a run record: code version,
    config as run, software versions, weights with sha256."""
    import yaml

    esc = html.escape
    wf = rec.get("workflow") or {}
    pkgs = "".join(f"<li>{esc(k)} {esc(str(v))}</li>"
                   for k, v in sorted((rec.get("packages") or {}).items()))
    weights = "".join(f"<li>{esc(k)}: <code>{esc(str(v.get('sha256')))}</code></li>"
                      for k, v in sorted((rec.get("weights") or {}).items()))
    cfg = yaml.safe_dump(rec.get("config") or {}, sort_keys=False)
    body = (
        f"<p><b>Code version</b> {esc(str(wf.get('code_version')))}; Snakemake "
        f"{esc(str(wf.get('snakemake')))}; run record results/provenance/run.json written "
        f"{esc(str(rec.get('created')))} with {len(rec.get('outputs') or {})} outputs and "
        "their sha256 (check with <code>neopain verify results/</code>).</p>"
        f"<p><b>Weights (sha256)</b></p><ul>{weights or '<li>none recorded</li>'}</ul>"
        f"<details><summary><b>Config as run</b> (sha256 "
        f"{esc(str(rec.get('config_sha256'))[:12])}...)</summary><pre>{esc(cfg)}</pre>"
        f"</details><details><summary><b>Software versions</b> "
        f"({len(rec.get('packages') or {})} packages)</summary><ul>{pkgs}</ul></details>")
    body = body.replace("{", "&#123;").replace("}", "&#125;")   # no Jinja markup
    return "Run\n---\n\n.. raw:: html\n\n   " + body.replace("\n", "\n   ") + "\n"


def write_report_text(workdir: str | Path = ".") -> Path | None:
    """``.snakemake/neopain/report.rst``: the landing text plus the Run section from the
    run record (called after the record is written); None without a landing text."""
    from neopain.core.provenance import write_text

    workdir = Path(workdir)
    landing = workdir / "results" / "report" / "landing.rst"
    record = workdir / "results" / "provenance" / "run.json"
    if not landing.is_file():
        return None
    text = landing.read_text()
    if record.is_file():
        text += "\n" + run_section_rst(json.loads(record.read_text()))
    out = workdir / REPORT_TEXT
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(text, out)
    return out


def landing_numbers(workdir: str | Path = ".") -> dict[str, float | int]:
    """The landing page's metadata (numbers only: Snakemake 9.27 shows numbers as they
    are) from ``results/report/landing.json``; empty before the first run."""
    path = Path(workdir) / "results" / "report" / "landing.json"
    if not path.is_file():
        return {}
    f = json.loads(path.read_text())
    d, h, c = f["data"], f["headline"], f.get("chance") or {}
    out: dict[str, float | int] = {
        "recordings used": d["n_recordings_used"],
        "recordings left out": d["n_recordings"] - d["n_recordings_used"],
        "subjects used": d["n_subjects_used"],
    }
    v = h.get("auc")
    if v is not None and v == v:
        out["headline AUC per recording"] = round(float(v), 3)
    if c:
        out["chance accuracy per recording"] = round(float(c["accuracy"]), 3)
    return out
