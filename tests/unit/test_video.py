"""Frame streaming on the real test videos and frame folders (../shared/data)."""

from __future__ import annotations

import csv
import hashlib
import inspect
from pathlib import Path

import cv2
import numpy as np
import pytest

from neopain.faces.video import Frame, VideoError, iter_frames, natural_key, source_sha256


@pytest.fixture(scope="module")
def ck_rows(shared_data: Path) -> list[dict]:
    with open(shared_data / "ckplus_sequences.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _faststart_copy(src: Path, dst: Path) -> Path:
    """Remux ``src`` (moov at the end) into an MP4 with its index first."""
    import av

    with av.open(str(src)) as inp, av.open(
        str(dst), "w", format="mp4", options={"movflags": "faststart"}
    ) as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        for pkt in inp.demux(ist):
            if pkt.dts is None:
                continue
            pkt.stream = ost
            out.mux(pkt)
    data = dst.read_bytes()
    assert data[36:40] == b"moov", "remux did not put the index first"
    return dst


def test_single_face_72_frames_increasing_timestamps(videos):
    gen = iter_frames(videos / "single_face.mp4")
    assert inspect.isgenerator(gen)  # streamed, not a list
    n = 0
    last_t = -1.0
    for i, fr in enumerate(gen):
        assert isinstance(fr, Frame)
        assert fr.index == i
        assert fr.image.shape == (360, 640, 3) and fr.image.dtype == np.uint8
        assert fr.timestamp > last_t
        last_t = fr.timestamp
        n += 1
    assert n == 72
    assert last_t == pytest.approx(71 / 30, abs=1e-6)


def test_rgb_channel_order(videos):
    """PyAV output must be RGB, like the image-folder path (compare against cv2 BGR)."""
    fr = next(iter(iter_frames(videos / "single_face.mp4")))
    cap = cv2.VideoCapture(str(videos / "single_face.mp4"))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    rgb_cv = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(int)
    img = fr.image.astype(int)
    assert np.abs(img - rgb_cv).mean() < 3
    assert np.abs(img - bgr.astype(int)).mean() > np.abs(img - rgb_cv).mean() + 3


def test_no_face_decodes_95_not_the_declared_98(videos):
    import av

    with av.open(str(videos / "no_face.mp4")) as c:
        assert c.streams.video[0].frames == 98  # what the container claims
    frames = list(iter_frames(videos / "no_face.mp4"))
    assert len(frames) == 95
    assert [f.index for f in frames] == list(range(95))
    assert all(b.timestamp > a.timestamp for a, b in zip(frames, frames[1:]))


def test_max_frames(videos):
    assert len(list(iter_frames(videos / "single_face.mp4", max_frames=5))) == 5


def test_ckplus_folders_give_csv_frame_counts(shared_data, ck_rows):
    assert len(ck_rows) == 40
    for row in ck_rows:
        folder = shared_data / row["path"]
        frames = list(iter_frames(folder, fps_for_images=30.0))
        assert len(frames) == int(row["n_frames"]), row["sequence"]
        assert frames[0].image.ndim == 3 and frames[0].image.shape[2] == 3  # grey -> RGB
        assert frames[0].image.dtype == np.uint8
        assert frames[-1].timestamp == pytest.approx((len(frames) - 1) / 30.0)


def test_grey_png_becomes_rgb(shared_data, ck_rows):
    folder = shared_data / ck_rows[0]["path"]
    first = sorted(folder.glob("*.png"))[0]
    grey = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    assert grey.ndim == 2  # the CK+ frames really are grey
    (fr,) = list(iter_frames(first))
    assert fr.index == 0 and fr.timestamp == 0.0
    assert fr.image.shape == grey.shape + (3,)
    for ch in range(3):
        np.testing.assert_array_equal(fr.image[:, :, ch], grey)


def test_folder_natural_sort(tmp_path):
    for i in (10, 2, 1):
        img = np.full((4, 4, 3), i, np.uint8)
        cv2.imwrite(str(tmp_path / f"f{i}.png"), img)
    (tmp_path / "notes.txt").write_text("ignored")
    frames = list(iter_frames(tmp_path, fps_for_images=10.0))
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 10]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    assert natural_key("a2.png") < natural_key("a10.png")


def test_truncated_moov_at_end_raises_naming_file(videos, tmp_path):
    # single_face.mp4 has its index (moov) at the end: a cut copy cannot be opened.
    data = (videos / "single_face.mp4").read_bytes()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    with pytest.raises(VideoError) as err:
        list(iter_frames(cut))
    assert str(err.value).startswith(str(cut))


def test_truncated_mid_stream_raises_with_frame_index(videos, tmp_path):
    # Index first: the decoder hits a partial packet mid-stream.
    fast = _faststart_copy(videos / "single_face.mp4", tmp_path / "fast.mp4")
    assert len(list(iter_frames(fast))) == 72  # the remux itself is complete
    data = fast.read_bytes()
    cut = tmp_path / "cut40.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    got = []
    with pytest.raises(VideoError) as err:
        for fr in iter_frames(cut):
            got.append(fr.index)
    msg = str(err.value)
    assert msg.startswith(str(cut))
    assert 0 < len(got) < 72
    assert f"frame index {len(got)}" in msg


def test_truncated_on_packet_boundary_is_not_silent(videos, tmp_path):
    # Cutting exactly at a packet boundary makes PyAV end the stream silently
    # (71 frames, last timestamp unchanged because of B-frame reordering);
    # the packet-count check must turn that into an error.
    import av

    fast = _faststart_copy(videos / "single_face.mp4", tmp_path / "fast.mp4")
    with av.open(str(fast)) as c:
        positions = [p.pos for p in c.demux(c.streams.video[0]) if p.size]
    for k in (30, len(positions) - 1):
        cut = tmp_path / f"cut_at_packet_{k}.mp4"
        cut.write_bytes(fast.read_bytes()[: positions[k]])
        n = 0
        with pytest.raises(VideoError, match="truncated") as err:
            for _ in iter_frames(cut):
                n += 1
        assert str(err.value).startswith(str(cut))
        assert n == k


def test_garbage_and_non_video_files_raise(tmp_path):
    rng = np.random.default_rng(0)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    text = tmp_path / "notes.avi"
    text.write_text("this is not a video\n")
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG not really")
    for p in (garbage, text, empty, bad_png):
        with pytest.raises(VideoError) as err:
            list(iter_frames(p))
        assert str(err.value).startswith(str(p)), str(err.value)


def test_missing_path_and_empty_dir_raise(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match="does not exist") as err:
        iter_frames(missing)  # raised immediately, before iteration
    assert str(err.value).startswith(str(missing))
    empty = tmp_path / "frames"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(VideoError, match="no image files") as err:
        iter_frames(empty)
    assert str(err.value).startswith(str(empty))


def test_source_sha256_file_and_dir(videos, shared_data, ck_rows, tmp_path):
    f = videos / "single_face.mp4"
    assert source_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()

    folder = shared_data / ck_rows[0]["path"]
    h1 = source_sha256(folder)
    assert len(h1) == 64 and h1 == source_sha256(folder)

    # a copy has the same hash; renaming or editing one file changes it
    copy = tmp_path / "seq"
    copy.mkdir()
    for p in folder.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    assert source_sha256(copy) == h1
    first = sorted(copy.iterdir())[0]
    first.rename(copy / ("x" + first.name))
    h2 = source_sha256(copy)
    assert h2 != h1
    last = sorted(copy.iterdir())[-1]
    last.write_bytes(last.read_bytes() + b"\0")
    assert source_sha256(copy) not in (h1, h2)
    with pytest.raises(VideoError):
        source_sha256(tmp_path / "missing")
