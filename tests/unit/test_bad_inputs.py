"""Bad input never costs the study (issue 16): each case on real files made here.

Truncated copies of shared videos are made with ``head -c``; sheets are written with
``#`` inside fields, comment lines, a BOM and CRLF line ends.  Messages must name the
file, the line and the field; the other videos' results must be complete.  One small
DAG run (slow) ends with Tables 5/6 and a QC table listing the bad videos.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from _tiny import REPO, TINY_VIDEOS, job_counts, snakemake, tiny_config, write_sheet
from neopain.core.samples import SampleSheetError, check_study, load_samples, missing_paths
from neopain.faces.video import VideoError, iter_frames

LABELS = ["no_pain", "pain"]
HEADER = "video_id\tsubject_id\tpath\tlabel"


def head_c(src: Path, dst: Path, fraction: float) -> Path:
    """A truncated copy made as a user would: ``head -c N``."""
    n = int(src.stat().st_size * fraction)
    with open(dst, "wb") as out:
        subprocess.run(["head", "-c", str(n), str(src)], stdout=out, check=True)
    return dst


def broken_folder(shared_data: Path, dst: Path, seq="ckplus_sequences/disgust/S106_004"):
    """A copy of a CK+ sequence (symlinks) with one corrupt image in the middle."""
    files = sorted((shared_data / seq).iterdir())
    dst.mkdir()
    for f in files:
        (dst / f.name).symlink_to(f)
    mid = files[len(files) // 2]
    (dst / mid.name).unlink()
    (dst / mid.name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # unreadable
    return dst, len(files), files.index(mid)


# ---------------------------------------------------------------- sample sheet (cases 2-5)


def test_hash_is_data_except_on_whole_comment_lines(tmp_path):
    (tmp_path / "cam#2").mkdir()
    (tmp_path / "cam").mkdir()           # the folder a '#' comment would have picked
    (tmp_path / "take#2.mp4").write_bytes(b"x")
    sheet = tmp_path / "s.tsv"
    sheet.write_text("# study sheet\n" + HEADER + "\n  # indented comment\n"
                     "v1\tinfant#12\tcam#2\tpain\nv2\ts2\ttake#2.mp4\tno_pain\n")
    df = load_samples(sheet, LABELS)
    assert df.loc["v1", "abspath"] == str((tmp_path / "cam#2").resolve())
    assert df.loc["v1", "subject_id"] == "infant#12"
    assert df.loc["v2", "abspath"].endswith("take#2.mp4")
    assert list(df["sheet_line"]) == [4, 5]


def test_line_numbers_are_the_files_with_comments_bom_and_crlf(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    lines = ["# sheet of study X", "# exported 2026-12-01", HEADER, "v1\ts1\ta.mp4\tpain",
             "", "# second camera", "v2\ts2\ta.mp4\tno_pain", "v1\ts3\ta.mp4\tpain"]
    sheet = tmp_path / "s.tsv"
    sheet.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    with pytest.raises(SampleSheetError) as err:
        load_samples(sheet, LABELS)
    assert str(err.value) == (f"{sheet}: line 8 (video_id='v1'): field 'video_id' "
                              f"duplicates line 4")
    # with the duplicate gone, BOM + CRLF parse cleanly (no '\ufeffvideo_id', no '\r')
    sheet.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines[:-1]).encode() + b"\r\n")
    df = load_samples(sheet, LABELS)
    assert list(df.index) == ["v1", "v2"] and df.loc["v2", "label"] == "no_pain"


def test_empty_and_headerless_sheets_name_the_sheet(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    with pytest.raises(SampleSheetError, match=re.escape(f"{empty}: the sample sheet is empty")):
        load_samples(empty, LABELS)
    only_comments = tmp_path / "c.csv"
    only_comments.write_text("# nothing yet\n\n")
    with pytest.raises(SampleSheetError, match=re.escape(str(only_comments))):
        load_samples(only_comments, LABELS)
    ragged = tmp_path / "r.tsv"
    ragged.write_text(HEADER + "\n# c\nv1\ts1\ta.mp4\n")
    with pytest.raises(SampleSheetError, match=re.escape(f"{ragged}: line 3: 3 field(s)")):
        load_samples(ragged, LABELS)


def test_study_checks_one_class_one_subject_too_few_folds(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    sheet = tmp_path / "s.tsv"
    sheet.write_text(HEADER + "\nv1\ts1\ta.mp4\tpain\nv2\ts2\ta.mp4\tpain\n")
    df = load_samples(sheet, LABELS)
    with pytest.raises(SampleSheetError, match=r"s.tsv: field 'label': no video is labelled "
                                               r"'no_pain'"):
        check_study(df, LABELS, {"loso": {"kind": "loso"}})
    sheet.write_text(HEADER + "\nv1\ts1\ta.mp4\tpain\nv2\ts1\ta.mp4\tno_pain\n")
    with pytest.raises(SampleSheetError, match=r"field 'subject_id': protocol 'loso' \(loso\) "
                                               r"needs at least 2 subjects, found 1"):
        check_study(load_samples(sheet, LABELS), LABELS, {"loso": {"kind": "loso"}})
    sheet.write_text(HEADER + "\nv1\ts1\ta.mp4\tpain\nv2\ts2\ta.mp4\tno_pain\n")
    with pytest.raises(SampleSheetError, match=r"protocol 'k5': n_splits=5 exceeds the 2"):
        check_study(load_samples(sheet, LABELS), LABELS,
                    {"k5": {"kind": "group_kfold", "n_splits": 5}})


def test_missing_paths_are_listed_with_lines_not_raised_when_deferred(tmp_path):
    sheet = tmp_path / "s.tsv"
    sheet.write_text("# c\n" + HEADER + "\nv1\ts1\t/mnt/absent/a.mp4\tpain\n")
    df = load_samples(sheet, LABELS, check_paths=False)
    assert missing_paths(df) == [f"{sheet}: line 3 (video_id='v1'): field 'path': "
                                 f"/mnt/absent/a.mp4 does not exist"]


# ---------------------------------------------------------------- config (cases 6-8, 11)


def test_config_strings_from_the_command_line_are_coerced():
    from neopain.core.studyconfig import coerce_strings

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    # what snakemake's --config parser makes of export='{enabled: true}' and a k list
    got = coerce_strings({"export": {"enabled": "true", "threshold": "0.4"},
                          "select": {"k": ["5", "10"]}, "samples": "true"}, schema)
    assert got["export"] == {"enabled": True, "threshold": 0.4}
    assert got["select"]["k"] == [5, 10] and got["samples"] == "true"


def test_run_selector_and_backbone_names():
    from neopain.core.studyconfig import ConfigError, check_backbones, select_run

    cfg = {"extract": {"backbones": {"mobilenet_v2": {"layers": ["penultimate"]},
                                     "fer": {"layers": ["penultimate"]}}},
           "protocols": {"holdout": {"kind": "holdout"}, "mine": {"kind": "loso"}}}
    b, p = select_run({**cfg, "run": {"protocols": ["mine"], "backbones": None}})
    assert list(p) == ["mine"] and list(b) == ["mobilenet_v2", "fer"]
    with pytest.raises(ConfigError, match=r"run.protocols: 'holdot' not defined in protocols "
                                          r"\(defined: holdout, mine\)"):
        select_run({**cfg, "run": {"protocols": ["holdot"]}})
    with pytest.raises(ConfigError, match=r"extract.backbones.mobilenet_v2.layers: unknown "
                                          r"layer\(s\) 'fc7'.*known for mobilenet_v2: "
                                          r"penultimate"):
        check_backbones({"mobilenet_v2": {"layers": ["penultimate", "fc7"]}})
    with pytest.raises(ConfigError, match=r"extract.backbones.mobilenet: unknown backbone"):
        check_backbones({"mobilenet": {"layers": ["penultimate"]}})


def test_k_larger_than_the_features_is_clipped_and_reported(caplog):
    from neopain.learn.classify import score_folds

    rng = np.random.default_rng(0)
    n, d = 40, 12
    X = rng.normal(size=(n, d)).astype(np.float32)
    meta = pd.DataFrame({"video_id": [f"v{i // 5}" for i in range(n)],
                         "subject_id": [f"s{i // 10}" for i in range(n)],
                         "frame": np.arange(n), "y": (np.arange(n) // 10) % 2})
    split = pd.DataFrame({"protocol": "p", "fold": 0, "subject_id": ["s0", "s1", "s2", "s3"],
                          "role": ["train", "train", "test", "test"]})
    rank = pd.DataFrame({"protocol": "p", "fold": 0, "selector": "su",
                         "rank": np.arange(d), "feature": np.arange(d)})
    with caplog.at_level("WARNING"):
        scores = score_folds(X, meta, split, rank, [5, 5000, 6000], {"nb": {}})
    assert sorted(set(scores["k"])) == [5, d]          # the real k, once
    assert "select.k=5000 exceeds the 12 ranked features; scored as k=12" in caplog.text


# ---------------------------------------------------------------- videos and folders (1)


def test_truncated_faststart_video_is_partial_and_croppable(videos, tmp_path):
    """WolfgangLanger_Pexels.mp4 (moov first) cut in half with head -c: the frames before
    the cut are read, frames_lost is counted, and crop stops at the last tracked frame."""
    from neopain.faces.crop import crop_video
    from neopain.faces.tracktable import TRACK_SCHEMA, qc_status

    cut = head_c(videos / "WolfgangLanger_Pexels.mp4", tmp_path / "half.mp4", 0.5)
    stamps = []
    with pytest.raises(VideoError, match=re.escape(str(cut)) + ".*truncated") as err:
        for fr in iter_frames(cut):
            stamps.append(fr.timestamp)
    total = sum(1 for _ in iter_frames(videos / "WolfgangLanger_Pexels.mp4"))
    assert 0 < len(stamps) < total and err.value.frames_lost == total - len(stamps)
    assert qc_status(len(stamps), 3, str(err.value)) == "partial"
    assert qc_status(0, 0, str(err.value)) == "error"
    assert qc_status(len(stamps), 0, str(err.value)) == "no_face"
    # a track whose last ok frame is the last decoded one: crop must not hit the cut
    last = len(stamps) - 1
    lm = [600.0, 300.0, 680.0, 300.0, 640.0, 350.0, 610.0, 400.0, 670.0, 400.0]
    rows = {f.name: [] for f in TRACK_SCHEMA}
    for i, ts in enumerate(stamps):
        ok = i in (0, last)
        for f in TRACK_SCHEMA:
            rows[f.name].append({"frame": i, "timestamp": ts, "ok": ok,
                                 "landmarks": lm if ok else None}.get(f.name))
    track = pa.Table.from_pydict({k: rows[k] for k in ("frame", "timestamp", "ok",
                                                       "landmarks")})
    crops = crop_video(cut, track)
    assert crops.column("frame").to_pylist() == [0, last]


def test_frame_folder_with_a_corrupt_image_is_partial(shared_data, tmp_path):
    pytest.importorskip("facenet_pytorch")
    from neopain.faces.crop import crop_video
    from neopain.faces.detectors.mtcnn import MTCNNDetector
    from neopain.faces.track import track_video

    folder, n_files, bad = broken_folder(shared_data, tmp_path / "seq")
    table, qc = track_video(folder, MTCNNDetector(), on_error="record")
    assert qc["status"] == "partial" and qc["frames_lost"] == 1
    assert f"frame {bad}" in qc["error"] and str(folder) in qc["error"]
    assert qc["n_frames"] == n_files - 1 and bad not in table.column("frame").to_pylist()
    crops = crop_video(folder, table)
    assert crops.num_rows == qc["n_ok"] > 0
    with pytest.raises(VideoError, match=re.escape(str(folder))):
        track_video(folder, MTCNNDetector(), on_error="fail")


def test_failed_run_sets_stale_tables_aside(tmp_path):
    from neopain.core.stale import clear_stale, set_aside_stale

    ev = tmp_path / "results/evaluation"
    ev.mkdir(parents=True)
    (ev / "table5.md").write_text("old")
    (ev / "metrics.parquet").write_text("old")
    old = time.time() - 100
    for p in ev.iterdir():
        os.utime(p, (old, old))
    start = time.time() - 10
    assert set_aside_stale(tmp_path, start) == []        # nothing upstream changed
    (tmp_path / "results/tracks").mkdir()
    (tmp_path / "results/tracks/new.qc.json").write_text("{}")   # written by this run
    stale = set_aside_stale(tmp_path, start)
    assert stale == ["results/evaluation/metrics.parquet", "results/evaluation/table5.md"]
    assert not (ev / "table5.md").exists() and (ev / "table5.md.stale").read_text() == "old"
    assert "results/evaluation/table5.md" in (ev / "STALE.md").read_text()
    clear_stale(tmp_path)
    assert not list(ev.iterdir())


def test_verify_without_record_names_the_right_path(tmp_path, capsys):
    from neopain.cli import main

    (tmp_path / "results").mkdir()
    assert main(["verify", str(tmp_path / "results")]) == 2
    cap = capsys.readouterr()
    err = cap.out + cap.err
    assert f"{tmp_path}/results/provenance/run.json: no run record" in err
    assert "results/results" not in err


# ---------------------------------------------------------------- workflow, up front (5-11)


def _sm(work, *args, configfile=None):
    proc = snakemake(work, *args, check=False, configfile=configfile)
    return proc.returncode, proc.stdout + proc.stderr


def test_workflow_refuses_bad_studies_before_any_job(shared_data, tmp_path):
    tiny_config(tmp_path, shared_data)
    one_class = [v for v in TINY_VIDEOS if v[3] == "pain"]
    write_sheet(tmp_path / "one.tsv", one_class)
    rc, out = _sm(tmp_path, "--dry-run", "--config", "samples=one.tsv")
    assert rc != 0 and "one.tsv: field 'label': no video is labelled 'no_pain'" in out
    rc, out = _sm(tmp_path, "--dry-run", "--config",
                  "extract={backbones: {mobilenet_v2: {layers: [fc7]}}}")
    assert rc != 0 and "extract.backbones.mobilenet_v2.layers: unknown layer(s) 'fc7'" in out
    assert not (tmp_path / "results").exists()


def test_overlay_chooses_protocols_and_cli_booleans_work(shared_data, tmp_path):
    tiny_config(tmp_path, shared_data)
    overlay = tmp_path / "study.yaml"
    overlay.write_text(yaml.safe_dump({"protocols": {"k2": {"kind": "group_kfold",
                                                            "n_splits": 2}},
                                       "run": {"protocols": ["k2"]}}))
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cmd_cfg = [tmp_path / "config.yaml", overlay]
    proc = subprocess.run(
        [*snakemake_base(tmp_path), "--dry-run", "--configfile", *map(str, cmd_cfg)],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert job_counts(proc.stdout + proc.stderr)["split"] == 1     # k2 only, not loso
    assert "results/splits/k2.parquet" in proc.stdout + proc.stderr
    assert cfg["protocols"] == {"loso": {"kind": "loso"}}
    rc, out = _sm(tmp_path, "--dry-run", "--config", "run={protocols: [holdot]}")
    assert rc != 0 and "run.protocols: 'holdot' not defined in protocols" in out


def snakemake_base(work):
    from _tiny import SNAKEMAKE

    return [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
            "--cores", "1"]


def _readme_snakemake_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(".venv/bin/snakemake") and "profiles/slurm" not in line:
                cmds.append(line)
    return cmds


def test_readme_commands_dry_run_and_lint_without_the_data(tmp_path):
    """The README's snakemake commands, as written, at dry-run level, on a checkout whose
    demo data is absent (lint and dry run must not need it); case 8: export='{...}'."""
    cmds = _readme_snakemake_commands()
    assert any("export='{enabled: true}'" in c for c in cmds), cmds
    work = tmp_path / "checkout"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "results", "resources", ".snakemake", "logs", "*.egg-info"))
    (work / ".venv").symlink_to((REPO / ".venv").resolve())
    assert not (work / "resources/demo").exists()
    for cmd in cmds:
        argv = shlex.split(cmd) + ["--dry-run"]
        proc = subprocess.run(argv, cwd=work, capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{cmd}\n{out[-3000:]}"
        assert "field 'path'" in out and "does not exist" in out   # warned, not refused
        if "export" in cmd:
            assert job_counts(out).get("export") == 1
    lint = subprocess.run([".venv/bin/snakemake", "--lint"], cwd=work, capture_output=True,
                          text=True)
    assert lint.returncode == 0, lint.stdout[-2000:] + lint.stderr[-2000:]
    real = subprocess.run([".venv/bin/snakemake", "--cores", "1"], cwd=work,
                          capture_output=True, text=True)
    out = real.stdout + real.stderr
    assert real.returncode != 0 and "samples/demo.tsv: line" in out
    assert "field 'path'" in out and not (work / "results").exists()


# ---------------------------------------------------------------- one DAG run (slow)


@pytest.mark.slow
def test_study_with_broken_videos_ends_with_tables_and_qc(shared_data, videos, tmp_path):
    """Two CK+ subjects (good), a truncated faststart video (head -c), a folder with a
    corrupt image, a no-face video as its own subject and a garbage file as its own
    subject: the run succeeds, Tables 5/6 exist, the QC table lists the bad ones."""
    work = tmp_path
    cut = head_c(videos / "WolfgangLanger_Pexels.mp4", work / "cut.mp4", 0.1)
    folder, n_files, bad = broken_folder(shared_data, work / "S106_004_broken")
    garbage = work / "garbage.mp4"
    garbage.write_bytes(b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 20)
    sheet_rows = [v for v in TINY_VIDEOS if v[0] != "S106_004"] + [
        ("S106_004b", "S106", str(folder), "pain"),
        ("cut", "wolfgang", str(cut), "pain"),
        ("noface", "cartoon", str(videos / "no_face.mp4"), "no_pain"),
        ("garbage", "broken", str(garbage), "no_pain")]
    cfg = tiny_config(work, shared_data, videos=sheet_rows)
    cfg["strain"] = {**(cfg.get("strain") or {}), "enabled": False}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    ev = work / "results/evaluation"
    ev.mkdir(parents=True)
    (ev / "table5.md").write_text("stale table from an older run\n")
    os.utime(ev / "table5.md", (1, 1))
    snakemake(work)

    qc = pq.read_table(work / "results/qc/tracking.parquet").to_pandas().set_index("video_id")
    assert qc.loc["cut", "status"] == "partial" and qc.loc["cut", "frames_lost"] > 0
    assert qc.loc["S106_004b", "status"] == "partial" and qc.loc["S106_004b", "frames_lost"] == 1
    assert qc.loc["noface", "status"] == "no_face" and not qc.loc["noface", "used"]
    assert qc.loc["garbage", "status"] == "error" and not qc.loc["garbage", "used"]
    md = (work / "results/qc/tracking.md").read_text()
    for vid, status in (("cut", "partial"), ("S106_004b", "partial"), ("noface", "no_face"),
                        ("garbage", "error")):
        assert re.search(rf"\| {vid} \| \S+ \| {status} \|", md), md
    assert re.search(r"\| cartoon \| no_pain \| noface \| no usable frames \(noface: no_face\)",
                     md), md
    assert re.search(r"\| broken \| no_pain \| garbage \| no usable frames", md), md

    feats = pq.read_table(work / "results/features/mobilenet_v2/penultimate/features.parquet",
                          columns=["video_id", "frame"]).to_pandas()
    per_video = feats.groupby("video_id")["frame"].nunique()
    for vid in ("S106_006", "S125_008", "S125_007", "S106_004b", "cut"):
        kf = pq.read_table(work / f"results/keyframes/{vid}.parquet").to_pandas()
        assert per_video[vid] == int(kf["keep"].sum()) > 0, vid  # every keyframe
    assert bad not in set(feats.loc[feats["video_id"] == "S106_004b", "frame"])
    assert not {"noface", "garbage"} & set(per_video.index)

    split = pq.read_table(work / "results/splits/loso.parquet")
    subjects = set(split.column("subject_id").to_pylist())
    assert subjects == {"S106", "S125", "wolfgang"}
    excluded = json.loads(split.schema.metadata[b"neopain.excluded"])
    assert {e["subject_id"] for e in excluded} == {"cartoon", "broken"}

    t5 = (ev / "table5.md").read_text()
    assert "stale table" not in t5 and "mobilenet_v2" in t5
    assert (ev / "table6.md").is_file() and (ev / "table6.parquet").is_file()
    assert not (ev / "STALE.md").exists()

    # a later run that fails (a new video, track.on_error: fail) leaves no stale table
    # looking current: the evaluation files are set aside and listed
    grown = work / "grown.tsv"
    grown.write_text((work / "samples.tsv").read_text() + f"broken2\tS125\t{garbage}\tpain\n")
    proc = snakemake(work, "--rerun-triggers", "mtime", "--config", "samples=grown.tsv",
                     "track={on_error: fail}", check=False)
    assert proc.returncode != 0
    assert not (ev / "table5.md").exists() and (ev / "table5.md.stale").is_file()
    assert "results/evaluation/table5.md" in (ev / "STALE.md").read_text()
