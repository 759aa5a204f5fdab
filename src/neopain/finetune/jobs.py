"""The DAG's fine-tuning jobs (thin scripts/finetune.py and scripts/cascade.py call these):
one fold of fine-tuning or cascade stage 2 (:func:`target_job`: checkpoint, sidecar and
test scores) and cascade stage 1 on the auxiliary set (:func:`aux_job`).

Seeds: fine-tuning pretrained CNNs for neonatal pain (ICNC-FSKD 2018) and the cascaded
fine-tuning of Ng et al. 2015 (ImageNet -> an auxiliary expression set -> the target).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from neopain.core import provenance
from neopain.features.checkpoint import read_sidecar
from neopain.finetune.data import ImageSet, aux_set, keyframe_set, per_video
from neopain.finetune.folds import fold_data, grouped_validation
from neopain.finetune.network import build_net, checkpoint_meta, save_checkpoint
from neopain.finetune.resume import clear_resume
from neopain.finetune.settings import RESULT_KEYS, settings
from neopain.finetune.train import TrainResult, fit, pick_device, predict, summary

log = logging.getLogger(__name__)


def scores_frame(probs: np.ndarray, test: ImageSet, protocol: str, fold: int, method: str,
                 feature_dim: int, params: Mapping[str, Any], backbone: str = "",
                 layer: str = "") -> pd.DataFrame:
    """Per-frame test scores in :data:`neopain.learn.classify.SCORE_SCHEMA` (selector
    ``none``, k = the head's input dimension, classifier = ``method``)."""
    n = len(test)
    score = probs[:, 1] if probs.shape[1] > 1 else np.zeros(n)
    return pd.DataFrame({
        "backbone": [backbone] * n, "layer": [layer] * n,
        "protocol": [protocol] * n, "fold": np.full(n, fold, np.int32),
        "selector": ["none"] * n, "k": np.full(n, feature_dim, np.int32),
        "classifier": [method] * n, "video_id": test.video_id.astype(str),
        "subject_id": test.subject_id.astype(str), "frame": test.frame.astype(np.int32),
        "y": test.y.astype(np.int8), "score": score.astype(np.float64),
        "pred": probs.argmax(1).astype(np.int8) if n else np.zeros(0, np.int8),
        "params": [provenance.canonical_json(dict(params))] * n,
    })



def _sources(parent: Mapping[str, Any], **hashes: str) -> dict[str, str]:
    """Provenance sources: ``weights:<file>`` for registry weights (the run record looks
    them up in the weights dirs), ``checkpoint:<path>`` for a fine-tuned parent."""
    out = {k: v for k, v in hashes.items() if v}
    if parent.get("sha256"):
        kind = "weights" if parent["kind"] == "weights" else "checkpoint"
        out[f"{kind}:{parent['file']}"] = parent["sha256"]
    return out


def _training_extra(res: TrainResult, device: torch.device, precision: str) -> dict[str, Any]:
    from neopain.features.extract import precision_name

    ips = [h["images_per_s"] for h in res.history if "images_per_s" in h]
    return {"history": res.history, "resumed_from_epoch": res.resumed_from,
            "device": device.type, "precision": precision_name(device, precision),
            "train_images_per_s": float(np.median(ips)) if ips else None,
            "trainable_parameters": len(res.trainable)}


def target_job(*, rule: str, method: str, samples_path, labels: Sequence[str],
               positive_label: str, data_root, video_ids: Sequence[str], crops: Sequence[str],
               keyframes: Sequence[str], split_path, protocol: str, fold: int, backbone: str,
               layer: str,
               backbone_cfg: Mapping[str, Any] | None, weights_dir, train_cfg: Mapping[str, Any],
               init: str, device: str, precision: str, workers: int, resume_dir,
               out_model, out_sidecar, out_scores, logger: logging.Logger | None = None
               ) -> dict[str, Any]:
    """Fine-tune on one fold's training subjects (``method`` finetune: from the
    backbone's weights; cascade: ``init`` = the stage-1 checkpoint), score its test
    subjects, write checkpoint + sidecar + scores (atomically, in that order).
    ``crops``/``keyframes``: the per-video tables of ``video_ids``, in that order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.learn.classify import SCORE_SCHEMA
    from neopain.core.samples import load_samples

    lg = logger or log
    samples = load_samples(samples_path, labels, data_root)
    by_video = per_video(video_ids, crops, "crop")
    kf = per_video(video_ids, keyframes, "keyframe")
    data = keyframe_set(samples, by_video, kf, labels, positive_label)
    split = pq.read_table(split_path).to_pandas()
    cfg = settings(train_cfg)
    fd = fold_data(data, split, int(fold), float(cfg["val_fraction"]), int(cfg["seed"]))
    lg.info("%s %s fold %s: %d training keyframes (%d subjects), %d validation (%s), "
            "%d test (%s)", method, protocol, fold, len(fd.train), len(fd.train_subjects),
            len(fd.val) if fd.val else 0, ", ".join(fd.val_subjects) or "none: the last "
            "epoch is kept", len(fd.test), ", ".join(fd.test_subjects))
    net, parent = build_net(backbone, 2, layer, backbone_cfg=backbone_cfg,
                            weights_dir=weights_dir, init=init, input_size=cfg["input_size"],
                            dropout=float(cfg["dropout"]), seed=int(cfg["seed"]) + int(fold))
    dev = pick_device(device)
    res, fp = fit(net, parent, fd.train, fd.val, cfg, device=dev, precision=precision,
                  workers=workers, resume_dir=resume_dir, logger=lg)
    probs = predict(net, fd.test, int(cfg["batch_size"]), dev, precision, workers) \
        if len(fd.test) else np.zeros((0, 2))
    stage = {"method": method, "backbone": backbone, "layer": layer, "protocol": protocol,
             "fold": int(fold), "settings": {k: cfg[k] for k in RESULT_KEYS},
             "backbone_cfg": dict(backbone_cfg or {})}
    upstream = [provenance.read_provenance(f) for f in crops]
    upstream.append(provenance.read_provenance(split_path))
    if parent["kind"] == "checkpoint":
        upstream.append(read_sidecar(init).get("provenance", {}))
    prov = provenance.make_provenance(
        rule, stage, _sources(parent, samples=provenance.sha256_file(samples_path),
                              **{f"{method}_data": fp}),
        params={**stage, **summary(res), "train_subjects": fd.train_subjects,
                "val_subjects": fd.val_subjects, "test_subjects": fd.test_subjects},
        upstream=upstream)
    meta = checkpoint_meta(net, data.classes, parent, prov)
    rec = save_checkpoint(net, out_model, meta, _training_extra(res, dev, precision),
                          sidecar=out_sidecar)
    params = {"unfreeze": cfg["unfreeze"], "best_epoch": res.best_epoch,
              "epochs_run": res.epochs_run, "validation": res.validation,
              "input_size": net.input_size, "checkpoint_sha256": rec["sha256"]}
    scores = scores_frame(probs, fd.test, protocol, int(fold), method, net.feature_dim, params,
                          backbone, layer)
    if not len(scores):
        lg.warning("%s %s fold %s: no test keyframes; empty score table", method, protocol,
                   fold)
    provenance.write_table(pa.Table.from_pandas(scores, SCORE_SCHEMA, preserve_index=False),
                           out_scores, {**prov, "params": {**prov["params"],
                                                           "checkpoint_sha256": rec["sha256"]}})
    clear_resume(resume_dir)
    lg.info("checkpoint %s sha256 %s (best epoch %d of %d)", out_model, rec["sha256"],
            res.best_epoch, res.epochs_run)
    return rec


def aux_job(*, rule: str, aux_samples, aux_data_root, aux_labels: Sequence[str] | None,
            video_stride: int, backbone: str, layer: str,
            backbone_cfg: Mapping[str, Any] | None, weights_dir, train_cfg: Mapping[str, Any],
            device: str, precision: str, workers: int, resume_dir, out_model, out_sidecar,
            logger: logging.Logger | None = None) -> dict[str, Any]:
    """Cascade stage 1: fine-tune on the auxiliary expression set (its own classes),
    validation on a share of its subjects; write checkpoint + sidecar."""
    lg = logger or log
    data = aux_set(aux_samples, aux_data_root, aux_labels, video_stride)
    cfg = settings(train_cfg)
    tr, va, val_groups = grouped_validation(data, float(cfg["val_fraction"]), int(cfg["seed"]))
    lg.info("cascade stage 1 on %s: %d images, classes %s; %d training, %d validation "
            "(%d groups)", aux_samples, len(data), list(data.classes), len(tr),
            len(va) if va else 0, len(val_groups))
    net, parent = build_net(backbone, len(data.classes), layer, backbone_cfg=backbone_cfg,
                            weights_dir=weights_dir, init="pretrained",
                            input_size=cfg["input_size"], dropout=float(cfg["dropout"]),
                            seed=int(cfg["seed"]))
    dev = pick_device(device)
    res, fp = fit(net, parent, tr, va, cfg, device=dev, precision=precision, workers=workers,
                  resume_dir=resume_dir, logger=lg)
    aux_path = Path(aux_samples)
    aux_hash = provenance.sha256_file(aux_path) if aux_path.is_file() else None
    stage = {"method": "cascade_stage1", "backbone": backbone, "layer": layer,
             "classes": list(data.classes), "settings": {k: cfg[k] for k in RESULT_KEYS},
             "backbone_cfg": dict(backbone_cfg or {}), "video_stride": int(video_stride)}
    prov = provenance.make_provenance(
        rule, stage, _sources(parent, aux_samples=aux_hash, aux_data=fp),
        params={**stage, **summary(res), "n_images": len(data),
                "val_groups": len(val_groups)})
    meta = checkpoint_meta(net, data.classes, parent, prov)
    extra = _training_extra(res, dev, precision)
    if va is not None:
        extra["val_accuracy_best"] = next((h.get("val_accuracy") for h in res.history
                                           if h["epoch"] == res.best_epoch), None)
    rec = save_checkpoint(net, out_model, meta, extra, sidecar=out_sidecar)
    clear_resume(resume_dir)
    lg.info("stage-1 checkpoint %s sha256 %s (best epoch %d of %d)", out_model, rec["sha256"],
            res.best_epoch, res.epochs_run)
    return rec
