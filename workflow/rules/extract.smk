rule extract:
    """All layers of one backbone for one video's keyframes, in one forward pass per batch."""
    input:
        crops="results/crops/{video}.parquet",
        keyframes="results/keyframes/{video}.parquet",
        # a checkpoint this workflow fine-tunes (finetune.smk) as the backbone's weights_file
        weights=lambda wc: [w for w in [str(BACKBONES.get(wc.backbone, {}).get("weights_file", ""))]
                            if w.startswith("results/")],
    output:
        "results/features/{backbone}/_per_video/{video}.parquet",
    params:
        video=video_params,
        layers=lambda wc: BACKBONES[wc.backbone]["layers"],
        backbone_cfg=lambda wc: {k: v for k, v in BACKBONES[wc.backbone].items() if k != "layers"},
        weights_dir=config["extract"].get("weights_dir", "resources/weights"),
        device=config["extract"].get("device", "auto"),
        batch_size=config["extract"].get("batch_size", 32),
        precision=config["extract"].get("precision", "auto"),
        dtype=config["extract"].get("dtype", "float32"),
        workers=config["extract"].get("workers", 2),
        fast_decode=config["extract"].get("fast_decode", True),
    threads: 2
    log:
        "logs/extract/{backbone}/{video}.log",
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/extract.py"


rule gather_features:
    """One table per backbone x layer, one row group per video, with ids and labels."""
    input:
        videos=expand("results/features/{{backbone}}/_per_video/{video}.parquet", video=VIDEOS),
        samples=config["samples"],
    output:
        "results/features/{backbone}/{layer}/features.parquet",
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
