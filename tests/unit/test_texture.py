"""Texture baselines (neopain.features.texture): LTP against a hand-computed example and against
scikit-image's LBP, grid histograms, the per-video tables (the workflow path,
texture tables through select/classify/evaluate like a backbone:
tests/workflow/test_texture_dag.py)."""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _crops import crops_table
from neopain.features import texture as tx

# centre 100; neighbours p = 0..7 counter-clockwise from east (row offset -R sin,
# column offset R cos), diagonals bilinear: dr = dc = 1 - 0.70711 = 0.29289 towards
# the centre row/column. By hand:
#   p0 E  118                                                     diff +18    -> +1
#   p1 NE 0.70711*(0.29289*120 + 0.70711*120)
#         + 0.29289*(0.29289*100 + 0.70711*118) = 84.853 + 33.017 = 117.870   +17.87 -> +1
#   p2 N  120                                                     +20    -> +1
#   p3 NW 0.70711*(0.70711*90 + 0.29289*120)
#         + 0.29289*(0.70711*97 + 0.29289*100) = 69.853 + 28.668 = 98.521     -1.48 ->  0
#   p4 W  97                                                      -3     ->  0
#   p5 SW 0.29289*(0.70711*97 + 0.29289*100)
#         + 0.70711*(0.70711*60 + 0.29289*103) = 28.668 + 51.332 = 80.000     -20.0 -> -1
#   p6 S  103                                                     +3     ->  0
#   p7 SE 0.29289*(0.29289*100 + 0.70711*118)
#         + 0.70711*(0.29289*103 + 0.70711*70) = 33.017 + 56.332 = 89.349     -10.65 -> -1
# t = 5: ternary (+1 +1 +1 0 0 -1 0 -1): upper 11100000 (2 transitions, uniform: 3 ones
#   -> code 3), lower 00000101 (4 transitions: non-uniform -> P + 1 = 9);
# t = 15: upper as before (3), lower 00000100 (uniform, one 1 -> code 1);
# t = 0: upper = (diff >= 0) = 11100010 (4 transitions -> 9) = the uniform LBP code.
HAND = np.array([[90, 120, 120], [97, 100, 118], [60, 103, 70]], np.uint8)


def test_ltp_matches_the_hand_computed_example():
    nb = tx._neighbours(HAND.astype(float), 8, 1)[:, 1, 1]
    assert nb == pytest.approx([118, 117.870, 120, 98.521, 97, 80.000, 103, 89.349], abs=2e-3)
    for t, (up, lo) in {5: (3, 9), 15: (3, 1)}.items():
        u, l_ = tx.ltp_codes(HAND, 8, 1, t)
        assert (int(u[1, 1]), int(l_[1, 1])) == (up, lo), t
    u0, _ = tx.ltp_codes(HAND, 8, 1, 0)
    assert int(u0[1, 1]) == 9 == int(tx.lbp_codes(HAND, 8, 1)[1, 1])


def test_riu2_codes():
    bits = np.array([[0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0, 0, 1],
                     [0, 1, 1, 0, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0, 0, 0]]).T[:, :, None]
    assert tx.riu2(bits)[:, 0].tolist() == [0, 8, 2, 2, 9]


@pytest.mark.parametrize("P, R", [(8, 1.0), (16, 2.0), (8, 1.5)])
def test_ltp_upper_at_zero_threshold_equals_skimage_uniform_lbp(P, R):
    rng = np.random.default_rng(P)
    for img in (rng.integers(0, 256, (37, 53)).astype(np.uint8),
                (rng.integers(0, 256, (37, 53)) // 64 * 64).astype(np.uint8),  # many ties
                np.full((20, 20), 77, np.uint8)):
        up, _ = tx.ltp_codes(img, P, R, 0)
        assert np.array_equal(up, tx.lbp_codes(img, P, R))


def test_ltp_on_a_real_face_and_threshold_semantics(shared_data):
    from test_strain import ck_face
    import cv2

    grey = cv2.cvtColor(ck_face(shared_data), cv2.COLOR_RGB2GRAY)
    up0, _ = tx.ltp_codes(grey, 8, 1, 0)
    assert np.array_equal(up0, tx.lbp_codes(grey, 8, 1))
    up, lo = tx.ltp_codes(grey, 8, 1, 5)
    # code 0 = no neighbour beyond +-t: flat skin makes both patterns mostly empty
    assert (up == 0).mean() > (up0 == 0).mean() and (lo == 0).mean() > 0.2
    d = tx.descriptor(grey, "ltp")
    assert d.shape == (980,) and d.dtype == np.float32
    cells = d.reshape(2, 49, 10)
    assert np.allclose(cells.sum(axis=2), 1.0, atol=1e-6)


def test_grid_histograms_and_dimensions():
    codes = np.zeros((224, 224), np.int16)
    codes[:32, :32] = 3                      # exactly the first of 7 x 7 cells
    h = tx.grid_histograms(codes, 10, 7).reshape(49, 10)
    assert h[0, 3] == 1.0 and h[1:, 0].tolist() == [1.0] * 48
    assert tx.dimension("lbp") == 490 and tx.dimension("ltp") == 980
    assert tx.dimension("lbp", {"P": 16, "grid": 4}) == 16 * 18
    with pytest.raises(ValueError, match="unknown parameter 'radius'"):
        tx.params_for("lbp", {"radius": 2})
    with pytest.raises(ValueError, match="unknown texture method"):
        tx.params_for("hog")


def test_texture_video_rows_are_the_keyframes_in_the_gathered_schema(tmp_path):
    import pandas as pd

    from neopain.features.tables import gather_layer

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (224, 224, 3)).astype(np.uint8) for _ in range(5)]
    crops = crops_table(imgs)
    keyframes = pa.table({"frame": pa.array(range(5), pa.int32()),
                          "keep": [True, False, True, True, False]})
    per_video = {}
    for method in tx.METHODS:
        t = tx.texture_video("v1", crops, keyframes, method)
        assert t.column_names == ["video_id", "frame", "timestamp", "f_grid"]
        assert t.column("frame").to_pylist() == [0, 2, 3]
        assert t.schema.field("f_grid").type.list_size == tx.dimension(method)
        path = tmp_path / f"{method}.parquet"
        pq.write_table(t, path)
        per_video[method] = path
    samples = pd.DataFrame({"subject_id": ["s1"], "label": ["pain"]}, index=["v1"])
    out = tmp_path / "gathered.parquet"
    n = gather_layer({"v1": per_video["ltp"]}, "grid", samples, "pain", out, {b"k": b"v"})
    schema = pq.read_schema(out)
    assert n == 3 and schema.names == ["video_id", "subject_id", "label", "y", "frame",
                                       "timestamp", "features"]
    assert str(schema.field("features").type) == "fixed_size_list<element: float>[980]"
