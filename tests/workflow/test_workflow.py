"""The whole DAG on real data from ../shared/data: raw frames/videos -> Table 5.

Runs Snakemake once (module fixture) on 8 CK+ sequences of 4 subjects given as frame
folders plus single_face.mp4, no_face.mp4 and a corrupt video file (made here), then checks
the tables' contents, that a second run has nothing to do, and that the workflow lints clean.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from _paths import REPO
from _tiny import job_counts  # noqa: E402  (tests/ helper)
from neopain.core.provenance import read_provenance

pytestmark = pytest.mark.slow
LAYERS = ["penultimate", "conv_last"]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"),
           "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("wf")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    # the CI sheet plus a corrupt "video": track.on_error=record must flag it, not stop
    corrupt = work / "corrupt.mp4"
    corrupt.write_bytes(b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 40)
    sheet = work / "samples.tsv"
    sheet.write_text((REPO / "tests" / "data" / "ci_samples.tsv").read_text()
                     + f"corrupt\tbroken\t{corrupt}\tno_pain\n")
    cfg["samples"] = str(sheet)
    cfg["data_root"] = str(shared_data)
    cfg["extract"]["backbones"] = {"mobilenet_v2": {"layers": LAYERS}}
    cfg["extract"]["weights_dir"] = str(work / "weights")
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work)
    return work, cfg, proc


def test_results_table_has_finite_aucs(run):
    work, cfg, _ = run
    metrics = pq.read_table(work / "results/evaluation/metrics.parquet").to_pandas()
    n_cfg = len(LAYERS) * len(cfg["protocols"]) * len(cfg["select"]["selectors"]) \
        * len(cfg["select"]["k"]) * len(cfg["classify"]["classifiers"])
    assert len(metrics) == 2 * n_cfg            # frame and video level
    loso = metrics[metrics.protocol == "loso"]
    assert np.isfinite(loso["auc"]).all() and loso["auc"].between(0, 1).all()
    assert loso["accuracy"].between(0, 1).all()
    frame = loso[loso.level == "frame"]
    video = loso[loso.level == "video"]
    assert (video["n"] == 9).all(), "9 videos with a face (no_face.mp4 has none)"
    assert (frame["n_subjects"] == 5).all()
    t5 = pq.read_table(work / "results/evaluation/table5.parquet").to_pandas()
    assert len(t5) == len(LAYERS) * len(cfg["protocols"])
    assert set(t5["layer"]) == set(LAYERS)
    md = (work / "results/evaluation/table5.md").read_text()
    assert "Table 5" in md and "| mobilenet_v2 | penultimate | loso |" in md
    per_subj = pq.read_table(work / "results/evaluation/per_subject.parquet").to_pandas()
    loso_subj = per_subj[per_subj.protocol == "loso"]
    assert loso_subj.groupby("layer")["subject_id"].nunique().eq(5).all()
    assert loso_subj["frame_accuracy"].between(0, 1).all()


def test_summary_puts_the_nested_estimate_beside_optimistic_and_chance(run):
    work, cfg, _ = run
    summ = pq.read_table(work / "results/evaluation/summary.parquet").to_pandas()
    assert set(summ["protocol"]) == set(cfg["protocols"])
    loso = summ[summ.protocol == "loso"].set_index("estimate")
    assert {"nested", "best_of_n", "median", "permuted", "paper_best_of_n", "paper_median",
            "chance"} <= set(loso.index)
    assert loso.loc["nested", "n_videos"] == 9 and loso.loc["nested", "n_subjects"] == 5
    assert loso.loc["best_of_n", "optimistic"] and not loso.loc["nested", "optimistic"]
    assert loso.loc["best_of_n", "auc"] >= loso.loc["median", "auc"]
    assert loso.loc["chance", "auc"] == 0.5
    choices = pq.read_table(work / "results/nested/loso/choices.parquet").to_pandas()
    assert len(choices) == 5  # one choice per outer fold (subject)
    for fig in ("roc_table5", "roc_table6", "roc_summary"):  # one ROC figure per table
        assert (work / f"results/evaluation/{fig}.png").read_bytes()[:4] == b"\x89PNG", fig
    md = (work / "results/evaluation/summary.md").read_text()
    assert "OPTIMISTIC" in md and "| nested |" in md and "| chance |" in md
    # the paper path is untouched by the new default (subject baseline: none)
    assert read_provenance(work / "results/scores/mobilenet_v2/penultimate/loso/relieff"
                           ".parquet")["params"]["baseline"] == "none"


def test_no_face_video_is_recorded_and_skipped(run):
    work, _, _ = run
    qc = json.loads((work / "results/tracks/no_face.qc.json").read_text())
    assert qc["status"] == "no_face" and qc["n_ok"] == 0 and qc["n_frames"] == 95
    feats = pq.read_table(work / "results/features/mobilenet_v2/penultimate/features.parquet")
    vids = set(feats.column("video_id").to_pylist())
    assert "no_face" not in vids and "single_face" in vids and len(vids) == 9
    summary = pq.read_table(work / "results/qc/tracking.parquet").to_pandas()
    assert summary.set_index("video_id").loc["single_face", "success_rate"] >= 0.95


def test_corrupt_video_is_recorded_and_the_rest_completes(run):
    work, _, _ = run
    qc = json.loads((work / "results/tracks/corrupt.qc.json").read_text())
    assert qc["status"] == "error" and "corrupt.mp4" in qc["error"] and qc["n_frames"] == 0
    assert pq.read_table(work / "results/tracks/corrupt.parquet").num_rows == 0
    log = (work / "logs/track/corrupt.log").read_text()
    assert "corrupt.mp4" in log and "ERROR" in log
    summary = pq.read_table(work / "results/qc/tracking.parquet").to_pandas().set_index("video_id")
    assert summary.loc["corrupt", "status"] == "error"
    assert summary.loc["no_face", "status"] == "no_face"
    feats = pq.read_table(work / "results/features/mobilenet_v2/penultimate/features.parquet")
    assert "corrupt" not in set(feats.column("video_id").to_pylist())


def test_qc_montages_for_every_video(run):
    import cv2

    work, cfg, _ = run
    summary = pq.read_table(work / "results/qc/tracking.parquet").to_pandas()
    assert len(summary) == 11
    for vid in summary["video_id"]:
        img = cv2.imread(str(work / f"results/qc/{vid}.montage.png"))
        assert img is not None and img.shape[1] == 640, vid
    assert summary["montage"].notna().all()


def test_on_error_fail_fails_only_that_job(run, tmp_path):
    """track.on_error=fail: the corrupt video's shard job fails, --keep-going runs the other
    shards (a shard that fails loses its other videos' outputs: docs/scale.md)."""
    from neopain.core.shards import shard_of

    work, cfg, _ = run
    count = cfg["shards"]["count"]
    assert shard_of("corrupt", count) != shard_of("S055_003", count)
    other = tmp_path / "wf_fail"
    other.mkdir()
    cfg2 = {**cfg, "track": {**cfg["track"], "on_error": "fail"}}
    (other / "config.yaml").write_text(yaml.safe_dump(cfg2))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(other), "--configfile", str(other / "config.yaml"),
           "--cores", "2", "--keep-going", "results/tracks/corrupt.qc.json",
           "results/tracks/S055_003.qc.json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert (other / "results/tracks/S055_003.qc.json").is_file()
    assert not (other / "results/tracks/corrupt.qc.json").exists()
    assert "corrupt.mp4" in (other / "logs/track/corrupt.log").read_text()


def test_feature_table_schema_pandas_duckdb_and_provenance(run):
    import duckdb

    work, cfg, _ = run
    path = work / "results/features/mobilenet_v2/conv_last/features.parquet"
    schema = pq.read_schema(path)
    assert schema.names == ["video_id", "subject_id", "label", "y", "frame", "timestamp",
                            "features"]
    assert str(schema.field("features").type) == "fixed_size_list<element: float>[62720]"
    df = pq.read_table(path).to_pandas()
    assert len(df) > 20 and df["subject_id"].nunique() == 5
    assert set(df["label"]) == {"pain", "no_pain"} and set(df["y"]) == {0, 1}
    con = duckdb.connect()
    n, n_videos, dim = con.execute(
        f"select count(*), count(distinct video_id), max(len(features)) from '{path}'"
    ).fetchone()
    assert (n, dim) == (len(df), 62720) and n_videos == 9
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 9                     # one row group per video
    prov = read_provenance(path)
    assert prov["rule"] == "gather_features"
    assert prov["sources"]["weights:mobilenet_v2-b0353104.pth"].startswith("b0353104")
    assert "video:single_face" in prov["sources"] and "samples" in prov["sources"]
    assert "torch" in prov["packages"] and prov["code_version"]


def test_cnn_rules_keep_freed_memory_and_others_do_not(run):
    """extract runs with glibc's mmap off (runtime.run(cnn=True)); a table rule does not."""
    work, _, _ = run
    logs = sorted((work / "logs/extract").rglob("*.log"))
    assert logs
    for log in logs:
        assert "glibc malloc: {'mmap_max': 0, 'trim_threshold': 2147483647}" in \
            log.read_text(), log
    other = sorted((work / "logs").glob("gather_features/**/*.log"))
    assert other and all("glibc malloc" not in p.read_text() for p in other)


def test_split_is_subject_disjoint(run):
    work, _, _ = run
    split = pq.read_table(work / "results/splits/holdout.parquet").to_pandas()
    train = set(split[split.role == "train"].subject_id)
    test = set(split[split.role == "test"].subject_id)
    assert train and test and not (train & test)
    scores = pq.read_table(work / "results/scores/mobilenet_v2/penultimate/holdout/su.parquet")
    assert set(scores.column("subject_id").to_pylist()) <= test


def test_second_run_has_nothing_to_do(run):
    work, _, _ = run
    proc = snakemake(work, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_lint_is_clean(run):
    work, _, _ = run
    proc = snakemake(work, "--lint", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out, out[-3000:]


def test_adding_a_video_reruns_only_that_video_and_aggregations(run):
    work, cfg, _ = run
    sheet = Path(cfg["samples"]).read_text()
    grown = work / "grown_samples.tsv"
    grown.write_text(sheet + "S130_012\tS130\tckplus_sequences/disgust/S130_012\tpain\n")
    proc = snakemake(work, "--dry-run", "--config", f"samples={grown}")
    counts = job_counts(proc.stdout + proc.stderr)
    n_agg = len(LAYERS) * len(cfg["protocols"]) * len(cfg["select"]["selectors"])
    assert counts == {
        # shard jobs (docs/scale.md): S130_012's shard (with S111_006 and corrupt) is redone
        "track": 1, "extract": 1, "qc_summary": 1, "qc_montage": 1,
        "gather_features": len(LAYERS), "split": len(cfg["protocols"]),
        "select": n_agg, "classify": n_agg, "evaluate": 1, "all": 1, "report_pages": 1,
        # strain on by default: the video's strain signal, the strain table of all
        # videos, every fusion configuration (its features table changed) and Table 7
        "strain": 1, "gather_strain": 1, "fusion": n_agg, "evaluate_fusion": 1,
        # nested model selection on by default: one search per protocol + the summary
        "nested": len(cfg["protocols"]), "nested_summary": 1,
    }, counts
