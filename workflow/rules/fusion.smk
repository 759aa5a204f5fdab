# Fusion of selected deep features with optical-strain features: the paper's Table 7
# (issue 6). fusion: per backbone x layer x protocol x selector, per fold, the fold's
# top-k deep features (the select stage's ranking, training subjects only) + the
# strain features, scored as deep alone, strain alone and fused; evaluate_fusion:
# Table 7 with DeLong tests. Only the deep backbones of extract.backbones are fused.
# Included before select.smk (which reads FUSION_RANK_K).

FUSION = config.get("fusion") or {}
FUSION_K = list(FUSION.get("k", [15]))
# the select stage keeps rankings long enough for these too (select.smk: max_k)
FUSION_RANK_K = FUSION_K if STRAIN_ON else []
FUSION_TARGETS = [
    (b, layer, p, s)
    for b, spec in BACKBONES.items()
    for layer in spec["layers"]
    for p in PROTOCOLS
    for s in SELECTORS
]
TABLE7 = ["results/evaluation/table7.md"] if STRAIN_ON else []


rule fusion:
    """Deep (top-k), strain and fused features of one configuration: per-frame test scores."""
    input:
        features="results/features/{backbone}/{layer}/features.parquet",
        split="results/splits/{protocol}.parquet",
        selection="results/selection/{backbone}/{layer}/{protocol}/{selector}.parquet",
        strain="results/strain/_features.parquet",
        # with facial actions (actions.smk): Table 7 gains actions and deep+strain+actions
        actions=["results/features/actions/video/features.parquet"] if ACTIONS else [],
    output:
        "results/fusion/{backbone}/{layer}/{protocol}/{selector}.parquet",
    params:
        k=FUSION_K,
        strain_k=FUSION.get("strain_k", 5),
        actions_k=FUSION.get("actions_k", 10),
        selector=lambda wc: SELECTORS[wc.selector],
        classifiers=config["classify"]["classifiers"],
        preset=config["classify"].get("preset", "paper"),
        search=config["classify"].get("search", {"enabled": False}),
        seed=config.get("seed", 0),
        baseline=config["baseline"],
    threads: 1
    log:
        "logs/fusion/{backbone}/{layer}/{protocol}/{selector}.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/fusion.py"


rule evaluate_fusion:
    """Table 7: strain alone, deep alone and fused, with DeLong tests between them."""
    input:
        scores=[f"results/fusion/{b}/{layer}/{p}/{s}.parquet" for b, layer, p, s in FUSION_TARGETS],
    output:
        table7="results/evaluation/table7.md",
        table7_parquet="results/evaluation/table7.parquet",
        delong_parquet="results/evaluation/table7_delong.parquet",
        metrics="results/evaluation/fusion_metrics.parquet",
    params:
        aggregation=config.get("evaluate", {}).get("video_aggregation", "mean"),
        quantile=config.get("evaluate", {}).get("quantile", 0.9),
        n_boot=config.get("evaluate", {}).get("n_boot", 1000),
        ci_level=config.get("evaluate", {}).get("ci_level", 0.95),
        seed=config.get("seed", 0),
        fusion={"k": FUSION_K, "strain_k": FUSION.get("strain_k", 5)},
    log:
        "logs/evaluate_fusion.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/evaluate_fusion.py"
