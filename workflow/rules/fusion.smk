# Fusion of selected deep features with optical-strain features: the paper's Table 7
# (issue 6). fusion: per backbone x layer x protocol x selector, per fold, the fold's
# top-k deep features (the select stage's ranking, training subjects only) + the
# strain features, scored as deep alone, strain alone and fused; evaluate_fusion:
# Table 7 with DeLong tests. Only the deep backbones of extract.backbones are fused
# (FUSION_FILES, common/targets.smk); settings (FUSION*): common/settings.smk.


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
        strain_k=FUSION["strain_k"],
        actions_k=FUSION["actions_k"],
        selector=lambda wc: SELECTORS[wc.selector],
        classifiers=config["classify"]["classifiers"],
        preset=config["classify"]["preset"],
        search=config["classify"]["search"],
        seed=config["seed"],
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
        scores=FUSION_FILES,
    output:
        table7="results/evaluation/table7.md",
        table7_parquet="results/evaluation/table7.parquet",
        delong_parquet="results/evaluation/table7_delong.parquet",
        metrics="results/evaluation/fusion_metrics.parquet",
    params:
        **EVALUATE_PARAMS,  # aggregation, quantile, n_boot, ci_level, seed
        fusion={"k": FUSION_K, "strain_k": FUSION["strain_k"]},
    log:
        "logs/evaluate_fusion.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/evaluate_fusion.py"
