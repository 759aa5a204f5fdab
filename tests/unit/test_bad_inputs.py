"""Bad input never costs the study (issue 16): each case on real files made here.

Truncated copies of shared videos are made with ``head -c``; sheets are written with
``#`` inside fields, comment lines, a BOM and CRLF line ends.  Messages must name the
file, the line and the field.  Library level here; the workflow's refusals, the
README's commands and the DAG run with broken videos are in
tests/workflow/test_bad_inputs_dag.py (the broken inputs: tests/_broken_inputs.py).
"""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from _broken_inputs import broken_folder, head_c
from _paths import REPO
from neopain.core.samples import SampleSheetError, check_study, load_samples, missing_paths
from neopain.faces.video import VideoError, iter_frames

LABELS = ["no_pain", "pain"]
HEADER = "video_id\tsubject_id\tpath\tlabel"


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
