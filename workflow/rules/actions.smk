# Facial actions of pain from the 468-point mesh (issue 15; neopain.features.actions, docs/actions.md):
# per tracked frame the canonical-pose NFCS/AU descriptors, head pose, wrinkle texture and a
# PSPI-like composite (results/actions/{video}.parquet, readable), plus two feature tables
# that select/classify/evaluate take as one more backbone: actions/frame (keyframes) and
# actions/video (one row per video: temporal statistics over a per-video baseline), and
# actions/pose (head-pose statistics alone: how much pose separates the classes).
# Settings (ACTIONS*, LAYER_TARGETS gaining the three tables): common/settings.smk.


ruleorder: gather_actions_video > gather_features


rule actions:
    """Canonical-pose facial-action descriptors of one video's tracked frames."""
    input:
        track="results/tracks/{video}.parquet",
        crops="results/crops/{video}.parquet",
        keyframes="results/keyframes/{video}.parquet",
    output:
        table="results/actions/{video}.parquet",
        frame="results/features/actions/_per_video/{video}.parquet",
        video="results/features/actions/_per_video_stats/{video}.parquet",
    params:
        video=video_params,
        actions=ACTIONS_DESCRIPTORS,
    threads: 1
    log:
        "logs/actions/{video}.log",
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/actions.py"


rule gather_actions_video:
    """The video-level actions tables, one row per video: temporal statistics (video) and
    head-pose statistics alone (pose)."""
    input:
        videos=expand("results/features/actions/_per_video_stats/{video}.parquet", video=VIDEOS),
        samples=config["samples"],
    output:
        "results/features/{backbone}/{layer}/features.parquet",
    wildcard_constraints:
        backbone="actions",
        layer="video|pose",
    params:
        video_files=per_video("results/features/actions/_per_video_stats/{video}.parquet",
                              VIDEOS),
        video_ids=VIDEOS,
        positive_label=config["positive_label"],
        labels=config["labels"],
        data_root=config["data_root"],
    log:
        "logs/gather_features/{backbone}/{layer}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/gather_features.py"


rule actions_intensity:
    """Per-frame pain intensity: logistic regression on the actions/frame features, fitted
    per fold on the training subjects' frames, scoring the held-out subjects' frames."""
    input:
        features="results/features/actions/frame/features.parquet",
        split="results/splits/{protocol}.parquet",
    output:
        frames="results/actions/intensity/{protocol}.parquet",
        coefficients="results/actions/intensity/{protocol}_coefficients.parquet",
        summary="results/actions/intensity/{protocol}_summary.parquet",
        md="results/actions/intensity/{protocol}.md",
    params:
        C=ACTIONS_INTENSITY["C"],
        pose_regression=ACTIONS_POSE_REGRESSION,
        actions=ACTIONS_DESCRIPTORS,
    threads: 1
    log:
        "logs/actions_intensity/{protocol}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/actions_intensity.py"
