"""Facial-action configurations exported and predicted (neopain.deploy.actionsmodel): predict
computes the actions stage's features from a new recording's mesh and scores them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neopain.features import actions as A
from neopain.deploy.actionsmodel import (actions_pipeline, block_statistics, check_exportable,
                                  frame_feature_matrix, is_exportable)
from neopain.faces.mpmodels import MESH_FILE, MESH_SHA256

# (video_id, subject, path under ckplus_sequences, y): disgust = 1, happiness/surprise = 0
SEQS = [("S106_004", "S106", "disgust/S106_004", 1), ("S106_006", "S106", "happiness/S106_006", 0),
        ("S125_008", "S125", "disgust/S125_008", 1), ("S125_007", "S125", "surprise/S125_007", 0),
        ("S055_003", "S055", "disgust/S055_003", 1), ("S055_001", "S055", "surprise/S055_001", 0)]
SPEC = {"baselines": ["none"], "poolings": {"mean_std": ["mean", "std"]},
        "selection": [{"selector": "all"}], "models": {"logreg_l2": {"C": [1.0]}},
        "ensembles": [], "inner_splits": 3}


@pytest.fixture(scope="module")
def study(repo, shared_data):
    mesh_dir = repo / "resources" / "weights"
    if not (mesh_dir / MESH_FILE).is_file():
        pytest.skip(f"{mesh_dir / MESH_FILE} absent: run `make mesh-weights`")
    pytest.importorskip("facenet_pytorch")
    track = {"detector": "mtcnn", "landmarks": "facemesh",
             "facemesh": {"model_dir": str(mesh_dir)}}
    return {"labels": ["no_pain", "pain"], "positive_label": "pain", "fps_for_images": 30.0,
            "track": track,
            "crop": {"size": 224, "jpeg_quality": 95}, "actions": {}}


@pytest.fixture(scope="module")
def staged(study, shared_data):
    """Each sequence through track -> crop -> actions stage (as the workflow runs them)."""
    from neopain.faces.crop import crop_video
    from neopain.faces.detectors.registry import build_detector
    from neopain.faces.trackparams import params_from_config
    from neopain.faces.track import track_video

    det, ref = build_detector(study["track"])
    out = {}
    for vid, subj, rel, y in SEQS:
        path = shared_data / "ckplus_sequences" / rel
        track, qc = track_video(path, det, params=params_from_config(study["track"]),
                                refiner=ref)
        assert qc["n_ok"] >= 6, (vid, qc)
        crops = crop_video(path, track, 224, 95)
        table = A.video_actions(track, crops, study["actions"])
        frame_t, video_t = A.feature_tables(vid, table, None, study["actions"])
        out[vid] = (path, track, frame_t, subj, y, video_t)
    return out


def _cols(t, name):
    c = t.column(name).combine_chunks()
    return c.flatten().to_numpy().reshape(len(t), -1).astype(np.float64)


def test_predict_features_equal_the_actions_stage(study, staged):
    from neopain.faces.video import iter_frames

    backbone = actions_pipeline(study, "frame", {f"weights:{MESH_FILE}": MESH_SHA256},
                                "t")["backbone"]
    assert backbone["feature_names"] == list(A.frame_features())
    for vid, (path, track, frame_t, *_) in staged.items():
        F, P = frame_feature_matrix(track, iter_frames(path), backbone)
        rows = {int(f): i for i, f in enumerate(track.column("frame").to_pylist())}
        idx = [rows[int(f)] for f in frame_t.column("frame").to_pylist()]
        np.testing.assert_allclose(F[idx], _cols(frame_t, "f_frame"), rtol=1e-4, atol=1e-5,
                                   err_msg=vid)
        np.testing.assert_allclose(P[idx], _cols(frame_t, "pose_frame"), atol=1e-3)
        # the statistics rows (actions/video, actions/pose) from all frames with a mesh
        video_t = staged[vid][5]
        mesh = np.isfinite(P).all(1)
        ts = np.asarray(track.column("timestamp").to_pylist())
        for layer, col in (("video", "f_video"), ("pose", "f_pose")):
            row = block_statistics(np.hstack([F, P]), ts, mesh, {**backbone, "layer": layer})
            want = _cols(video_t, col)[0]
            # textures agree to ~1e-4 per frame (crop JPEG vs the stage's): their
            # activations, relative to a small baseline level, amplify that
            tex = np.array([n.split("__")[0] in A.PATCHES
                            for n in A.feature_names(layer)])
            np.testing.assert_allclose(row[~tex], want[~tex], rtol=1e-4, atol=1e-6,
                                       err_msg=f"{vid} {layer}")
            np.testing.assert_allclose(row[tex], want[tex], rtol=1e-2, atol=5e-4,
                                       err_msg=f"{vid} {layer} textures")
        # without the frames the geometry is the same and the textures are missing
        G, _ = frame_feature_matrix(track, None, backbone)
        tex = [j for j, k in enumerate(backbone["feature_names"]) if k in A.PATCHES]
        assert np.isnan(G[idx][:, tex]).all()
        np.testing.assert_array_equal(np.delete(G[idx], tex, 1), np.delete(F[idx], tex, 1))


def test_exported_actions_model_predicts_a_new_recording(study, staged, tmp_path, capsys):
    """Nested export of actions/frame with pose regression; ``neopain predict`` on a
    recording gives the probability the artefact's scorer gives on the stage's features,
    and a PSPI-like column and line in the timeline."""
    from neopain.cli import main
    from neopain.deploy.exported import load
    from neopain.deploy.videoexport import export_nested_model

    X, P, rows = [], [], []
    for vid, (_, _, frame_t, subj, y, _) in staged.items():
        X.append(_cols(frame_t, "f_frame"))
        P.append(_cols(frame_t, "pose_frame"))
        rows += [(vid, subj, y)] * frame_t.num_rows
    meta = pd.DataFrame(rows, columns=["video_id", "subject_id", "y"])
    pipe = actions_pipeline(study, "frame", {f"weights:{MESH_FILE}": MESH_SHA256}, "t")
    out = tmp_path / "actions.neopain"
    export_nested_model({("actions", "frame"): (np.vstack(X).astype(np.float32), meta,
                                                np.vstack(P))}, SPEC, out,
                        pipelines={"actions": pipe}, provenance={}, seed=0,
                        pose_regression=True)
    model = load(out)
    assert model.info["backbone"]["name"] == "actions"
    assert model.info["video"]["pose"]["n_pose"] == 6   # mean + std of yaw, pitch, roll
    path, _, frame_t, *_ = staged["S125_008"]
    res = main(["predict", str(out), str(path), "--out", str(tmp_path / "p"),
                "--window-seconds", "100"])
    assert res == 0, capsys.readouterr().err
    fr = pd.read_parquet(tmp_path / "p" / "S125_008.frames.parquet")
    ep = pd.read_parquet(tmp_path / "p" / "S125_008.epochs.parquet")
    assert fr["ok"].sum() >= frame_t.num_rows - 1 and len(ep) == 1
    F = np.hstack([_cols(frame_t, "f_frame"), _cols(frame_t, "pose_frame")])
    want = model.calibrator.apply(np.array([model.video.score_frames(F)]))[0]
    assert ep["mean_probability"].iloc[0] == pytest.approx(want, abs=2e-3)
    assert np.isfinite(fr.loc[fr["ok"], "pspi"]).all() and (fr["pspi"] > 0).any()
    assert (tmp_path / "p" / "S125_008.timeline.png").stat().st_size > 1000


def test_exported_actions_video_model_scores_the_stage_row(study, staged, tmp_path, capsys):
    """Nested export of actions/video (one statistics row per recording); ``neopain
    predict`` on a training recording recomputes the stage's statistics row from the mesh
    and gives the probability the artefact gives that row (whole recording, and the one
    epoch that covers it)."""
    import json

    from neopain.cli import main
    from neopain.deploy.exported import load
    from neopain.deploy.videoexport import export_nested_model

    X = np.vstack([_cols(v[5], "f_video") for v in staged.values()])
    meta = pd.DataFrame([(vid, v[3], v[4]) for vid, v in staged.items()],
                        columns=["video_id", "subject_id", "y"])
    pipe = actions_pipeline(study, "video", {f"weights:{MESH_FILE}": MESH_SHA256}, "t")
    assert pipe["backbone"]["feature_dim"] == X.shape[1] == len(A.FRAME_FEATURES) * 5
    out = tmp_path / "video.neopain"
    export_nested_model({("actions", "video"): (X.astype(np.float32), meta)}, SPEC, out,
                        pipelines={"actions": pipe}, provenance={}, seed=0)
    model = load(out)
    assert model.info["backbone"]["layer"] == "video" and model.level == "video"
    vid = "S106_004"
    path, video_t = staged[vid][0], staged[vid][5]
    assert main(["predict", str(out), str(path), "--out", str(tmp_path / "p")]) == 0, \
        capsys.readouterr().err
    want = model.calibrator.apply(np.array([model.video.score_frames(_cols(video_t,
                                                                            "f_video"))]))[0]
    summ = json.loads((tmp_path / "p" / f"{vid}.summary.json").read_text())
    ep = pd.read_parquet(tmp_path / "p" / f"{vid}.epochs.parquet")
    fr = pd.read_parquet(tmp_path / "p" / f"{vid}.frames.parquet")
    assert summ["baseline"]["recording_probability"] == pytest.approx(want, abs=1e-5)
    assert len(ep) == 1 and ep["mean_probability"].iloc[0] == pytest.approx(want, abs=1e-5)
    assert fr["ok"].sum() == staged[vid][1].column("ok").to_numpy().sum()
    assert np.isfinite(fr.loc[fr["ok"], "probability"]).all()
    # subject baseline from a baseline recording of the same subject: its own stage row
    out_c = tmp_path / "center.neopain"
    export_nested_model({("actions", "video"): (X.astype(np.float32), meta)},
                        {**SPEC, "baselines": ["center"]}, out_c,
                        pipelines={"actions": pipe}, provenance={}, seed=0)
    model = load(out_c)
    rest = "S106_006"
    assert main(["predict", str(out_c), str(path), "--out", str(tmp_path / "c"),
                 "--baseline-video", str(staged[rest][0])]) == 0, capsys.readouterr().err
    want = model.calibrator.apply(np.array([model.video.score_frames(
        _cols(video_t, "f_video"), reference=_cols(staged[rest][5], "f_video"))]))[0]
    summ = json.loads((tmp_path / "c" / f"{vid}.summary.json").read_text())
    assert summ["baseline"]["method"] == "center" and summ["baseline"]["source"] == str(
        staged[rest][0])
    assert summ["baseline"]["recording_probability"] == pytest.approx(want, abs=1e-5)


def test_statistics_tables_are_exportable_at_video_level_only():
    assert is_exportable("actions", "frame") and is_exportable("fer", "video")
    assert is_exportable("actions", "video") and is_exportable("actions", "pose")
    check_exportable("actions", "video")              # nested (video-level) export
    with pytest.raises(ValueError, match="actions/video: a table of whole-recording"):
        check_exportable("actions", "video", level="frame")
    with pytest.raises(ValueError, match="names no 'weights:face_landmark.tflite'"):
        actions_pipeline({"labels": ["a", "b"], "positive_label": "b"}, "frame", {}, "tbl")


def test_timeline_plot_draws_the_pspi_line_when_there_is_one(tmp_path):
    """The PSPI-like intensity is a purple line (tab:purple) on its own axis; a timeline
    without a mesh has none."""
    import cv2

    from neopain.deploy.outputs import plot_timeline

    t = np.arange(60) / 30.0
    frames = pd.DataFrame({"timestamp": t, "ok": True, "probability": 0.3, "smoothed": 0.3,
                           "pspi": np.nan})
    epochs = pd.DataFrame({"start": [0.0], "end": [2.0], "decision": [0]})
    purple = np.array([189, 103, 148])  # tab:purple #9467bd as BGR

    def n_purple(path):
        img = cv2.imread(str(path)).astype(int)
        return int((np.abs(img - purple).sum(axis=2) < 40).sum())

    plot_timeline(frames, epochs, 0.5, tmp_path / "none.png", "no mesh")
    plot_timeline(frames.assign(pspi=np.sin(t) ** 2), epochs, 0.5, tmp_path / "pspi.png", "m")
    assert n_purple(tmp_path / "none.png") == 0
    assert n_purple(tmp_path / "pspi.png") > 200
