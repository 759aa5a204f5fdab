# Settings, fold lists and targets of the fine-tuning rules (finetune.smk); no rules
# here (functions live apart from rules, as in common.smk).

FT = dict(config.get("finetune") or {})
FT_ENABLED = bool(FT.get("enabled", False))
FT_LAYER = FT.get("layer", "penultimate")
FT_BACKBONES = list(FT.get("backbones") or list(BACKBONES)[:1])
FT_PROTOCOLS = list(FT.get("protocols") or PROTOCOLS)
FT_CASCADE = dict(FT.get("cascade") or {})
FT_AUX = dict(FT_CASCADE.get("aux") or {})
FT_CASCADE_ON = bool(FT_CASCADE.get("enabled", True)) and bool(FT_AUX.get("samples"))
FT_RESUME = FT.get("resume_dir", ".finetune_resume")
FT_RUN = {k: FT.get(k, d) for k, d in (("device", "auto"), ("precision", "auto"), ("workers", 2))}
# settings that are not training settings (the rest are, see neopain.finetune.finetune.DEFAULTS)
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
    out.setdefault("seed", config.get("seed", 0))
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
    if not FT_AUX.get("samples"):
        raise WorkflowError("cascade_stage1 needs finetune.cascade.aux.samples: a sheet "
                            "(path, label[, subject_id]) or a folder of label subfolders")
    return FT_AUX["samples"]


FT_FOLDS = [(b, p, f) for b in FT_BACKBONES for p in FT_PROTOCOLS for f in protocol_folds(p)]
FT_FROZEN = [
    f"results/scores/{b}/{FT_LAYER}/{p}/{s}.parquet"
    for b in FT_BACKBONES if FT_LAYER in (BACKBONES.get(b) or {}).get("layers", [])
    for p in FT_PROTOCOLS for s in SELECTORS
]
FINETUNE_TARGETS = (
    ["results/evaluation/finetune.md", "results/evaluation/finetune.parquet"]
    if FT_ENABLED else []
)
