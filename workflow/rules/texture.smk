# Classic texture baselines (issue 6): uniform LBP and LTP grid histograms of every
# keyframe, written as per-video tables in extract's layout, so gather_features builds
# results/features/{lbp,ltp}/grid/features.parquet and select/classify/evaluate treat
# them as one more backbone x layer (LAYER_TARGETS in common/settings.smk lists the enabled ones).


rule texture:
    """LBP / LTP grid descriptors of one video's keyframes (see neopain.features.texture)."""
    input:
        crops="results/crops/{video}.parquet",
        keyframes="results/keyframes/{video}.parquet",
    output:
        "results/features/{texture}/_per_video/{video}.parquet",
    wildcard_constraints:
        texture="lbp|ltp",
    params:
        video=video_params,
        texture=lambda wc: config["texture"][wc.texture],
    threads: 1
    log:
        "logs/texture/{texture}/{video}.log",
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/texture.py"
