# Aggregated inputs and final targets (included by common.smk, after settings.smk): the
# lists of files that gathering rules take, and get_final_output(), all that `rule all`
# asks for.

TRACK_MANIFESTS = [shard_manifest("track", sh) for sh in SHARDS]
# the configurations Tables 5 and 6 compare (evaluate), and their ROC figures
SCORE_FILES = [
    f"results/scores/{b}/{layer}/{p}/{s}.parquet"
    for b, layer in LAYER_TARGETS
    for p in PROTOCOLS
    for s in SELECTORS
]
ROC_TARGETS = [(b, layer, p) for b, layer in LAYER_TARGETS for p in PROTOCOLS]
# Table 7 fuses the deep backbones of extract.backbones only (not texture or actions)
FUSION_FILES = [
    f"results/fusion/{b}/{layer}/{p}/{s}.parquet"
    for b, spec in BACKBONES.items()
    for layer in spec["layers"]
    for p in PROTOCOLS
    for s in SELECTORS
]

# fine-tuning: what every fold job reads, the folds, the frozen-feature scores compared
FT_FOLD_INPUT = dict(
    crops=expand("results/crops/{video}.parquet", video=VIDEOS),
    keyframes=expand("results/keyframes/{video}.parquet", video=VIDEOS),
    split="results/splits/{protocol}.parquet",
    samples=config["samples"],
)
FT_FOLDS = [(b, p, f) for b in FT_BACKBONES for p in FT_PROTOCOLS for f in protocol_folds(p)]
FT_FROZEN = [
    f"results/scores/{b}/{FT_LAYER}/{p}/{s}.parquet"
    for b in FT_BACKBONES if FT_LAYER in (BACKBONES.get(b) or {}).get("layers", [])
    for p in FT_PROTOCOLS for s in SELECTORS
]


def export_inputs():
    """The export rule's inputs by name, and the labels of its features, scores and splits
    (parallel lists: scripts/export.py picks its inputs by these keys, never by their
    paths). With configuration nested (the default): the nested search's feature tables
    (and, when the nested stage runs, its summary and predictions); a named
    configuration's files; or every layer's (best: chosen from Table 5 when the job runs)."""
    named = EXPORT["configuration"]
    if named == "nested":
        return {"table5": [], "metrics": [], "scores": [], "splits": [],
                "features": [f"results/features/{b}/{layer}/features.parquet"
                             for b, layer in NESTED_TABLES],
                "summary": ["results/evaluation/summary.parquet"] if NESTED_ON else [],
                "nested": ([f"results/nested/{p}/predictions.parquet"
                            for p in NESTED_PROTOCOLS] if NESTED_ON else [])}, \
            {"features": [], "scores": [], "splits": []}
    if named == "best":
        layers, protocols, selectors = LAYER_TARGETS, PROTOCOLS, SELECTORS
    else:
        layers, protocols, selectors = ([(named["backbone"], named["layer"])],
                                         [named["protocol"]], [named["selector"]])
    keys = {"features": [[b, layer] for b, layer in layers],
            "scores": [[b, layer, p, s] for b, layer in layers for p in protocols
                       for s in selectors],
            "splits": list(protocols)}
    return {"table5": "results/evaluation/table5.parquet",
            "metrics": "results/evaluation/metrics.parquet", "summary": [], "nested": [],
            "features": [f"results/features/{b}/{layer}/features.parquet"
                         for b, layer in keys["features"]],
            "scores": [f"results/scores/{b}/{layer}/{p}/{s}.parquet"
                       for b, layer, p, s in keys["scores"]],
            "splits": [f"results/splits/{p}.parquet" for p in keys["splits"]]}, keys


EXPORT_INPUTS, EXPORT_KEYS = export_inputs()

# the report pages' optional tables, present when their stage runs
REPORT_OPTIONAL = {}
if STRAIN_ON:
    REPORT_OPTIONAL["table7"] = "results/evaluation/table7.parquet"
if FT_ENABLED:
    REPORT_OPTIONAL["finetune"] = "results/evaluation/finetune.parquet"
if NESTED_ON:
    REPORT_OPTIONAL["nested"] = "results/evaluation/summary.parquet"


def get_final_output():
    """Every file `rule all` asks for; optional stages only when the config enables them."""
    final = [
        "results/evaluation/table5.md",
        "results/evaluation/roc_table5.png",  # ROC of every Table 5 / 6 choice, per recording
        "results/evaluation/roc_table6.png",
        "results/evaluation/metrics.parquet",
        "results/qc/tracking.parquet",
        "results/qc/tracking.md",  # videos not ok and subjects left out, with the reason
    ]
    # every ROC figure: a newly configured backbone/layer/texture reruns evaluate
    final += [f"results/evaluation/roc/{b}/{layer}/{p}.png" for b, layer, p in ROC_TARGETS]
    if FT_ENABLED:  # frozen features vs fine-tuned vs cascaded
        final += ["results/evaluation/finetune.md", "results/evaluation/finetune.parquet"]
    if EXPORT["enabled"]:
        final += ["results/export/model.neopain", "results/export/model_card.md"]
    # predict.model + predict.videos: a timeline of every listed video
    final += [f"results/predict/{v}.{s}" for v in PREDICT_VIDEOS for s in PREDICT_SUFFIXES.values()]
    if STRAIN_ON:
        final.append("results/evaluation/table7.md")
    if NESTED_ON:
        final += ["results/evaluation/summary.md", "results/report/summary.html",
                  "results/evaluation/roc_summary.png"]
    if ACTIONS and ACTIONS_INTENSITY["enabled"]:
        final += expand("results/actions/intensity/{protocol}.md", protocol=PROTOCOLS)
    final.append("results/report/landing.rst")  # landing text and HTML result pages
    return final
