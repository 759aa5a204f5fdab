"""Streamed extraction (threaded decode, float16 option) and the gathered tables: pandas,
duckdb, and reading one video's rows without reading the others (row-group pruning)."""

import io
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from neopain.features.backbones import load_backbone
from _crops import crops_table  # noqa: E402  (tests/ helper)
from neopain.features.extract import (autocast_dtype, decode_batch, extract_video,
                                      prefetch_batches, read_features)
from neopain.faces.keyframes import select_keyframes
from neopain.features.tables import feature_matrix, gather_layer


@pytest.fixture(scope="module")
def crops():
    rng = np.random.default_rng(0)
    return crops_table([rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(7)])


def test_prefetch_keeps_order_and_resizes(crops):
    jpegs = crops.column("jpeg").to_pylist()
    seq = np.concatenate(list(prefetch_batches(jpegs, 64, 3, workers=0)))
    par = np.concatenate(list(prefetch_batches(jpegs, 64, 3, workers=2, depth=2)))
    assert seq.shape == (7, 64, 64, 3) and np.array_equal(seq, par)
    assert [len(b) for b in prefetch_batches(jpegs, 64, 3, workers=2)] == [3, 3, 1]
    # the CPU mode: each batch split over the decode threads when asked for
    for w in (1, 2, 3, 5):
        between = list(prefetch_batches(jpegs, 64, 3, workers=w, overlap=False))
        assert [len(b) for b in between] == [3, 3, 1]
        assert np.array_equal(np.concatenate(between), seq)
    assert np.array_equal(decode_batch(jpegs[:1], 224)[0].shape, (224, 224, 3))


def test_precision_choice():
    assert autocast_dtype(torch.device("cpu"), "auto") is None    # CPU: fp32
    assert autocast_dtype(torch.device("cpu"), "bf16") is None
    with pytest.raises(ValueError):
        autocast_dtype(torch.device("cpu"), "int8")


def test_float16_output_and_fer_input_size(crops):
    kf = select_keyframes(crops, threshold=0.0)
    net, _ = load_backbone("fer", ["penultimate", "conv_last"])
    a = extract_video(net, "v", crops, kf, batch_size=3, dtype="float32")
    b = extract_video(net, "v", crops, kf, batch_size=4, dtype="float16", workers=0)
    assert a.schema.field("f_conv_last").type == pa.list_(pa.float32(), 2048)
    assert b.schema.field("f_conv_last").type == pa.list_(pa.float16(), 2048)
    fa = np.stack(a.column("f_penultimate").to_numpy(zero_copy_only=False))
    fb = np.stack(b.column("f_penultimate").to_numpy(zero_copy_only=False)).astype(np.float32)
    np.testing.assert_allclose(fb, fa, rtol=2e-3, atol=2e-3)     # batching does not matter
    empty = extract_video(net, "e", crops.slice(0, 0), kf.slice(0, 0), dtype="float16")
    assert empty.num_rows == 0 and empty.schema.equals(b.schema)


class CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes read through it."""

    def __init__(self, path):
        self.fh = open(path, "rb")
        self.bytes_read = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=0):
        return self.fh.seek(pos, whence)

    def tell(self):
        return self.fh.tell()

    def readinto(self, b):
        n = self.fh.readinto(b)
        self.bytes_read += n or 0
        return n

    def close(self):
        self.fh.close()
        super().close()


VIDEOS = [f"v{i}" for i in range(8)]


@pytest.fixture(scope="module")
def gathered(tmp_path_factory):
    """A gathered table of 8 videos x 10 rows x 4,096 float32 values, and a float16 one."""
    tmp = tmp_path_factory.mktemp("feat")
    rng = np.random.default_rng(1)
    per_video, tables = {}, {}
    for v in VIDEOS:
        arr = rng.standard_normal((10, 4096)).astype(np.float32)
        t = pa.table({"video_id": pa.array([v] * 10), "frame": pa.array(range(10), pa.int32()),
                      "timestamp": pa.array(np.arange(10) / 30.0),
                      "f_fc7": pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), 4096),
                      "f_fc7h": pa.FixedSizeListArray.from_arrays(
                          pa.array(arr.ravel().astype(np.float16)), 4096)})
        pq.write_table(t, tmp / f"{v}.parquet")
        per_video[v], tables[v] = tmp / f"{v}.parquet", arr
    samples = pd.DataFrame({"video_id": VIDEOS, "subject_id": [f"s{i // 2}" for i in range(8)],
                            "label": ["pain", "no_pain"] * 4}).set_index("video_id", drop=False)
    out32, out16 = tmp / "fc7.parquet", tmp / "fc7h.parquet"
    meta = {b"neopain.backbone": b"x"}
    assert gather_layer(per_video, "fc7", samples, "pain", out32, meta) == 80
    assert gather_layer(per_video, "fc7h", samples, "pain", out16, meta) == 80
    return out32, out16, tables


def test_one_row_group_per_video_with_statistics(gathered):
    path, path16, tables = gathered
    f = pq.ParquetFile(path)
    assert f.metadata.num_row_groups == 8
    col = f.schema_arrow.get_field_index("video_id")
    stats = [f.metadata.row_group(i).column(col).statistics for i in range(8)]
    assert [(s.min, s.max) for s in stats] == [(v, v) for v in VIDEOS]
    # one video by its row group alone
    assert f.read_row_group(2).column("video_id").to_pylist() == ["v2"] * 10
    assert str(f.schema_arrow.field("features").type) == "fixed_size_list<element: float>[4096]"
    h = pq.ParquetFile(path16)
    assert str(h.schema_arrow.field("features").type) == \
        "fixed_size_list<element: halffloat>[4096]"
    assert h.metadata.serialized_size + sum(
        h.metadata.row_group(i).total_byte_size for i in range(8)) < \
        f.metadata.serialized_size + sum(f.metadata.row_group(i).total_byte_size for i in range(8))


def test_reading_one_video_reads_a_fraction_of_the_file(gathered):
    path, _, tables = gathered
    size = path.stat().st_size
    whole = CountingFile(path)
    pq.read_table(whole)
    one = CountingFile(path)
    t = pq.read_table(one, filters=[("video_id", "=", "v2")])
    assert t.num_rows == 10 and set(t.column("video_id").to_pylist()) == {"v2"}
    np.testing.assert_array_equal(feature_matrix(t), tables["v2"])
    print(f"bytes read: whole table {whole.bytes_read}, one video {one.bytes_read} "
          f"(file {size})")
    assert whole.bytes_read >= 0.9 * size
    assert one.bytes_read < 0.3 * size        # 1 of 8 row groups + footer
    df = read_features(path, ["v1", "v3"])
    assert sorted(set(df.video_id)) == ["v1", "v3"] and len(df) == 20


def test_pandas_and_duckdb_read_and_prune(gathered):
    duckdb = pytest.importorskip("duckdb")
    path, path16, tables = gathered
    df = pd.read_parquet(path)
    assert list(df.columns) == ["video_id", "subject_id", "label", "y", "frame", "timestamp",
                                "features"]
    assert df.groupby("video_id").size().to_dict() == {v: 10 for v in VIDEOS}
    con = duckdb.connect()
    n, dim = con.execute(f"select count(*), max(len(features)) from '{path16}'").fetchall()[0]
    assert (n, dim) == (80, 4096)                        # float16 tables read as FLOAT[]
    plan = con.sql(f"explain analyze select features from '{path}' "
                   f"where video_id = 'v2'").fetchall()[0][1]
    m = re.search(r"Row Groups Scanned:\s*(\d+)\s*/\s*(\d+)", plan)
    assert m, plan
    assert (int(m.group(1)), int(m.group(2))) == (1, 8), plan
    rows = con.execute(f"select features from '{path}' where video_id = 'v2' "
                       f"order by frame").fetchall()
    got = np.array([r[0] for r in rows], np.float32)
    np.testing.assert_array_equal(got, tables["v2"])


def test_bench_script_runs(tmp_path, repo):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_extract",
                                                  repo / "bench" / "bench_extract.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--backbones", "fer", "--n-images", "8", "--batch-size", "4",
                       "--repeats", "1", "--workers", "1", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["machine"]["device"] in ("cpu", "cuda") and rec["machine"]["cores"] >= 1
    r = rec["results"][0]
    assert r["backbone"] == "fer" and r["images"] == 8 and r["bare_images_per_s"] > 0
    assert 0 < r["ratio"] == pytest.approx(r["pipeline_images_per_s"] / r["bare_images_per_s"],
                                           rel=1e-2)


def test_reduced_decode_for_small_input_networks(shared_data):
    """fer's 64 px input: a 224 px crop is decoded at 1/2 scale by libjpeg, then
    INTER_AREA; the result stays within a few grey levels of full decode + resize."""
    from neopain.features.extract import reduce_factor
    assert [reduce_factor(224, s) for s in (224, 200, 112, 64, 56, 28, 20)] == [1, 1, 2, 2, 4, 8, 8]
    assert reduce_factor(100, 64) == 1 and reduce_factor(0, 64) == 1
    import cv2
    seq = sorted((shared_data / "ckplus_sequences" / "anger" / "S055_004").glob("*.png"))
    img = cv2.imread(str(seq[-1]))
    h, w = img.shape[:2]
    s = min(h, w)
    face = cv2.resize(img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2], (224, 224),
                      interpolation=cv2.INTER_AREA)
    jpegs = [cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()] * 3
    full = np.concatenate(list(prefetch_batches(jpegs, 64, 2, workers=0, fast_decode=False)))
    fast = np.concatenate(list(prefetch_batches(jpegs, 64, 2, workers=1, fast_decode=True)))
    assert fast.shape == full.shape == (3, 64, 64, 3)
    diff = np.abs(fast.astype(int) - full.astype(int))
    assert 0 < diff.mean() < 2.0 and np.percentile(diff, 99) <= 12
    # networks at the crop size never take the reduced path
    same = np.concatenate(list(prefetch_batches(jpegs, 224, 2, workers=0, fast_decode=True)))
    assert np.array_equal(same, decode_batch(jpegs, 224))


def test_grey_decode_gives_the_grey_network_the_same_input(shared_data):
    """fer (grey input) gets the JPEG luma plane copied to 3 channels; its own RGB->grey
    step then returns that plane, so features match the colour-decode path closely."""
    import cv2
    seq = sorted((shared_data / "ckplus_sequences" / "happiness" / "S106_006").glob("*.png"))
    jpegs = []
    for p in seq[:: max(1, len(seq) // 6)][:6]:
        img = cv2.imread(str(p))
        h, w = img.shape[:2]
        s = min(h, w)
        face = cv2.resize(img[(h - s) // 2:(h + s) // 2, (w - s) // 2:(w + s) // 2], (224, 224),
                          interpolation=cv2.INTER_AREA)
        jpegs.append(cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    g = decode_batch(jpegs, 224, grey=True)
    c = decode_batch(jpegs, 224)
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    luma = c.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(g[..., 0] - luma).mean() < 1.0
    net, _ = load_backbone("fer", ["penultimate"])
    table = crops_table([cv2.cvtColor(cv2.imdecode(np.frombuffer(j, np.uint8), 1), cv2.COLOR_BGR2RGB)
                         for j in jpegs])
    kf = pa.table({"frame": table.column("frame"), "keep": pa.array([True] * table.num_rows)})
    fast = feature_matrix(extract_video(net, "v", table, kf, fast_decode=True).rename_columns(
        ["video_id", "frame", "timestamp", "features"]))
    full = feature_matrix(extract_video(net, "v", table, kf, fast_decode=False).rename_columns(
        ["video_id", "frame", "timestamp", "features"]))
    assert fast.shape == full.shape == (6, full.shape[1])
    cos = (fast * full).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(full, axis=1)
    assert cos.min() > 0.98, cos
    # each frame's fast features are nearest to the same frame's full-decode features,
    # though the frames come from one neutral -> peak sequence of one person
    d = ((fast[:, None, :] - full[None, :, :]) ** 2).sum(-1)
    assert (d.argmin(1) == np.arange(len(d))).all(), d
    assert not np.array_equal(fast, full)          # the fast path really ran
