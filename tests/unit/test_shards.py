"""Shards of videos (neopain.core.shards) and the one-decode-pass frame stage (neopain.faces.framepass).

Stable assignment (a video's shard depends on its id only), the crop stage on the
tracker's kept frames giving the same table as decoding the source again (real CK+
frames), the memory cap on kept frames, the QC record of skipped unreadable images, and
lazy imports: the library path of the track / crop / keyframes shard job does not import
torch (checked in a fresh interpreter).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from neopain.core.shards import assign, run_videos, shard_of


def test_shard_of_depends_on_the_video_id_only():
    ids = [f"clip{i:04d}" for i in range(200)]
    before = assign(ids, 16)
    after = assign([*ids, "clip_new"], 16)
    new = shard_of("clip_new", 16)
    changed = [name for name in after if after[name] != before.get(name)]
    assert changed == [f"s{new:02d}"]                  # only the new video's shard changes
    assert sorted(v for vids in before.values() for v in vids) == sorted(ids)
    sizes = [len(v) for v in before.values()]
    assert len(before) == 16 and max(sizes) <= 2 * 200 / 16, sizes   # roughly even
    assert shard_of("S106_004", 16) == shard_of("S106_004", 16)
    with pytest.raises(ValueError, match="count"):
        shard_of("x", 0)


def test_a_video_that_raises_does_not_stop_the_others():
    class Sm:
        class params:
            videos = [{"video_id": v} for v in ("a", "b", "c")]

    done = []

    def one(i):
        if i == 1:
            raise ValueError("broken b")
        done.append(i)

    with pytest.raises(RuntimeError, match=r"1 of 3 video\(s\).*b: broken b"):
        run_videos(Sm, one)
    assert done == [0, 2]


def _fixed_track(n_frames: int, fps: float, ok_every: int = 2) -> pa.Table:
    pts = np.array([[250, 200], [390, 200], [320, 270], [265, 340], [375, 340]], float)
    return pa.table({
        "frame": list(range(n_frames)),
        "timestamp": [i / fps for i in range(n_frames)],
        "ok": [i % ok_every == 0 for i in range(n_frames)],
        "landmarks": [pts.ravel().tolist() for _ in range(n_frames)],
    })


def test_crops_from_kept_frames_equal_a_second_decode(shared_data):
    from neopain.faces.crop import crop_video
    from neopain.faces.framepass import FrameTee

    path = str(shared_data / "ckplus_sequences/disgust/S106_004")
    tee = FrameTee(path, 30.0, "record")
    n = sum(1 for _ in tee)                          # the tracker's pass
    assert n > 5 and len(tee.kept) == n
    track = _fixed_track(n, 30.0)
    again = crop_video(path, track, fps_for_images=30.0)
    once = crop_video(path, track, fps_for_images=30.0, frames=tee.kept)
    assert once.num_rows == (n + 1) // 2 and once.equals(again)

    small = FrameTee(path, 30.0, "record", max_bytes=3 * 640 * 490 * 3)
    assert sum(1 for _ in small) == n and small.kept is None   # over the cap: decode again


def test_skipped_images_are_recorded_as_the_tracker_records_them():
    from neopain.faces.framepass import _record_bad_images

    qc = {"n_frames": 10, "n_ok": 9, "error": None, "frames_lost": 0, "status": "ok"}
    out = _record_bad_images(qc, ["frame 3: x.png: cannot decode"])
    assert out["frames_lost"] == 1 and out["status"] == "partial"
    assert out["error"] == "1 unreadable image(s) skipped, first frame 3: x.png: cannot decode"
    assert _record_bad_images(qc, []) is qc


def test_track_crop_keyframes_library_path_does_not_import_torch():
    code = ("import sys\n"
            "import neopain.core.shards, neopain.faces.framepass, neopain.faces.track, neopain.faces.crop, "
            "neopain.faces.keyframes, neopain.core.provenance, neopain.core.runtime, neopain.faces.qc, "
            "neopain.faces.video, neopain.faces.detectors.registry, neopain.faces.trackparams\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'facenet_pytorch') "
            "if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


CNN_SCRIPTS = {"extract", "finetune", "cascade"}  # the rules that run a network


def test_rule_scripts_without_a_cnn_never_import_torch():
    """Every module a rule script imports (at its top or inside ``main``), imported in a
    fresh interpreter: only the CNN rules' scripts bring torch in (gather_features once
    did, through neopain.features.extract: ~1.3 s of every incremental run)."""
    import ast

    from _paths import REPO

    checked = []
    for script in sorted((REPO / "scripts").glob("*.py")):
        if script.stem.startswith("_") or script.stem in CNN_SCRIPTS:
            continue
        mods = sorted({n.module for n in ast.walk(ast.parse(script.read_text()))
                       if isinstance(n, ast.ImportFrom) and n.module
                       and n.module.startswith("neopain")})
        code = ("import importlib, sys\n"
                f"for m in {mods!r}: importlib.import_module(m)\n"
                "print('torch' in sys.modules)\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=300, env={**__import__("os").environ,
                                                "PYTHONPATH": str(REPO / "src")})
        assert proc.returncode == 0, (script.name, proc.stderr)
        assert proc.stdout.strip() == "False", f"{script.name} imports torch via {mods}"
        checked.append(script.stem)
    assert {"gather_features", "select", "nested", "classify", "track"} <= set(checked)
