# Export and bedside prediction (issue 9): one verifiable artefact of a trained
# configuration (neopain.deploy.export) and pain timelines for new videos (neopain.deploy.batch, neopain.deploy.predictor).
# Neither is part of `rule all` unless configured: export.enabled: true adds the export
# (and its report entries under "4. Exported model"); predict.model + predict.videos add the timelines.
# Settings, the predict sheet (EXPORT*, PREDICT*) and the export's inputs: common/.


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
        study=EXPORT_STUDY,  # the study settings the artefact records
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
        model=PREDICT_MODEL,
        video=lambda wc: PREDICT_VIDEOS[wc.pvideo],
        # video-level models: the patient's baseline recording (sheet column
        # baseline_path, else predict.baseline_video, else the recording itself)
        baseline=lambda wc: (
            PREDICT_BASELINES.get(wc.pvideo) or PREDICT["baseline_video"] or []
        ),
    output:
        **{k: f"results/predict/{{pvideo}}.{v}" for k, v in PREDICT_SUFFIXES.items()},
    wildcard_constraints:
        pvideo=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    params:
        predict=PREDICT_SETTINGS,
    threads: 1
    log:
        "logs/predict/{pvideo}.log",
    resources:
        gpu=0 if PREDICT["device"] == "cpu" else 1,
        mem_mb=4000,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/predict.py"
