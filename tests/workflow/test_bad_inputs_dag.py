"""Bad input never costs the study (issue 16), at the workflow level: bad studies and
configs are refused at planning, before any job; the README's commands dry-run and lint
without the demo data; one small DAG run (slow) with broken videos ends with Tables 5/6
and a QC table listing the bad videos.  The library-level cases are in
tests/unit/test_bad_inputs.py; the broken inputs are made by tests/_broken_inputs.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest
import yaml

from _broken_inputs import broken_folder, head_c
from _paths import REPO
from _tiny import TINY_VIDEOS, job_counts, snakemake, tiny_config, write_sheet


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
