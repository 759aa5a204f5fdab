rule evaluate:
    """Frame- and video-level metrics with subject-bootstrap CIs; Tables 5 and 6, DeLong
    tests (best ReliefF vs best SU configuration) and ROC curves of the Table 5 choices."""
    input:
        SCORE_FILES,  # every backbone x layer x protocol x selector (common/targets.smk)
    output:
        metrics="results/evaluation/metrics.parquet",
        table5="results/evaluation/table5.md",
        table5_parquet="results/evaluation/table5.parquet",
        table6="results/evaluation/table6.md",
        table6_parquet="results/evaluation/table6.parquet",
        delong="results/evaluation/delong.md",
        delong_parquet="results/evaluation/delong.parquet",
        metrics_md="results/evaluation/metrics.md",
        per_subject="results/evaluation/per_subject.md",
        per_subject_parquet="results/evaluation/per_subject.parquet",
        per_video_parquet="results/evaluation/per_video.parquet",
        chance="results/evaluation/chance.parquet",
        roc_table5=report(
            "results/evaluation/roc_table5.png",
            caption="../report/roc_table.rst",
            category="3. ROC curves",
            subcategory="Per results table",
            labels={"table": "Table 5"},
        ),
        roc_table6=report(
            "results/evaluation/roc_table6.png",
            caption="../report/roc_table.rst",
            category="3. ROC curves",
            subcategory="Per results table",
            labels={"table": "Table 6"},
        ),
        roc=[
            report(
                f"results/evaluation/roc/{b}/{layer}/{p}.png",
                caption="../report/roc.rst",
                category="3. ROC curves",
                subcategory=f"{b} {layer}",
                labels={"backbone": b, "layer": layer, "protocol": p},
            )
            for b, layer, p in ROC_TARGETS
        ],
    params:
        **EVALUATE_PARAMS,  # aggregation, quantile, n_boot, ci_level, seed
        roc_targets=ROC_TARGETS,
    log:
        "logs/evaluate.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/evaluate.py"
