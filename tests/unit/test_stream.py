"""One decode pass for prediction (neopain.deploy.stream): the bounded-lag smoother against the
tracker's own smoothing, and single-pass prediction against the two-pass one."""

from __future__ import annotations

import numpy as np
import pytest

from neopain.faces.detectors.detection import Detection
from neopain.deploy.stream import LookaheadSmoother
from neopain.faces.trackparams import TrackParams
from neopain.faces.smoothing import smooth_rows as _smooth_rows


def _rows(n=460, seed=0):
    """A 30 fps stream: a long run (380 frames: several lookahead + block windows, the
    smoother trims its arrays), a miss, a 2-frame run, a miss, then 76 frames cut in two
    by a scene cut."""
    rng = np.random.default_rng(seed)
    base = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], float) * 4
    rows = []
    for i in range(n):
        ok = i not in (380, 383)
        drift = np.array([200 * np.sin(i / 40), 60 * np.cos(i / 25)])
        lm = base + drift + rng.normal(scale=1.5, size=(5, 2))
        det = Detection(box=(0.0, 0.0, 160.0, 160.0), score=0.9, landmarks=lm) if ok else None
        rows.append({"frame": i, "timestamp": i / 30, "ok": ok, "det": det})
    return rows


def test_lookahead_smoother_equals_the_trackers_smoothing():
    params = TrackParams()
    rows = _rows()
    cut = 420                       # a scene cut between frames 420 and 421
    got: dict[int, np.ndarray | None] = {}
    order: list[int] = []

    def emit(pos, row, lm):
        order.append(pos)
        got[pos] = lm

    sm = LookaheadSmoother(params, emit, lookahead=60, block=15)
    for i, r in enumerate(rows):
        if i == cut + 1:
            rows[cut]["cut_after"] = True   # the tracker flags the row before the cut later
        sm.push(r)
    sm.close()
    assert order == list(range(len(rows)))      # every row once, in order
    assert sm.max_lag <= 60 + 15
    ref = [dict(r) for r in rows]
    _smooth_rows(ref, params)
    dev = []
    for i, r in enumerate(ref):
        if not r["ok"]:
            assert got[i] is None
            continue
        want = np.asarray(r["det"].landmarks, np.float32).astype(np.float64)
        dev.append(np.abs(got[i] - want).max())
        if 380 - 60 <= i < 380 or i in (381, 382) or i > 420 - 60:   # run ends and short runs: exact
            np.testing.assert_array_equal(got[i], want, err_msg=str(i))
    assert max(dev) < 1e-3, max(dev)
    # the smoother did smooth: far from the raw landmarks somewhere
    raw = max(np.abs(rows[i]["det"].landmarks - got[i]).max() for i in range(380))
    assert raw > 0.5
    # smoothing off: the raw landmarks at once
    out = []
    sm = LookaheadSmoother(TrackParams(smooth=False), lambda p, r, lm: out.append((p, lm)))
    sm.push(rows[0])
    assert len(out) == 1 and np.allclose(out[0][1], rows[0]["det"].landmarks, atol=1e-4)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from _synthetic_model import make_artefact

    path = tmp_path_factory.mktemp("model") / "model.neopain"
    make_artefact(path, classifier="nb", preset="paper", k=5, dim=1280, selector="su",
                  track={"detector": "blazeface", "max_side": 480, "search_every": 5})
    return path


def test_single_pass_prediction_equals_two_passes(model, videos):
    """One decode pass scores the same frames with the same probabilities (to 1e-4) as
    tracking first and decoding again, on a real video with the default tracker."""
    from neopain.deploy.exported import load
    from neopain.deploy.predictor import PredictOptions, Predictor

    try:
        pred = Predictor(load(model), PredictOptions(max_frames=60, batch_size=8))
    except FileNotFoundError as exc:
        pytest.skip(f"default tracker's models absent ({exc})")
    try:
        one = pred.predict(videos / "WolfgangLanger_Pexels.mp4")
        pred.opt.single_pass = False
        two = pred.predict(videos / "WolfgangLanger_Pexels.mp4")
    finally:
        pred.close()
    a, b = one["frames"], two["frames"]
    assert len(a) == 60 and a["ok"].sum() >= 55
    assert a["ok"].tolist() == b["ok"].tolist() and a["reason"].tolist() == b["reason"].tolist()
    np.testing.assert_allclose(a["probability"], b["probability"], atol=1e-4)
    sp = one["summary"]["single_pass"]
    assert sp["landmark_max_dev_px"] < 1e-3 and sp["max_buffered_frames"] <= 60 + 15 + 6
    assert two["summary"]["single_pass"] is None
    assert one["summary"]["n_scored"] == two["summary"]["n_scored"] == a["ok"].sum()
