"""Fine-tuning and cascaded fine-tuning through the DAG (workflow/rules/finetune.smk; slow).

The tiny CI data (tests/_tiny.py sequences, here 6 videos of 3 subjects,
holdout: 2 training subjects = 1 train + 1 validation, 1 test) with fine-tuning enabled,
mobilenet_v2 at 64 px, a 42-image ckplus48 auxiliary sheet for cascade stage 1, through
`snakemake`: output schemas, loss decreasing, provenance, the comparison table; the stage-1
checkpoint is one job for every protocol and fold; `rule all` leaves it all out when
disabled; a fine-tuned checkpoint as an extract backbone (DAG edge, dimension, features
differ from the frozen ones); a SIGKILLed job resumes from its last epoch and ends with
the checkpoint an uninterrupted run gives.  Unit level: tests/unit/test_finetune.py.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import _tiny
from neopain.features.backbones import load_backbone
from neopain.features.registry import get_spec
from neopain.core.provenance import read_provenance, sha256_file
from neopain.features.checkpoint import verify_checkpoint
from neopain.finetune.train import KILL_ENV

FT_VIDEOS = [
    *_tiny.TINY_VIDEOS,
    ("S111_006", "S111", "ckplus_sequences/anger/S111_006", "pain"),
    ("S111_001", "S111", "ckplus_sequences/surprise/S111_001", "no_pain"),
]
EMOTIONS = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
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
