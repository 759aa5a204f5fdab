# neopain: neonatal pain recognition from facial expressions by transfer learning.
# Stages: track -> crop -> keyframes (one decode pass, per shard of videos) -> extract
# -> split -> select -> classify -> evaluate.
# One rule file per stage; configuration and sample sheet are validated in common.smk.


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/crop.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/texture.smk"
include: "workflow/rules/actions.smk"
include: "workflow/rules/strain.smk"
include: "workflow/rules/fusion.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/nested.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/export.smk"


rule all:
    input:
        "results/evaluation/table5.md",
        "results/evaluation/roc_table5.png",  # ROC of every Table 5 / 6 choice, per recording
        "results/evaluation/roc_table6.png",
        "results/evaluation/metrics.parquet",
        "results/qc/tracking.parquet",
        "results/qc/tracking.md",  # videos not ok and subjects left out, with the reason
        # every ROC figure: a newly configured backbone/layer/texture reruns evaluate
        [f"results/evaluation/roc/{b}/{layer}/{p}.png" for b, layer, p in ROC_TARGETS],
        FINETUNE_TARGETS,  # [] unless finetune.enabled (workflow/rules/finetune.smk)
        EXPORT_TARGETS,  # [] unless export.enabled / predict.model+videos (export.smk)
        TABLE7,  # [] unless strain.enabled (workflow/rules/fusion.smk)
        NESTED_TARGETS,  # [] unless nested.enabled (workflow/rules/nested.smk)
        ACTIONS_TARGETS,  # [] unless actions.intensity.enabled (workflow/rules/actions.smk)
        REPORT_TARGETS,  # landing text and HTML result pages (workflow/rules/report.smk)
    default_target: True
