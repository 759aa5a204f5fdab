rule split:
    """Subject-disjoint folds of one protocol, over the subjects with usable frames."""
    input:
        samples=config["samples"],
        tracks=TRACK_MANIFESTS,  # stand for every video's tracking QC (docs/scale.md)
    output:
        "results/splits/{protocol}.parquet",
    params:
        qc=per_video("results/tracks/{video}.qc.json", VIDEOS),
        spec=lambda wc: PROTOCOLS[wc.protocol],
        labels=config["labels"],
        data_root=config["data_root"],
    priority: 1  # the chain to the tables first (docs/scale.md: what runs first)
    log:
        "logs/split/{protocol}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/split.py"
