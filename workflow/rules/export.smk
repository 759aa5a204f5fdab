# Export and bedside prediction (issue 9): one verifiable artefact of a trained
# configuration (neopain.deploy.export) and pain timelines for new videos (neopain.deploy.predict).
# Neither is part of `rule all` unless configured: export.enabled: true adds the export
# (and its report entries under "4. Exported model"); predict.model + predict.videos add the timelines.

from neopain.deploy.plan import export_inputs as _export_inputs  # noqa: E402
from neopain.deploy.plan import predict_baselines as _predict_baselines  # noqa: E402
from neopain.deploy.plan import predict_videos as _predict_videos  # noqa: E402

_EXPORT = dict(config.get("export") or {})
_PREDICT = dict(config.get("predict") or {})
EXPORT_INPUTS = _export_inputs(_EXPORT, LAYER_TARGETS, PROTOCOLS, SELECTORS,
                               NESTED_TABLES, NESTED_PROTOCOLS, NESTED_ON)
try:
    PREDICT_VIDEOS = _predict_videos(_PREDICT)
    PREDICT_BASELINES = _predict_baselines(_PREDICT)
except ValueError as _exc:
    raise WorkflowError(f"predict.videos: {_exc}") from None

# the labels of the export rule's features, scores and splits, parallel to EXPORT_INPUTS'
# lists: scripts/export.py picks its inputs by these keys, never by their paths
_NAMED = _EXPORT.get("configuration", "nested")
_KEYED = (
    ([], [], []) if _NAMED == "nested"
    else (LAYER_TARGETS, PROTOCOLS, SELECTORS) if _NAMED in (None, "best")
    else ([(_NAMED["backbone"], _NAMED["layer"])], [_NAMED["protocol"]], [_NAMED["selector"]])
)
EXPORT_KEYS = {
    "features": [[b, layer] for b, layer in _KEYED[0]],
    "scores": [[b, layer, p, s] for b, layer in _KEYED[0] for p in _KEYED[1] for s in _KEYED[2]],
    "splits": list(_KEYED[1]),
}
PREDICT_SUFFIXES = {
    "frames": "frames.parquet",
    "frames_csv": "frames.csv",
    "epochs": "epochs.parquet",
    "epochs_csv": "epochs.csv",
    "png": "timeline.png",
    "html": "timeline.html",
    "summary": "summary.json",
}


rule export:
    """Choose a configuration (nested: inner CV over every subject; best: Table 5; or a
    named one), refit it on every subject, calibrate it by subject-grouped
    cross-validation, write results/export/model.neopain + report."""
    input:
        table5=EXPORT_INPUTS["table5"],
        metrics=EXPORT_INPUTS["metrics"],
        features=EXPORT_INPUTS["features"],
        scores=EXPORT_INPUTS["scores"],
        splits=EXPORT_INPUTS["splits"],
        summary=EXPORT_INPUTS["summary"],
        nested=EXPORT_INPUTS["nested"],
        samples=config["samples"],
    output:
        model="results/export/model.neopain",
        card="results/export/model_card.md",
        card_html=report("results/report/model_card.html",
                         caption="../report/model_card.rst", category="4. Exported model"),
        reliability=report(
            "results/export/reliability.png",
            caption="../report/reliability.rst",
            category="4. Exported model",
        ),
        calibration_md="results/export/calibration.md",
        calibration_html=report("results/report/calibration.html",
                                caption="../report/calibration.rst", category="4. Exported model"),
        calibration="results/export/calibration.parquet",
        training_scores="results/export/training_scores.parquet",
    params:
        study={
            k: (
                {kk: vv for kk, vv in _EXPORT.items() if kk != "enabled"}
                if k == "export"
                else config.get(k)
            )
            for k in (
                "labels",
                "positive_label",
                "seed",
                "fps_for_images",
                "track",
                "crop",
                "keyframes",
                "extract",
                "protocols",
                "select",
                "classify",
                "evaluate",
                "export",
                "nested",
                "actions",  # an actions configuration: its parameters, pose regression
            )
        },
        nested_tables=NESTED_TABLES,
        nested_protocols=NESTED_PROTOCOLS if NESTED_ON else [],
        input_keys=EXPORT_KEYS,
    threads: 2
    log:
        "logs/export.log",
    resources:
        mem_mb=8000,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/export.py"


rule predict:
    """Pain timeline of one new video with the exported model (predict.model)."""
    input:
        model=_PREDICT.get("model") or "results/export/model.neopain",
        video=lambda wc: PREDICT_VIDEOS[wc.pvideo],
        # video-level models: the patient's baseline recording (sheet column
        # baseline_path, else predict.baseline_video, else the recording itself)
        baseline=lambda wc: (
            PREDICT_BASELINES.get(wc.pvideo) or _PREDICT.get("baseline_video") or []
        ),
    output:
        **{k: f"results/predict/{{pvideo}}.{v}" for k, v in PREDICT_SUFFIXES.items()},
    wildcard_constraints:
        pvideo=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    params:
        predict={k: v for k, v in _PREDICT.items() if k not in ("videos", "data_root")},
    threads: 1
    log:
        "logs/predict/{pvideo}.log",
    resources:
        gpu=0 if str(_PREDICT.get("device", "cpu")) == "cpu" else 1,
        mem_mb=4000,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/predict.py"


EXPORT_TARGETS = (
    (["results/export/model.neopain", "results/export/model_card.md"]
     if _EXPORT.get("enabled") else [])
    + [f"results/predict/{v}.{s}" for v in PREDICT_VIDEOS for s in PREDICT_SUFFIXES.values()]
)
