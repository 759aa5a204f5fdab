"""Facial-action descriptors (neopain.features.actions) on inputs whose answer is known: a synthetic
mesh (the face-mesh network's own mean face) moved by known amounts, real faces rotated and
mirrored, CK+ neutral -> apex directions, and the LiteRT mesh against the ONNX one (the
actions tables through the DAG: tests/workflow/test_actions_dag.py)."""

from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import pytest

from neopain.features import actions as A
from neopain.faces.detectors.facemesh import FaceMeshRefiner
from neopain.faces.detectors.mtcnn import MTCNNDetector
from neopain.faces.mpmodels import MESH_FILE
from neopain.faces.track import track_video
from neopain.faces.video import Frame
from neopain.learn.posecontrol import PoseResidualizer
GEOMETRIC = tuple(A.DESCRIPTORS)


@pytest.fixture(scope="module")
def refiner(mesh_dir) -> FaceMeshRefiner:
    return FaceMeshRefiner(model_dir=mesh_dir, backend="litert", replace_five=False, threads=1)


@pytest.fixture(scope="module")
def synthetic(refiner):
    """The network's mean face (its output on a uniform grey crop), as an upright face in
    a 640x480 image: 468 x (x, y) pixels and depth (IOD about 170 px)."""
    raw, _ = refiner._net(np.full((1, 192, 192, 3), 0.5, np.float32))
    xy = raw[:, :2].astype(np.float64) * 2.0 + np.array([128.0, 40.0])
    return xy, raw[:, 2].astype(np.float64) * 2.0


def _iod_px(xy):
    return float(np.linalg.norm(xy[list(A.EYE_R)].mean(0) - xy[list(A.EYE_L)].mean(0)))


@pytest.mark.parametrize("d", [2.0, 5.0, 10.0])
def test_brows_lowered_by_d_pixels_change_the_brow_descriptor_by_d_over_iod(synthetic, d):
    xy, z = synthetic
    base = A.frame_actions(xy, z)
    low = xy.copy()
    low[list(A.BROW_R + A.BROW_L), 1] += d  # image y points down: lowered
    moved = A.frame_actions(low, z)
    want = d / _iod_px(xy)
    for side in ("r", "l"):
        got = moved[f"au4_brow_lower_{side}"] - base[f"au4_brow_lower_{side}"]
        assert abs(got - want) <= 0.02 * want, (side, got, want)
    # nothing else moves: the brows are not among the pose-fit points
    for k in GEOMETRIC:
        if not k.startswith("au4_brow_lower"):
            assert abs(moved[k] - base[k]) < 1e-6 * want + 1e-9, k
    assert abs(moved["yaw"] - base["yaw"]) < 1e-9


#: the mesh's forehead/glabella points, which move with the brows on real faces (CK+)
FOREHEAD = (10, 151, 9, 8, 168, 109, 338, 67, 297, 103, 332, 54, 284, 21, 251)


def test_brow_movement_is_not_absorbed_by_the_pose_fit(synthetic):
    """The face mesh moves its forehead points with the brows (CK+: -0.03 to -0.06 IOD in
    anger, up to +0.12 in surprise): brows and forehead lowered together by d px still
    change the brow descriptor by d / IOD (2%), and the pose stays."""
    xy, z = synthetic
    base = A.frame_actions(xy, z)
    d = 6.0
    low = xy.copy()
    low[list(A.BROW_R + A.BROW_L + FOREHEAD), 1] += d
    moved = A.frame_actions(low, z)
    want = d / _iod_px(xy)
    for side in ("r", "l"):
        got = moved[f"au4_brow_lower_{side}"] - base[f"au4_brow_lower_{side}"]
        assert abs(got - want) <= 0.02 * want, (side, got, want)
    assert abs(moved["pitch"] - base["pitch"]) < 1e-9
    assert not set(FOREHEAD) & set(A.RIGID)


def _rotate_image_plane(xy, angle_deg, scale, shift):
    t = math.radians(angle_deg)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (xy - xy.mean(0)) @ R.T * scale + xy.mean(0) + shift


@pytest.mark.parametrize("angle", [0, 17, 45, 90, 133, 180, 225, 270, 333])
@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_descriptors_unchanged_by_in_plane_rotation_and_scale(synthetic, angle, scale):
    xy, z = synthetic
    base = A.frame_actions(xy, z)
    rot = A.frame_actions(_rotate_image_plane(xy, angle, scale, (31.0, -17.0)), z * scale)
    for k in GEOMETRIC:
        assert rot[k] == pytest.approx(base[k], abs=1e-9), k
    # a clockwise turn on screen (y down) is a negative roll; yaw and pitch stay
    droll = (rot["roll"] - base["roll"] + angle + 180) % 360 - 180
    assert abs(droll) < 1e-6
    assert rot["yaw"] == pytest.approx(base["yaw"], abs=1e-6)
    assert rot["pitch"] == pytest.approx(base["pitch"], abs=1e-6)


@pytest.mark.parametrize("yaw,pitch", [(25, 0), (0, -20), (-30, 15)])
def test_descriptors_unchanged_by_head_turns_and_pose_is_measured(synthetic, yaw, pitch):
    """Turning the 3-D mesh (orthographic view, as the mesh network's output) leaves the
    canonical descriptors exactly as they were and shows up as yaw / pitch."""
    xy, z = synthetic
    base = A.frame_actions(xy, z)
    P = A.to_model_space(xy, z)
    c = P.mean(0)
    ya, pa_ = math.radians(yaw), math.radians(pitch)
    Ry = np.array([[math.cos(ya), 0, math.sin(ya)], [0, 1, 0], [-math.sin(ya), 0, math.cos(ya)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(pa_), -math.sin(pa_)], [0, math.sin(pa_), math.cos(pa_)]])
    Q = (P - c) @ (Ry @ Rx).T + c
    turned = A.frame_actions(np.column_stack([Q[:, 0], -Q[:, 1]]), -Q[:, 2])
    for k in GEOMETRIC:
        assert turned[k] == pytest.approx(base[k], abs=1e-9), k
    assert turned["yaw"] - base["yaw"] == pytest.approx(yaw, abs=2.0)
    assert turned["pitch"] - base["pitch"] == pytest.approx(pitch, abs=2.0)


def test_pose_fit_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    t = math.radians(40)
    R = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    s, R2, tr = A.procrustes(X, 2.5 * X @ R.T + [1, 2, 3])
    assert s == pytest.approx(2.5) and np.allclose(R2, R) and np.allclose(tr, [1, 2, 3])
    assert A.pose_angles(R)[2] == pytest.approx(40)


# ------------------------------------------------------------------------ real faces


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def mtcnn():
    pytest.importorskip("facenet_pytorch")
    return MTCNNDetector(max_side=None)


def _actions_of(img, mtcnn, refiner, texture=False):
    faces = mtcnn.detect(img)
    assert faces, "no face"
    r = refiner.refine(img, faces[0])
    out = A.frame_actions(r.dense, r.depth)
    if texture:  # on the aligned crop, as the stage does
        from neopain.faces.crop import align, transform_points

        crop, M = align(img, faces[0].landmarks, 224)
        out.update(A.texture_energy(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY),
                                    transform_points(M, r.dense)))
    return out


@pytest.fixture(scope="module")
def ck_rows(shared_data):
    return list(csv.DictReader(open(shared_data / "ckplus_sequences.csv")))


def _apex(shared_data, rows, seq):
    row = next(r for r in rows if r["sequence"] == seq)
    return sorted((shared_data / row["path"]).glob("*.png"))[-1]


#: mirror tolerance (IOD): the mesh network is not exactly mirror-equivariant; measured
#: worst case over 14 CK+ apex frames: 0.024 (brow, eye, nose-lip, lip corners), 0.051 (mouth,
#: jaw, chin, nostrils)
MIRROR_TOL = {"au4": 0.03, "au7": 0.03, "au10": 0.03, "au12": 0.03}


def test_mirrored_face_swaps_left_and_right(shared_data, ck_rows, mtcnn, refiner):
    """A mirrored video: right and left descriptors swap, the others stay (within
    :data:`MIRROR_TOL`, else 0.06 IOD), yaw and roll change sign (within 4 / 2 degrees)."""
    for row in ck_rows[::3]:  # 14 apex frames, every emotion
        img = _rgb(sorted((shared_data / row["path"]).glob("*.png"))[-1])
        a = _actions_of(img, mtcnn, refiner)
        m = _actions_of(np.ascontiguousarray(img[:, ::-1]), mtcnn, refiner)
        for k in GEOMETRIC:
            tol = MIRROR_TOL.get(k.split("_")[0], 0.06)
            swapped = k[:-1] + {"r": "l", "l": "r"}[k[-1]] if k.endswith(("_r", "_l")) else k
            assert m[swapped] == pytest.approx(a[k], abs=tol), (row["sequence"], k)
        assert m["yaw"] == pytest.approx(-a["yaw"], abs=4.0)
        assert m["roll"] == pytest.approx(-a["roll"], abs=2.0)


@pytest.mark.parametrize("angle,scale", [(37, 1.0), (90, 0.6), (180, 1.0), (250, 1.5)])
def test_real_face_rotated_by_any_angle_gives_the_same_descriptors(shared_data, ck_rows,
                                                                    mtcnn, refiner, angle,
                                                                    scale):
    """The tracker (search at 0/90/180/270, upright ROI at the face's roll) + mesh on a
    rotated and scaled CK+ apex frame: every descriptor within 0.03 IOD of the upright,
    unscaled frame's."""
    img = _rgb(_apex(shared_data, ck_rows, "S055_004"))
    h, w = img.shape[:2]
    side = int(math.hypot(h, w)) + 2
    pad = cv2.copyMakeBorder(img, (side - h) // 2, side - h - (side - h) // 2,
                             (side - w) // 2, side - w - (side - w) // 2, cv2.BORDER_CONSTANT)
    M = cv2.getRotationMatrix2D((side / 2, side / 2), -angle, scale)
    rot = cv2.warpAffine(pad, M, (side, side), flags=cv2.INTER_AREA if scale < 1
                         else cv2.INTER_LINEAR)
    out = []
    for im in (pad, rot):
        frames = [Frame(i, i / 30, im) for i in range(2)]
        table, qc = track_video("rotated", mtcnn, frames=frames, refiner=refiner)
        assert qc["n_ok"] == 2, qc["reasons"]
        row = table.slice(0, 1).to_pylist()[0]
        out.append(A.frame_actions(np.reshape(row["dense_landmarks"], (468, 2)),
                                   np.asarray(row["dense_depth"])))
    for k in GEOMETRIC:
        assert out[1][k] == pytest.approx(out[0][k], abs=0.03), k
    droll = (out[1]["roll"] - out[0]["roll"] + angle + 180) % 360 - 180
    assert abs(droll) < 5


#: emotion -> (descriptor, direction, share of sequences required)
CK_DIRECTIONS = {
    "anger": ("au4_brow_lower", 1, 1.0),       # measured 4/4
    "disgust": ("au10_nose_lip", -1, 0.85),    # measured 9/9
    "surprise": ("au26_jaw_drop", 1, 0.85),    # measured 9/9
    "happiness": ("au12_lip_corner", 1, 0.85),  # measured 8/8
    "fear:au20": ("au20_mouth_width", 1, 0.8),   # AU20 lip stretch, measured 5/5
    # AU4's wrinkles between the brows (glabella texture): measured 4/4, 9/9, 4/5, 3/5
    "anger:tex": ("tex_glabella", 1, 1.0),
    "disgust:tex": ("tex_glabella", 1, 0.85),
    "sadness:tex": ("tex_glabella", 1, 0.8),
    "fear:tex": ("tex_glabella", 1, 0.6),
    "surprise:tex": ("tex_glabella", -1, 0.85),  # brows raised: the glabella smooths, 9/9
    # NOT what the issue expected: in sadness and fear AU4 comes with AU1(+2), which raise
    # the brows, and the mesh's brow height does not rise: measured 2/5 (median -0.006
    # IOD) and 1/5 (-0.018), against anger 4/4 (+0.040), disgust 9/9 (+0.046). No mesh
    # variant did better (docs/actions.md: inner/outer brow, to the upper lid or the eye
    # centre, 3-D distance, brow gap, depth; 1-3 of 5 each); the shares are stated here,
    # the bounds only guard against a regression. AU4 shows there as glabella texture.
    "sadness": ("au4_brow_lower", 1, 0.4),
    "fear": ("au4_brow_lower", 1, 0.2),
    # the pose fit leaves the brows' movement in the descriptor (forehead points are not
    # fitted): surprise lowers the brow descriptor in every sequence
    "surprise:brow": ("au4_brow_lower", -1, 1.0),   # measured 9/9, median -0.113 IOD
}


def test_ckplus_neutral_to_apex_directions(shared_data, ck_rows, mtcnn, refiner):
    def val(x, k):
        return x[k] if k in x else 0.5 * (x[k + "_r"] + x[k + "_l"])

    ends = {}  # sequence -> (neutral, apex) actions
    for r in ck_rows:
        files = sorted((shared_data / r["path"]).glob("*.png"))
        ends[r["sequence"]] = tuple(_actions_of(_rgb(f), mtcnn, refiner, texture=True)
                                    for f in (files[0], files[-1]))
    shares = {}
    for emo, (k, s, need) in CK_DIRECTIONS.items():
        rows = [r for r in ck_rows if r["emotion"] == emo.split(":")[0]]
        ups = [s * (val(ends[r["sequence"]][1], k) - val(ends[r["sequence"]][0], k)) > 0
               for r in rows]
        shares[emo] = (sum(ups), len(ups))
    print("CK+ neutral->apex shares:", shares)
    for emo, (k, s, need) in CK_DIRECTIONS.items():
        n_up, n = shares[emo]
        assert n >= 4 and n_up / n >= need, (emo, k, shares[emo])


def test_litert_mesh_equals_the_onnx_mesh(shared_models, shared_data, ck_rows, mtcnn, refiner):
    pytest.importorskip("onnxruntime")
    onnx = FaceMeshRefiner(model_dir=shared_models / "facemesh", backend="onnx",
                           replace_five=False, threads=1)
    img = _rgb(_apex(shared_data, ck_rows, "S106_006"))
    (face,) = mtcnn.detect(img)[:1]
    a, b = refiner.refine(img, face), onnx.refine(img, face)
    assert np.abs(a.dense - b.dense).max() < 0.05 and np.abs(a.depth - b.depth).max() < 0.05
    assert a.mesh_score > 0.9 and b.mesh_score is None
    assert refiner.info()["weights"] == {MESH_FILE: A_SHA()}


def A_SHA():
    from neopain.faces.mpmodels import MESH_SHA256
    return MESH_SHA256


def test_video_statistics_and_pspi_known_answer():
    """A brow that lowers by 0.1 IOD for 10 of 30 frames: peak 0.1, share above 1/3, PSPI
    0.1 there and 0 elsewhere (per-video 10th percentile baseline)."""
    import pyarrow as pa
    n = 30
    x = {k: np.full(n, 0.5) for k in A.FRAME_FEATURES if k != "pspi"}
    x["au4_brow_lower_r"] = np.r_[np.zeros(10), np.full(10, 0.1), np.zeros(10)] - 0.2
    x["au4_brow_lower_l"] = x["au4_brow_lower_r"].copy()
    p = A.pspi(x, 10.0)
    assert np.allclose(p, x["au4_brow_lower_r"] + 0.2)
    t = pa.table({"frame": np.arange(n), "timestamp": np.arange(n) / 10.0,
                  **{k: v for k, v in x.items()}, "pspi": p})
    v, names = A.video_statistics(t, {"above": 0.02, "onset_window": 0.2})
    s = dict(zip(names, v))
    assert s["au4_brow_lower_r__peak"] == pytest.approx(0.1)
    assert s["au4_brow_lower_r__above"] == pytest.approx(1 / 3)
    assert s["au4_brow_lower_r__onset"] == pytest.approx(0.1 / 0.2)  # 0.1 IOD within 0.2 s
    assert s["au7_eye_aperture_r__peak"] == 0 and s["pspi__peak"] == pytest.approx(0.1)
    assert names == A.feature_names("video") and len(names) == len(A.FRAME_FEATURES) * 5


def test_feature_tables_keep_keyframes_with_finite_values_and_one_video_row():
    import pyarrow as pa
    n = 12
    cols = {k: np.linspace(0, 1, n) for k in A.FRAME_FEATURES}
    cols["tex_glabella"][3] = np.nan  # e.g. no crop for that frame
    t = pa.table({"frame": np.arange(n, dtype=np.int32), "timestamp": np.arange(n) / 30.0,
                  **cols, **{k: np.zeros(n) for k in A.POSE}})
    kf = pa.table({"frame": np.arange(n, dtype=np.int32), "keep": np.arange(n) % 2 == 1})
    frame_t, video_t = A.feature_tables("v1", t, kf)
    assert frame_t.column("frame").to_pylist() == [1, 5, 7, 9, 11]  # odd keyframes, 3 is NaN
    assert frame_t.schema.field("f_frame").type.list_size == len(A.FRAME_FEATURES)
    assert video_t.num_rows == 1 and video_t.column("frame")[0].as_py() == 11  # pspi peak
    assert video_t.schema.field("f_video").type.list_size == len(A.feature_names("video"))
    empty_f, empty_v = A.feature_tables("v2", t.slice(0, 0), None)
    assert empty_f.num_rows == 0 and empty_v.num_rows == 0
    # texture off: the texture columns (NaN) leave the tables instead of emptying them
    t2 = t.drop_columns(list(A.PATCHES)).append_column(
        "tex_glabella", pa.array([np.nan] * n))
    f2, v2 = A.feature_tables("v3", t2, None, {"texture": False})
    assert f2.num_rows == n and v2.num_rows == 1
    assert f2.schema.field("f_frame").type.list_size == len(A.DESCRIPTORS) + 1


def test_actions_table_from_a_tracked_video_is_deterministic(videos, mtcnn, refiner):
    from neopain.faces.crop import crop_video

    path = videos / "single_face.mp4"
    table, qc = track_video(path, mtcnn, refiner=refiner, max_frames=12)
    crops = crop_video(path, table, size=224)
    a = A.video_actions(table, crops)
    b = A.video_actions(table, crops)
    assert a.equals(b) and a.num_rows == qc["n_ok"] == 12
    assert all(np.isfinite(a.column(k).to_numpy()).all() for k in A.FRAME_FEATURES + A.POSE)
    assert (a.column("mesh_score").to_numpy() > 0.9).all()


def test_fusion_gains_actions_and_deep_strain_actions_rows():
    """Table 7 with facial actions (synthetic: the action statistics carry the signal):
    the actions and deep+strain+actions sets are scored per fold like strain (imputed and
    selected on training videos), get rows and DeLong p-values; test labels never reach
    the action selection."""
    from test_fusion import deep_rankings, sheet, synthetic

    from neopain.learn.metrics import metrics_table
    from neopain.learn.fusion import ALL_SETS, fusion_scores, keyframe_strain, rank_strain, table7
    from neopain.learn.split import make_split

    X, meta, strain, names = synthetic(strain_signal=0.0)
    split = make_split(sheet(meta), "g", {"kind": "group_kfold", "n_splits": 4})
    S = keyframe_strain(meta, strain, names)
    rng = np.random.default_rng(3)
    vids = meta["video_id"].to_numpy(dtype=object)
    per_video = {v: rng.normal(size=12) for v in np.unique(vids)}
    acts = np.stack([per_video[v] for v in vids])
    acts[:, :2] += 2.0 * meta["y"].to_numpy()[:, None]
    acts[vids == vids[0]] = np.nan  # a video without a mesh: imputed from training videos
    scores = fusion_scores(X, meta, split, deep_rankings(split), S, [15], 5, "su", {},
                           {"nb": {}}, seed=0, actions=acts, actions_k=4)
    assert set(scores["features"]) == set(ALL_SETS)
    ks = scores.groupby("features")["k"].unique().apply(sorted).to_dict()
    assert ks["actions"] == [4] and ks["deep+strain+actions"] == [15 + 5 + 4]
    scores = scores.assign(backbone="m", layer="l")
    t7, dl = table7(metrics_table(scores, n_boot=50), scores)
    assert t7["features"].tolist() == list(ALL_SETS)
    p = t7.set_index("features")
    assert p.loc["actions", "frame_auc"] > 0.85 > p.loc["deep", "frame_auc"]
    assert p.loc["actions", "p_vs_deep"] == p.loc["deep", "p_vs_actions"] < 0.01
    assert {("deep+strain+actions", "fused"), ("actions", "deep")} <= set(zip(dl["a"], dl["b"]))
    # the action selector sees only training videos
    train = meta["subject_id"].isin(split[(split.fold == 0) & (split.role == "train")]
                                    .subject_id).to_numpy()
    keep = rank_strain(np.nan_to_num(acts), meta["y"].to_numpy(), train, vids, "su", {}, 4)
    A2, y2 = np.nan_to_num(acts).copy(), meta["y"].to_numpy().copy()
    A2[~train] = rng.normal(size=A2[~train].shape) * 50
    y2[~train] = 1 - y2[~train]
    assert np.array_equal(rank_strain(A2, y2, train, vids, "su", {}, 4), keep)


def test_pose_residualizer_removes_pose_fitted_on_training_rows_only():
    rng = np.random.default_rng(0)
    n = 400
    pose = rng.uniform(-40, 40, size=(n, 3))
    signal = rng.normal(size=n)
    d = np.column_stack([signal + 0.02 * pose[:, 0] + 1e-4 * pose[:, 1] ** 2,
                         0.5 * signal - 0.01 * pose[:, 2]])
    X = np.column_stack([d, pose])
    train = np.arange(n) < 300
    r = PoseResidualizer().fit(X[train])
    out = r.transform(X)
    assert out.shape == (n, 2)
    for j in range(2):   # pose explains nothing any more, the signal stays
        assert abs(np.corrcoef(out[:, j], pose[:, 0])[0, 1]) < 0.05
        assert abs(np.corrcoef(out[:, j], pose[:, 2])[0, 1]) < 0.05
        assert np.corrcoef(out[:, j], signal)[0, 1] > 0.97
    # the test rows never reach the fit
    X2 = X.copy()
    X2[~train] = rng.normal(size=X2[~train].shape) * 100
    assert np.allclose(PoseResidualizer().fit(X2[train]).coef_, r.coef_)
