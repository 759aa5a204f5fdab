"""What an artefact takes from the study, whichever way its configuration was chosen.

:func:`study_pipeline`: the unfitted settings of one backbone -- labels, tracker and
crop settings, the backbone pinned by the sha256 its feature table's provenance records
(an actions table: :func:`neopain.deploy.actionsmodel.actions_pipeline`); and the
weights to embed (``export.embed_weights``). :func:`study_provenance`: the head of the
artefact's provenance. Used by both export paths (:mod:`neopain.deploy.export`,
:mod:`neopain.deploy.nestedexport`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


def study_pipeline(study: Mapping[str, Any], backbone: str, layer: str,
                   sources: Mapping[str, str], features) -> tuple[dict, dict | None]:
    """The study's unfitted settings of one backbone for :func:`neopain.deploy.refit.export_model` (weights
    pinned by the sha256 the feature table's provenance records) and the embedded
    weights (``export.embed_weights``) or None."""
    from neopain.features.registry import get_spec
    from neopain.features.weightfiles import locate_weights

    if backbone == "actions":  # no network: features from the tracker's face mesh
        from neopain.deploy.actionsmodel import actions_pipeline

        return actions_pipeline(study, layer, sources, features), None
    exp = dict(study.get("export") or {})
    ex = dict(study.get("extract") or {})
    bcfg = {k: v for k, v in ((ex.get("backbones") or {}).get(backbone) or {}).items()
            if k != "layers"}
    spec = get_spec(backbone, bcfg)
    wkey = f"weights:{spec.weights_file}"
    if wkey not in sources:
        raise ValueError(f"{features}: its provenance names no {wkey!r}; cannot pin the "
                         "backbone weights")
    wsha = sources[wkey]
    bcfg["sha256"] = wsha           # the artefact pins the exact file it was trained with
    embed = None
    if exp.get("embed_weights"):
        wpath = locate_weights(get_spec(backbone, bcfg), ex.get("weights_dir"))
        embed = {spec.weights_file: Path(wpath).read_bytes()}
    pipeline = {
        "labels": list(study["labels"]), "positive_label": study["positive_label"],
        "fps_for_images": float(study["fps_for_images"]),
        "track": dict(study.get("track") or {}), "crop": dict(study.get("crop") or {}),
        "tracker_weights": {k[8:]: v for k, v in sources.items()
                            if k.startswith("weights:") and k != wkey},
        "backbone": {"name": backbone, "layer": layer, "cfg": bcfg,
                     "weights_file": spec.weights_file, "weights_sha256": wsha,
                     "input_size": spec.input_size, "dtype": ex.get("dtype", "float32"),
                     "fast_decode": bool(ex.get("fast_decode", True))},
    }
    return pipeline, embed


def study_provenance(study: Mapping[str, Any], samples: str | Path,
                     sources: Mapping[str, str]) -> dict[str, Any]:
    """What every artefact's provenance starts with: code and package versions, the
    configuration hash, the training sample sheet (``training_data``: its sha256 now and
    as the feature tables recorded it) and the raw sources and weights of the features."""
    from neopain.core import provenance as prov_mod

    return {
        "code_version": prov_mod.code_version(), "packages": prov_mod.package_versions(),
        "study_config_hash": prov_mod.config_hash(dict(study)),
        "training_data": {"sample_sheet": str(samples),
                          "sample_sheet_sha256": prov_mod.sha256_file(samples),
                          "sample_sheet_sha256_in_features": sources.get("samples")},
        "sources": dict(sources),
    }
