# neopain: neonatal pain recognition from facial expressions by transfer learning.
# Stages: track -> crop -> keyframes -> extract -> split -> select -> classify -> evaluate.
# One rule file per stage; configuration and sample sheet are validated in common.smk.


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/crop.smk"
include: "workflow/rules/keyframes.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/evaluation/table5.md",
        "results/evaluation/metrics.parquet",
        "results/qc/tracking.parquet",
    default_target: True
