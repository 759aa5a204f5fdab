# Fine-tuning and cascaded fine-tuning (issue 7; neopain.finetune). GPU rules: gpu=1.
#   finetune        per (backbone, protocol, fold): from the backbone's weights, new head
#   cascade_stage1  per backbone: the auxiliary expression set (finetune.cascade.aux), one
#                   cached checkpoint reused by every protocol and fold
#   cascade         per (backbone, protocol, fold): from the stage-1 checkpoint, new head
#   evaluate_finetune  frozen features vs fine-tuned vs cascaded, DeLong p-values
# `rule all` asks for results/evaluation/finetune.{md,parquet} only with finetune.enabled.
# Settings (FT_*, ft_settings) and fold lists: common/settings.smk, common/targets.smk.


rule finetune:
    """Fine-tune a backbone (new head) on one fold's training subjects; score its test
    subjects (results/scores schema)."""
    input:
        **FT_FOLD_INPUT,
    output:
        model="results/finetune/{backbone}/{protocol}/fold{fold}/model.safetensors",
        sidecar="results/finetune/{backbone}/{protocol}/fold{fold}/model.json",
        scores="results/finetune/{backbone}/{protocol}/fold{fold}/scores.parquet",
    params:
        labels=config["labels"],
        positive_label=config["positive_label"],
        data_root=config["data_root"],
        video_ids=VIDEOS,
        layer=FT_LAYER,
        backbone_cfg=lambda wc: ft_backbone_cfg(wc.backbone),
        weights_dir=config["extract"]["weights_dir"],
        train=ft_settings(),
        device=FT_RUN["device"],
        precision=FT_RUN["precision"],
        workers=FT_RUN["workers"],
        resume_dir=lambda wc: f"{FT_RESUME}/finetune/{wc.backbone}/{wc.protocol}/fold{wc.fold}",
    threads: 2
    log:
        "logs/finetune/{backbone}/{protocol}/fold{fold}.log",
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/finetune.py"


rule cascade_stage1:
    """Cascade stage 1: fine-tune on the auxiliary labelled expression set (its classes).
    Independent of protocol and fold: one checkpoint per backbone."""
    input:
        aux=ft_aux_input,
    output:
        model="results/cascade/stage1/{backbone}/model.safetensors",
        sidecar="results/cascade/stage1/{backbone}/model.json",
    params:
        aux_data_root=FT_AUX["data_root"],
        aux_labels=FT_AUX["labels"],
        video_stride=FT_AUX["video_stride"],
        layer=FT_LAYER,
        backbone_cfg=lambda wc: ft_backbone_cfg(wc.backbone),
        weights_dir=config["extract"]["weights_dir"],
        train=ft_settings("stage1"),
        device=FT_RUN["device"],
        precision=FT_RUN["precision"],
        workers=FT_RUN["workers"],
        resume_dir=lambda wc: f"{FT_RESUME}/cascade_stage1/{wc.backbone}",
    threads: 2
    log:
        "logs/cascade_stage1/{backbone}.log",
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/cascade.py"


rule cascade:
    """Cascade stage 2: from the stage-1 checkpoint, a new head, one fold's training
    subjects; scores of its test subjects (results/scores schema)."""
    input:
        **FT_FOLD_INPUT,
        stage1="results/cascade/stage1/{backbone}/model.safetensors",
        stage1_sidecar="results/cascade/stage1/{backbone}/model.json",
    output:
        model="results/cascade/{backbone}/{protocol}/fold{fold}/model.safetensors",
        sidecar="results/cascade/{backbone}/{protocol}/fold{fold}/model.json",
        scores="results/cascade/{backbone}/{protocol}/fold{fold}/scores.parquet",
    params:
        labels=config["labels"],
        positive_label=config["positive_label"],
        data_root=config["data_root"],
        video_ids=VIDEOS,
        layer=FT_LAYER,
        backbone_cfg=lambda wc: ft_backbone_cfg(wc.backbone),
        weights_dir=config["extract"]["weights_dir"],
        train=ft_settings("stage2"),
        device=FT_RUN["device"],
        precision=FT_RUN["precision"],
        workers=FT_RUN["workers"],
        resume_dir=lambda wc: f"{FT_RESUME}/cascade/{wc.backbone}/{wc.protocol}/fold{wc.fold}",
    threads: 2
    log:
        "logs/cascade/{backbone}/{protocol}/fold{fold}.log",
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/cascade.py"


rule evaluate_finetune:
    """Frozen features (best Table-5 configuration) vs fine-tuned vs cascaded per backbone
    x protocol, frame and video level, subject-bootstrap CIs, DeLong p-values."""
    input:
        frozen=FT_FROZEN,
        finetune=[f"results/finetune/{b}/{p}/fold{f}/scores.parquet" for b, p, f in FT_FOLDS],
        cascade=[f"results/cascade/{b}/{p}/fold{f}/scores.parquet" for b, p, f in FT_FOLDS]
        if FT_CASCADE_ON else [],
    output:
        md="results/evaluation/finetune.md",  # in the report as results/report/finetune.html
        table="results/evaluation/finetune.parquet",
    params:
        layer=FT_LAYER,
        cascade=FT_CASCADE_ON,
        **EVALUATE_PARAMS,  # aggregation, quantile, n_boot, ci_level, seed
    log:
        "logs/evaluate_finetune.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/evaluate_finetune.py"
