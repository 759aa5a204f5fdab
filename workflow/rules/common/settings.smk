# Every setting derived from the configuration, stage by stage (included by common.smk,
# after validation). The schema gives every default (workflow/schemas/config.schema.yaml,
# validated with defaults set): keys it defaults are read directly, never with a default.

# --- feature tables: every backbone x layer that select / classify / evaluate take ------
LAYER_TARGETS = [(b, layer) for b, spec in BACKBONES.items() for layer in spec["layers"]]
# texture baselines (texture.smk): enabled ones are one more backbone x layer ("grid")
TEXTURE = [m for m, spec in config["texture"].items() if spec["enabled"]]
LAYER_TARGETS += [(m, "grid") for m in TEXTURE]

# --- facial actions (actions.smk; docs/actions.md) -----------------------------------------
ACTIONS = config["actions"]["enabled"]
# head pose regressed out of the actions tables inside every fit (select, classify, nested;
# neopain.learn.posecontrol); actions/pose = pose statistics alone, the control row
ACTIONS_POSE_REGRESSION = config["actions"]["pose_regression"]
# the out-of-fold per-frame intensity model (neopain.learn.intensity), per protocol
ACTIONS_INTENSITY = config["actions"]["intensity"]
# the descriptors' own parameters (a change reruns the actions jobs)
ACTIONS_DESCRIPTORS = {
    k: v for k, v in stage("actions").items() if k not in ("pose_regression", "intensity")
}
if ACTIONS:
    LAYER_TARGETS += [("actions", "frame"), ("actions", "video"), ("actions", "pose")]


def regress_pose(wildcards):
    """select / classify: head pose regressed out within each fold, for the actions
    tables only (not actions/pose, the pose statistics themselves)."""
    return (ACTIONS_POSE_REGRESSION and wildcards.backbone == "actions"
            and wildcards.layer != "pose")


# --- optical strain (strain.smk) and Table 7 (fusion.smk) --------------------------------
STRAIN = config["strain"]
STRAIN_ON = STRAIN["enabled"]
STRAIN_SIGNAL = {k: v for k, v in STRAIN.items() if k not in ("enabled", "peaks")}
FUSION = config["fusion"]
FUSION_K = list(FUSION["k"])
# the select stage keeps rankings long enough for Table 7's k too
SELECT_MAX_K = max(config["select"]["k"] + (FUSION_K if STRAIN_ON else []))

# --- evaluation: the same statistics in evaluate, evaluate_fusion, evaluate_finetune ------
EVALUATE_PARAMS = {
    "aggregation": config["evaluate"]["video_aggregation"],
    "quantile": config["evaluate"]["quantile"],
    "n_boot": config["evaluate"]["n_boot"],
    "ci_level": config["evaluate"]["ci_level"],
    "seed": config["seed"],
}

# --- nested model selection (nested.smk) --------------------------------------------------
NESTED = config["nested"]
NESTED_ON = NESTED["enabled"]
NESTED_PROTOCOLS = list(NESTED["protocols"] or PROTOCOLS)
NESTED_TABLES = (
    [(t["backbone"], t["layer"]) for t in NESTED["tables"]] if NESTED["tables"] else LAYER_TARGETS
)
NESTED_SPACE = {k: v for k, v in NESTED.items() if k not in ("enabled", "protocols", "tables")}
NESTED_PARTS = ("scores", "choices", "predictions", "permuted")

# --- fine-tuning and cascaded fine-tuning (finetune.smk) ----------------------------------
FT = config["finetune"]
FT_ENABLED = FT["enabled"]
FT_LAYER = FT["layer"]
FT_BACKBONES = list(FT["backbones"] or list(BACKBONES)[:1])
FT_PROTOCOLS = list(FT["protocols"] or PROTOCOLS)
FT_CASCADE = FT["cascade"]
FT_AUX = FT_CASCADE["aux"]
FT_CASCADE_ON = FT_CASCADE["enabled"] and bool(FT_AUX["samples"])
FT_RESUME = FT["resume_dir"]
FT_RUN = {k: FT[k] for k in ("device", "precision", "workers")}
# settings that are not training settings (the rest are, see neopain.finetune.settings.DEFAULTS)
_FT_OTHER = {"enabled", "layer", "backbones", "protocols", "cascade", "resume_dir", "device",
             "precision", "workers"}

for _p in FT_PROTOCOLS:
    if _p not in PROTOCOLS:
        raise WorkflowError(f"config: finetune.protocols names {_p!r}, which is not one of "
                            f"protocols ({', '.join(PROTOCOLS)})")


def ft_settings(stage=None):
    """Training settings: finetune.* overridden by finetune.cascade.<stage>.*"""
    out = {k: v for k, v in FT.items() if k not in _FT_OTHER}
    if stage:
        over = dict(FT_CASCADE.get(stage) or {})
        aug = {**dict(out.get("augment") or {}), **dict(over.pop("augment", None) or {})}
        out.update(over)
        if aug:
            out["augment"] = aug
    out.setdefault("seed", config["seed"])
    return out


def ft_backbone_cfg(backbone):
    return {k: v for k, v in dict(BACKBONES.get(backbone) or {}).items() if k != "layers"}


def protocol_folds(name):
    """Fold numbers of protocol ``name`` (as neopain.learn.split numbers them)."""
    spec = PROTOCOLS[name]
    if spec["kind"] == "holdout":
        return [0]
    if spec["kind"] == "loso":
        return list(range(SAMPLES["subject_id"].nunique()))
    return list(range(int(spec.get("n_splits", 5))))


def ft_aux_input(wildcards):
    if not FT_AUX["samples"]:
        raise WorkflowError("cascade_stage1 needs finetune.cascade.aux.samples: a sheet "
                            "(path, label[, subject_id]) or a folder of label subfolders")
    return FT_AUX["samples"]


# --- export and bedside prediction (export.smk) -------------------------------------------
EXPORT = config["export"]
# the study settings an exported artefact records (and that decide its configuration)
EXPORT_STUDY = {
    k: {kk: vv for kk, vv in EXPORT.items() if kk != "enabled"} if k == "export" else config[k]
    for k in ("labels", "positive_label", "seed", "fps_for_images", "track", "crop",
              "keyframes", "extract", "protocols", "select", "classify", "evaluate", "export",
              "nested", "actions")  # actions: an actions configuration's parameters
}
PREDICT = config["predict"]
PREDICT_MODEL = PREDICT["model"] or "results/export/model.neopain"
PREDICT_SETTINGS = {k: v for k, v in PREDICT.items() if k not in ("videos", "data_root")}


try:
    PREDICT_VIDEOS, PREDICT_BASELINES = read_predict_sheet(PREDICT)
except ValueError as _exc:  # SampleSheetError too: a missing or unreadable sheet
    raise WorkflowError(f"predict.videos: {_exc}") from None
PREDICT_SUFFIXES = {
    "frames": "frames.parquet",
    "frames_csv": "frames.csv",
    "epochs": "epochs.parquet",
    "epochs_csv": "epochs.csv",
    "png": "timeline.png",
    "html": "timeline.html",
    "summary": "summary.json",
}

# --- report (report.smk) ------------------------------------------------------------------
# The workflow-level `report:` text: the landing text plus the Run section from the run
# record (.snakemake/neopain/report.rst, written after the record), else
# results/report/landing.rst, else (before any run) workflow/report/workflow.rst.
REPORT_TEXT = report_text_path(".")
