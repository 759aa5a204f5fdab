# Beyond the paper's protocol (issue 14): subject baselines, whole-feature video models
# and nested model selection. nested: per protocol, every configuration (feature table x
# baseline x pooling x selection x model x hyper-parameters) scored by inner CV on the
# outer fold's training subjects, the best one scored on the outer test subjects
# (neopain.learn.nested); nested_summary: results/evaluation/summary.{md,parquet}, the nested
# estimate beside best-of-N (optimistic), median, permuted-label and chance rows.
# Settings (NESTED*): common/settings.smk.


rule nested:
    """Nested model selection over the configured space, one protocol."""
    input:
        features=[f"results/features/{b}/{layer}/features.parquet" for b, layer in NESTED_TABLES],
        split="results/splits/{protocol}.parquet",
    output:
        **{k: f"results/nested/{{protocol}}/{k}.parquet" for k in NESTED_PARTS},
    params:
        tables=NESTED_TABLES,
        spec=NESTED_SPACE,
        seed=config["seed"],
        pose_regression=ACTIONS_POSE_REGRESSION,  # actions.smk: actions tables' head pose
    # the search on shuffled labels runs in a second process beside the real one
    threads: 2 if NESTED_SPACE["permutation"] else 1
    priority: 1  # the chain to the tables first (docs/scale.md: what runs first)
    log:
        "logs/nested/{protocol}.log",
    resources:
        mem_mb=8000,
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/nested.py"


rule nested_summary:
    """The headline table: nested estimate, best-of-N (optimistic), median, chance."""
    input:
        **{k: [f"results/nested/{p}/{k}.parquet" for p in NESTED_PROTOCOLS] for k in NESTED_PARTS},
        metrics="results/evaluation/metrics.parquet",
    output:
        md="results/evaluation/summary.md",
        parquet="results/evaluation/summary.parquet",
        page=report("results/report/summary.html", caption="../report/summary.rst",
                    category="1. Results", subcategory="Summary"),
        roc=report("results/evaluation/roc_summary.png", caption="../report/roc_summary.rst",
                   category="3. ROC curves", subcategory="Per results table",
                   labels={"table": "Summary"}),
    params:
        protocols=NESTED_PROTOCOLS,
        n_boot=config["evaluate"]["n_boot"],
        ci_level=config["evaluate"]["ci_level"],
        seed=config["seed"],
    log:
        "logs/nested_summary.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../../scripts/nested_summary.py"
