"""The run record, `neopain verify` and `snakemake --report`, on the tiny clean run.

The clean run (shared with tests/workflow/test_incremental.py through tests/_tiny.py) writes
results/provenance/run.json at its end. Checked here: every output is listed with its rule,
inputs and sha256 and agrees with the tables' own provenance; `neopain verify` passes on
the run and reports drift (exit 1) after one byte of an output, or of an input, changes
(in a copy of the run); the HTML report holds the results table and no face images while
report.show_faces is false (the default).
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest

import _tiny
from neopain.cli import main as cli
from neopain.core.provenance import read_provenance, sha256_file
from neopain.core.verify import verify

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean(tmp_path_factory, shared_data):
    return _tiny.clean_run(tmp_path_factory, shared_data)


@pytest.fixture
def copy(clean, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(clean, dst, symlinks=True)
    return dst


def test_run_record_lists_every_output_with_rule_inputs_and_hashes(clean):
    rec = json.loads((clean / "results/provenance/run.json").read_text())
    assert rec["format"] == "neopain.run-record/1"
    assert rec["config"]["select"]["selectors"] == {"relieff": {"n_neighbors": 10}}
    tables = [str(p) for p in _tiny.result_tables(clean)]
    assert set(tables) <= set(rec["outputs"]), set(tables) - set(rec["outputs"])
    for key, ent in rec["outputs"].items():
        assert ent["rule"], key                        # every output was made by a job
        assert ent["sha256"] == sha256_file(clean / key), key
        assert ent["inputs"] and all(len(h or "") == 64 for h in ent["inputs"].values()), key
    feats = rec["outputs"]["results/features/mobilenet_v2/penultimate/features.parquet"]
    assert feats["rule"] == "gather_features"
    assert sum("_per_video/" in k for k in feats["inputs"]) == len(_tiny.TINY_VIDEOS)
    prov = read_provenance(clean / "results/features/mobilenet_v2/penultimate/features.parquet")
    assert feats["provenance"]["sources"] == prov["sources"]
    # raw inputs: the frame folders (their hash is the tables' video:<id> source) + sheet
    raw = rec["inputs"]
    for vid, _, path, _ in _tiny.TINY_VIDEOS:
        key = next(k for k in raw if k.endswith(path))
        assert raw[key]["sha256"] == prov["sources"][f"video:{vid}"]
    assert rec["weights"]["mobilenet_v2-b0353104.pth"]["sha256"].startswith("b0353104")
    assert rec["weights"]["mobilenet_v2-b0353104.pth"]["path"]
    track = rec["outputs"][f"results/tracks/{_tiny.TINY_VIDEOS[0][0]}.parquet"]
    # made by a shard job (track_<shard>), recorded with the stage's provenance and own log
    assert track["rule"].startswith("track_s") and track["provenance"]["rule"] == "track"
    assert f"logs/track/{_tiny.TINY_VIDEOS[0][0]}.log" in track["log"]


def test_verify_passes_on_the_run(clean, capsys):
    assert cli(["verify", str(clean / "results")]) == 0
    out = capsys.readouterr().out
    assert "0 drift" in out and "OK: no drift" in out


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_reports_a_changed_output(copy, capsys):
    target = "results/scores/mobilenet_v2/penultimate/loso/relieff.parquet"
    _flip_last_byte(copy / target)
    assert cli(["verify", str(copy / "results")]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"DRIFT changed\s+{re.escape(target)}", out), out
    # ... and what was made from it is stale
    assert re.search(r"DRIFT stale\s+results/evaluation/metrics.parquet", out), out


def test_verify_reports_a_changed_input(copy, capsys):
    sheet = copy / "samples.tsv"
    sheet.write_text(sheet.read_text().replace("S106_004\tS106", "S106_004\tS106x", 1))
    report = verify(copy / "results")
    assert not report.ok
    kinds = {(k, p) for k, p, _ in report.drift}
    assert ("changed", "samples.tsv") in kinds, report.summary()
    assert any(k == "stale" for k, _ in kinds), report.summary()
    assert cli(["verify", str(copy / "results")]) == 1
    capsys.readouterr()


def test_record_cli_rebuilds_the_record(copy, capsys):
    (copy / "results/provenance/run.json").unlink()
    assert cli(["verify", str(copy / "results")]) == 2
    assert cli(["record", str(copy), "--configfile", str(copy / "config.yaml")]) == 0
    assert "outputs" in capsys.readouterr().out
    assert verify(copy / "results").ok


def embedded_files(html: str) -> dict[str, tuple[str, bytes]]:
    """filename -> (mime, bytes) of every data URI embedded in a Snakemake HTML report."""
    out = {}
    for mime, name, b64 in re.findall(
            r"data:([\w/+.-]+);charset=[^;]*;filename=([^;]+);base64,([A-Za-z0-9+/=]+)", html):
        out[name] = (mime, base64.b64decode(b64))
    return out


def test_report_has_results_and_no_faces_by_default(clean):
    report = clean / "report.html"
    _tiny.snakemake(clean, "--report", str(report))
    html = report.read_text()
    files = embedded_files(html)
    assert "table5.html" in files, sorted(files)
    assert b"Table 5" in files["table5.html"][1] and b"<table" in files["table5.html"][1]
    assert "results/report/table5.html" in html
    import yaml

    assert yaml.safe_load((clean / "config.yaml").read_text())["report"]["show_faces"] is False
    images = {n: b for n, (m, b) in files.items()
              if m in ("image/png", "image/jpeg") and n != "logo.svg"}
    print(f"report: {len(files)} embedded files, images: {sorted(images)}")
    if not images:
        return
    import numpy as np
    from facenet_pytorch import MTCNN
    from PIL import Image

    mtcnn = MTCNN(keep_all=True, device="cpu")
    for name, data in images.items():
        img = Image.open(io.BytesIO(data)).convert("RGB")
        boxes, probs = mtcnn.detect(img)
        faces = [] if boxes is None else [p for p in probs if p is not None and p >= 0.9]
        assert not faces, f"{name}: {len(faces)} face(s) in the report with show_faces off"
        assert np.asarray(img).size
