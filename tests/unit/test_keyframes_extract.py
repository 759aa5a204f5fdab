"""Keyframe rule on crops whose right answer is known; per-video extraction schema."""

import numpy as np
import pyarrow as pa
import pytest

from _crops import crops_table  # noqa: E402  (tests/ helper)
from neopain.faces.keyframes import select_keyframes


def grey(value):
    return np.full((224, 224, 3), value, np.uint8)


def test_near_duplicates_are_dropped():
    # 0.5% steps stay below the 2% threshold; the jump to 150 does not
    imgs = [grey(100), grey(101), grey(102), grey(150), grey(151), grey(100)]
    kf = select_keyframes(crops_table(imgs), threshold=0.02)
    assert kf.column("keep").to_pylist() == [True, False, False, True, False, True]
    d = kf.column("diff").to_pylist()
    assert np.isnan(d[0]) and d[1] == pytest.approx(1 / 255, abs=1e-3)
    assert d[2] == pytest.approx(2 / 255, abs=1e-3)       # compared with the LAST KEPT frame


def test_cap_keeps_evenly_spaced_and_is_deterministic():
    imgs = [grey(v) for v in range(0, 250, 25)]            # every frame is a keyframe
    a = select_keyframes(crops_table(imgs), threshold=0.02, max_per_video=4)
    b = select_keyframes(crops_table(imgs), threshold=0.02, max_per_video=4)
    assert a.to_pandas().equals(b.to_pandas())  # NaN-aware
    kept = [f for f, k in zip(a.column("frame").to_pylist(), a.column("keep").to_pylist()) if k]
    assert kept == [0, 3, 6, 9]


def test_extract_video_schema():
    from neopain.features.backbones import load_backbone
    from neopain.features.extract import extract_video

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(3)]
    crops = crops_table(imgs)
    kf = select_keyframes(crops, threshold=0.0)
    net, _ = load_backbone("mobilenet_v2", ["penultimate", "block_last"], pretrained=False)
    t = extract_video(net, "v1", crops, kf, batch_size=2)
    assert t.column_names == ["video_id", "frame", "timestamp", "f_penultimate", "f_block_last"]
    assert t.num_rows == 3
    assert t.schema.field("f_penultimate").type == pa.list_(pa.float32(), 1280)
    assert t.schema.field("f_block_last").type == pa.list_(pa.float32(), 320 * 7 * 7)
    empty = extract_video(net, "v2", crops.slice(0, 0), kf.slice(0, 0))
    assert empty.num_rows == 0 and empty.schema.equals(t.schema)


def test_landmark_rule_and_either():
    """Same pixels, moving mouth corners: only the landmark rule sees the change."""
    from neopain.faces.crop import template

    n = 4
    t = template(224)
    lms = []
    for dy in (0.0, 1.0, 6.0, 6.5):  # mouth corners move 0, 1, 6, 6.5 px
        p = t.copy()
        p[3:, 1] += dy
        lms.append(p.ravel())
    crops = crops_table([grey(100)] * n)
    crops = crops.set_column(crops.schema.get_field_index("landmarks"), "landmarks",
                             pa.FixedSizeListArray.from_arrays(
                                 pa.array(np.concatenate(lms).astype(np.float32)), 10))
    px = select_keyframes(crops, method="pixels")
    assert px.column("keep").to_pylist() == [True, False, False, False]
    lm = select_keyframes(crops, method="landmarks", landmark_threshold=0.005)
    # mean move of 5 points / 224: 1 px -> 0.0018, 6 px -> 0.0107, 6.5 vs 6 -> 0.0009
    assert lm.column("keep").to_pylist() == [True, False, True, False]
    d = lm.column("landmark_diff").to_pylist()
    assert d[2] == pytest.approx(2 * 6 / 5 / 224, rel=1e-3)
    either = select_keyframes(crops, method="either", landmark_threshold=0.005)
    assert either.column("keep").to_pylist() == lm.column("keep").to_pylist()
    with pytest.raises(ValueError, match="method"):
        select_keyframes(crops, method="optical")
