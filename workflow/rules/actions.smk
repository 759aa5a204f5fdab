# Facial actions of pain from the 468-point mesh (issue 15; neopain.actions, docs/actions.md):
# per tracked frame the canonical-pose NFCS/AU descriptors, head pose, wrinkle texture and a
# PSPI-like composite (results/actions/{video}.parquet, readable), plus two feature tables
# that select/classify/evaluate take as one more backbone: actions/frame (keyframes) and
# actions/video (one row per video: temporal statistics over a per-video baseline).

ACTIONS = (config.get("actions") or {}).get("enabled", False)
if ACTIONS:
    LAYER_TARGETS += [("actions", "frame"), ("actions", "video")]


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
        actions=stage("actions"),
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
    """The video-level actions table: one row per video (its temporal statistics)."""
    input:
        videos=expand("results/features/actions/_per_video_stats/{video}.parquet", video=VIDEOS),
        samples=config["samples"],
    output:
        "results/features/{backbone}/{layer}/features.parquet",
    wildcard_constraints:
        backbone="actions",
        layer="video",
    params:
        video_ids=VIDEOS,
        positive_label=config["positive_label"],
        labels=config["labels"],
        data_root=config.get("data_root"),
    log:
        "logs/gather_features/{backbone}/{layer}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/gather_features.py"
