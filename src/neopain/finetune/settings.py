"""Training settings of fine-tuning: the defaults, which of them change a result, and their
validation.

What trains (``unfreeze``)
    ``head`` (the body stays frozen, batch norms in eval mode), ``last_block`` (the
    architecture's last block, :data:`neopain.finetune.network.LAST_BLOCK`, + the head),
    ``all``; or ``unfreeze_modules``: a list of module-name prefixes.  Frozen batch-norm
    layers keep their running statistics.  The head learns at ``lr``, unfrozen body layers
    at ``lr * body_lr_scale`` (AdamW, ``weight_decay``), both with a cosine decay over
    ``epochs``.  Cross-entropy with class weights (``class_balanced``); ``augment``: see
    :mod:`neopain.finetune.augment`; ``val_fraction``: see :mod:`neopain.finetune.folds`.
"""

from __future__ import annotations

from typing import Any, Mapping

UNFREEZE = ("head", "last_block", "all")

DEFAULT_AUGMENT = {"flip": True, "rotate": 10.0, "rotate_any": False, "scale": 0.05,
                   "shift": 0.03, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}

DEFAULTS: dict[str, Any] = {
    "unfreeze": "last_block", "unfreeze_modules": None, "epochs": 20, "patience": 5,
    "batch_size": 32, "lr": 1e-3, "body_lr_scale": 0.1, "weight_decay": 1e-4,
    "dropout": 0.2, "class_balanced": True, "val_fraction": 0.2, "input_size": None,
    "augment": DEFAULT_AUGMENT, "seed": 0,
}
#: settings that change the result (the rest -- device, workers -- only the speed)
RESULT_KEYS = tuple(DEFAULTS)


def settings(cfg: Mapping[str, Any] | None = None, **overrides) -> dict[str, Any]:
    """The training settings: :data:`DEFAULTS` < ``cfg`` < ``overrides``, validated."""
    out = {k: v for k, v in DEFAULTS.items()}
    for src in (cfg or {}), overrides:
        for k, v in src.items():
            if k in DEFAULTS and v is not None:
                out[k] = v
    out["augment"] = {**DEFAULT_AUGMENT, **dict(out.get("augment") or {})}
    if out["unfreeze"] not in UNFREEZE:
        raise ValueError(f"unfreeze {out['unfreeze']!r}: one of {', '.join(UNFREEZE)}")
    for k in ("epochs", "batch_size"):
        if int(out[k]) < 1:
            raise ValueError(f"{k} must be >= 1, got {out[k]!r}")
    if not 0.0 <= float(out["val_fraction"]) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {out['val_fraction']!r}")
    return out
