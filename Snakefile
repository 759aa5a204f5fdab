# neopain: neonatal pain recognition from facial expressions by transfer learning.
# Stages: track -> crop -> keyframes (one decode pass, per shard of videos) -> extract
# -> split -> select -> classify -> evaluate.
# One rule file per stage; workflow/rules/common.smk is the wiring: validation, settings
# derived from the config, path lists and get_final_output() (rule files read only its names,
# so their order here does not matter).


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/crop.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/texture.smk"
include: "workflow/rules/actions.smk"
include: "workflow/rules/strain.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/fusion.smk"
include: "workflow/rules/nested.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        get_final_output(),  # workflow/rules/common/targets.smk
    default_target: True
