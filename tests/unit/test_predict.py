"""Bedside prediction: `neopain predict` on real videos (the infant, a video without a
face, broken files), the timeline arithmetic (gaps stay gaps), epochs, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _synthetic_model import make_artefact
from neopain.cli import main
from neopain.deploy.predictor import PredictOptions
from neopain.deploy.timeline import epoch_table, read_epochs, segments, smooth_timeline


# ----------------------------------------------------------------------------
# timeline arithmetic
# ----------------------------------------------------------------------------
def test_smoother_never_bridges_a_gap():
    t = np.arange(10) / 10.0
    p = np.array([0.0, 1.0, 0.0, np.nan, 1.0, 1.0, 0.0, 0.2, 0.4, 0.6])
    ok = np.isfinite(p)
    ok[6] = False                       # a tracking gap with a stale value behind it
    np.testing.assert_array_equal(segments(ok), [0, 0, 0, -1, 1, 1, -1, 2, 2, 2])
    s = smooth_timeline(t, p, ok, window=0.2)   # +-0.1 s: the neighbours in the segment
    expect = [0.5, 1 / 3, 0.5, np.nan, 1.0, 1.0, np.nan, 0.3, 0.4, 0.5]
    np.testing.assert_allclose(s, expect)
    np.testing.assert_allclose(smooth_timeline(t, p, ok, 0.0)[ok], p[ok], atol=1e-12)


def _frames(t, prob, ok):
    prob = np.where(ok, prob, np.nan)
    return pd.DataFrame({"timestamp": t, "ok": ok, "probability": prob,
                         "pred": pd.array([int(v >= 0.5) if o else None
                                           for v, o in zip(prob, ok)], dtype="Int8")})


def test_epochs_default_windows_and_coverage_rule():
    t = np.arange(0, 50, 0.5)                      # 100 frames, 50 s
    ok = np.ones(100, bool)
    ok[40:75] = False                              # 20-37.5 s without a face
    prob = np.where(t < 20, 0.9, 0.1)
    ep = epoch_table(_frames(t, prob, ok), 0.5, ("no_pain", "pain"), 20.0)
    assert list(ep["start"]) == [0.0, 20.0, 40.0] and ep["end"].iloc[-1] == 50.0
    assert list(ep["n_frames"]) == [40, 40, 20]
    assert list(ep["n_ok"]) == [40, 5, 20]
    assert list(ep["status"]) == ["pain", "insufficient", "no_pain"]
    assert ep["decision"].iloc[0] == 1 and pd.isna(ep["decision"].iloc[1])
    ep2 = epoch_table(_frames(t, prob, ok), 0.5, ("no_pain", "pain"), 20.0, min_coverage=0.1)
    assert list(ep2["status"]) == ["pain", "no_pain", "no_pain"]


def test_epochs_from_a_csv(tmp_path):
    f = tmp_path / "nips.csv"
    f.write_text("start,end,label\n0,5,baseline\n5,12.5,heel lance\n")
    ep = read_epochs(f)
    assert list(ep["label"]) == ["baseline", "heel lance"]
    t = np.arange(0, 15, 0.25)
    out = epoch_table(_frames(t, np.where(t >= 5, 0.8, 0.2), np.ones(len(t), bool)), 0.5,
                      ("no_pain", "pain"), epochs=ep)
    assert list(out["status"]) == ["no_pain", "pain"] and list(out["n_frames"]) == [20, 30]
    (tmp_path / "bad.csv").write_text("start,stop\n0,1\n")
    with pytest.raises(ValueError, match="bad.csv: missing column"):
        read_epochs(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("start,end\n3,1\n")
    with pytest.raises(ValueError, match="row 2: need finite start < end"):
        read_epochs(tmp_path / "bad2.csv")


def test_video_sheet_and_epochs_share_the_sheet_reader(tmp_path):
    """predict.videos and epoch files are read like sample sheets: whole-line comments,
    ``#`` inside a field is data, errors name the file's line."""
    from neopain.deploy.plan import read_predict_sheet

    (tmp_path / "take#2.mp4").write_bytes(b"")
    (tmp_path / "rest.mp4").write_bytes(b"")
    sheet = tmp_path / "videos.csv"
    sheet.write_text("# new recordings\nvideo_id,path,baseline_path\n"
                     "a,take#2.mp4,rest.mp4\nb,take#2.mp4,\n")
    cfg = {"model": "m.neopain", "videos": str(sheet)}
    videos, baselines = read_predict_sheet(cfg)
    assert videos == {v: str((tmp_path / "take#2.mp4").resolve()) for v in "ab"}
    assert baselines == {"a": str((tmp_path / "rest.mp4").resolve())}
    assert read_predict_sheet({"videos": str(sheet)}) == ({}, {})  # no model: nothing to predict
    sheet.write_text("# new recordings\nvideo_id,path\na,take#2.mp4\nb,gone.mp4\n")
    with pytest.raises(ValueError, match=r"videos.csv: line 4 \(video_id='b'\): path .*gone"):
        read_predict_sheet(cfg)
    with pytest.raises(ValueError, match="nowhere.csv: video sheet not found"):
        read_predict_sheet({**cfg, "videos": str(tmp_path / "nowhere.csv")})
    ep = tmp_path / "epochs.tsv"
    ep.write_text("# NIPS periods\nstart\tend\tlabel\n0\t5\tcam#2 rest\n\n5\t4\tbad\n")
    with pytest.raises(ValueError, match="epochs.tsv: row 5: need finite start < end"):
        read_epochs(ep)


def test_options_are_checked():
    with pytest.raises(ValueError, match="every"):
        PredictOptions(every=0)
    with pytest.raises(ValueError, match="min_coverage"):
        PredictOptions(min_coverage=2)


# ----------------------------------------------------------------------------
# real videos through the CLI (an artefact on mobilenet_v2 penultimate features)
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.neopain"
    # SU, not ReliefF: numba's OpenMP layer, once used in a process, changes torch's
    # thread count there and slows the CNNs several times over on 2 cores
    make_artefact(path, classifier="nb", preset="paper", k=5, dim=1280, selector="su")
    return path


def _check_outputs(out: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    fr = pd.read_parquet(out / f"{name}.frames.parquet")
    ep = pd.read_parquet(out / f"{name}.epochs.parquet")
    summary = json.loads((out / f"{name}.summary.json").read_text())
    csv = pd.read_csv(out / f"{name}.frames.csv")
    assert len(csv) == len(fr)
    assert csv["probability"].isna().sum() == (~fr["ok"]).sum()   # empty cells, never 0
    assert (out / f"{name}.timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / f"{name}.timeline.html").read_text()
    assert "data:image/png;base64," in page
    low = page.lower()
    assert "<script" not in low and "http://" not in low and "https://" not in low
    assert "<link" not in low
    # gaps are gaps
    assert fr.loc[~fr["ok"], ["score", "probability", "smoothed"]].isna().all().all()
    assert fr.loc[~fr["ok"], "pred"].isna().all()
    okp = fr.loc[fr["ok"], "probability"]
    assert okp.between(0, 1).all() and fr.loc[fr["ok"], "smoothed"].notna().all()
    return fr, ep, summary


def test_predict_infant_full_video_and_a_video_without_a_face(model, videos, tmp_path,
                                                              capsys):
    out = tmp_path / "out"
    rc = main(["predict", str(model), str(videos / "infant_000056.mp4"),
               str(videos / "no_face.mp4"), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    fr, ep, s = _check_outputs(out, "infant_000056")
    assert len(fr) == 300 and fr["frame"].tolist() == list(range(300))
    assert fr["ok"].sum() >= 285                  # docs/tracking.md: 298/300 tracked
    assert s["status"] == "ok" and s["n_ok"] == int(fr["ok"].sum())
    assert len(ep) == 1 and ep["end"].iloc[0] == pytest.approx(10.0, abs=0.05)
    assert ep["status"].iloc[0] in ("pain", "no_pain")
    assert not (out / "infant_000056.annotated.mp4").exists()       # PHI: off by default
    # issue 15: the face mesh's PSPI-like composite and head pose beside the probability
    okf = fr[fr["ok"]]
    assert okf[["pspi", "yaw", "pitch", "roll"]].notna().mean().min() >= 0.95
    assert (okf["pspi"].dropna() >= 0).all() and s["pspi_peak"] == okf["pspi"].max()
    fr, ep, s = _check_outputs(out, "no_face")
    assert len(fr) == 95 and not fr["ok"].any()
    assert set(fr["reason"]) == {"no_face"} and fr["probability"].isna().all()
    assert s["status"] == "no_face" and list(ep["status"]) == ["insufficient"]
    assert pd.isna(ep["decision"]).all()
    assert "infant_000056.mp4: " in captured.out and "frames/s" in captured.out


def test_predict_every_nth_frame_with_annotation(model, videos, tmp_path):
    import cv2

    out = tmp_path / "out"
    rc = main(["predict", str(model), str(videos / "infant_000056.mp4"), "--out", str(out),
               "--every", "4", "--max-frames", "60", "--annotate", "--epoch-seconds", "1"])
    assert rc == 0
    fr, ep, s = _check_outputs(out, "infant_000056")
    assert fr["frame"].tolist() == list(range(0, 60, 4))
    assert len(ep) == 2 and s["options"]["every"] == 4
    cap = cv2.VideoCapture(str(out / "infant_000056.annotated.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 15


def test_broken_inputs_exit_nonzero_naming_the_file(model, shared_data, tmp_path, capsys):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8)))
    text = tmp_path / "notes.txt"
    text.write_text("this is not a video\n")
    out = tmp_path / "out"
    good = shared_data / "ckplus_sequences/disgust/S106_004"      # a frame folder
    rc = main(["predict", str(model), str(garbage), str(text), str(good), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{garbage}: not a readable video file" in err
    assert f"{text}: " in err
    assert len(pd.read_parquet(out / "S106_004.frames.parquet")) == 8   # the readable one ran
    assert not (out / "garbage.frames.parquet").exists()
    assert main(["predict", str(model), str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4: does not exist" in capsys.readouterr().err


def test_tampered_model_is_refused_by_predict(model, videos, tmp_path, capsys):
    import zipfile

    bad = tmp_path / "bad.neopain"
    with zipfile.ZipFile(model) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "arrays/clf.theta.npy":
                data = data[:-1] + bytes([data[-1] ^ 1])
            zout.writestr(info, data)
    rc = main(["predict", str(bad), str(videos / "no_face.mp4"), "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'arrays/clf.theta.npy' sha256" in err and "refusing to load" in err
    assert main(["predict", str(model), str(videos / "no_face.mp4"), "--sha256", "ab" * 32,
                 "--out", str(tmp_path)]) == 2


def test_weights_and_tracker_mismatch_are_refused(tmp_path):
    from neopain.deploy.exported import load
    from neopain.deploy.facescoring import PredictionError
    from neopain.deploy.predictor import Predictor

    p = tmp_path / "m.neopain"
    make_artefact(p, classifier="nb", k=3, dim=1280, selector="su",
                  tracker_weights={"onet.pt": "0" * 64})
    with pytest.raises(PredictionError, match="tracker weights onet.pt here have sha256"):
        Predictor(load(p))
    q = tmp_path / "w.neopain"
    make_artefact(q, classifier="nb", k=3, dim=1280, selector="su",
                  weights_sha="b0353104" + "0" * 56)
    with pytest.raises(PredictionError, match="backbone weights"):
        Predictor(load(q))


def test_embedded_weights_are_used_and_verified(tmp_path):
    from neopain.features.registry import REGISTRY
    from neopain.features.weightfiles import locate_weights
    from neopain.deploy.exported import load
    from neopain.deploy.predictor import Predictor

    wfile = locate_weights(REGISTRY["mobilenet_v2"], None)
    p = tmp_path / "embedded.neopain"
    make_artefact(p, classifier="nb", k=3, dim=1280, selector="su",
                  embed={"mobilenet_v2-b0353104.pth": wfile.read_bytes()})
    m = load(p)
    assert m.info["backbone"]["embedded"] is True
    assert m.manifest["members"]["weights/mobilenet_v2-b0353104.pth"]["sha256"] == \
        m.info["backbone"]["weights_sha256"]
    pred = Predictor(m, PredictOptions(weights_dir=str(tmp_path / "nowhere")))
    try:
        used = Path(pred.faces._tmp.name) / "mobilenet_v2-b0353104.pth"
        assert used.is_file() and pred.weights_sha256 == m.info["backbone"]["weights_sha256"]
    finally:
        pred.close()


# ----------------------------------------------------------------------------
# a video-level model (export.configuration nested): baseline, pooled windows, epochs
# ----------------------------------------------------------------------------
def test_video_level_model_with_a_baseline_recording(shared_data, tmp_path, capsys):
    from _synthetic_model import make_video_artefact

    path = tmp_path / "video.neopain"
    res = make_video_artefact(path)
    assert res["candidate"].baseline == "center"
    seq = shared_data / "ckplus_sequences"
    out = tmp_path / "out"
    # a window longer than the recording: every frame's score pools all ok frames, so
    # each frame's probability is the (single) epoch's pooled probability
    rc = main(["predict", str(path), str(seq / "disgust/S106_004"), "--out", str(out),
               "--window-seconds", "100", "--baseline-video", str(seq / "happiness/S106_006")])
    assert rc == 0, capsys.readouterr().err
    fr, ep, s = _check_outputs(out, "S106_004")
    assert s["level"] == "video" and s["baseline"]["method"] == "center"
    assert s["baseline"]["source"].endswith("S106_006") and s["baseline"]["n_frames"] >= 6
    assert fr["ok"].all() and len(ep) == 1
    np.testing.assert_allclose(fr["probability"], ep["mean_probability"].iloc[0], atol=1e-12)
    # the default baseline (the recording itself) gives another pooled probability
    rc = main(["predict", str(path), str(seq / "disgust/S106_004"), "--out",
               str(tmp_path / "own"), "--window-seconds", "100"])
    assert rc == 0
    _, ep2, s2 = _check_outputs(tmp_path / "own", "S106_004")
    assert s2["baseline"]["source"] == "the recording itself"
    assert ep2["mean_probability"].iloc[0] != ep["mean_probability"].iloc[0]
    # a baseline recording without a face is refused, naming the file
    no_face = shared_data / "videos/no_face.mp4"
    if no_face.exists():
        rc = main(["predict", str(path), str(seq / "disgust/S106_004"), "--out",
                   str(tmp_path / "bad"), "--baseline-video", str(no_face),
                   "--max-frames", "10"])
        assert rc == 2
        assert f"baseline video {no_face}: no frame with a tracked face" in \
            capsys.readouterr().err
