"""Table 7 (strain + deep fusion) in the tiny clean run (tests/_tiny.py; slow): its rows,
provenance and its place in the report beside Table 5 (the fusion itself:
tests/unit/test_fusion.py)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import _tiny
from neopain.learn.fusion import FUSION_SCHEMA


# ---------------------------------------------------------------- the tiny workflow run
@pytest.fixture(scope="module")
def clean(tmp_path_factory, shared_data):
    return _tiny.clean_run(tmp_path_factory, shared_data)


@pytest.mark.slow
def test_tiny_run_has_table7_with_its_three_rows(clean):
    t7 = pq.read_table(clean / "results/evaluation/table7.parquet").to_pandas()
    assert t7[["backbone", "layer", "protocol"]].drop_duplicates().values.tolist() == \
        [["mobilenet_v2", "penultimate", "loso"]]
    # a feature set whose every configuration answers one class for every keyframe (a
    # constant predictor; issue 17) has no best, so no row: in this run, fused NB
    fm = pq.read_table(clean / "results/evaluation/fusion_metrics.parquet").to_pandas()
    const = fm[fm.level == "frame"].groupby("features")["constant"].all()
    rows = [f for f in ("deep", "strain", "fused") if not const[f]]
    assert t7["features"].tolist() == rows and {"deep", "strain"} <= set(rows)
    k = {"deep": 15, "strain": 5, "fused": 20}
    assert (t7["selector"] == "relieff").all() and t7["k"].tolist() == [k[f] for f in rows]
    assert np.isfinite(t7["frame_auc"]).all() and np.isfinite(t7["video_auc"]).all()
    pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]]
    for a, b in pairs:
        p = t7.set_index("features").loc[a, f"p_vs_{b}"]
        assert 0 <= p <= 1, (a, b, p)
    dl = pq.read_table(clean / "results/evaluation/table7_delong.parquet").to_pandas()
    assert len(dl) == 2 * len(pairs) and np.isfinite(dl["p"]).all()
    md = (clean / "results/evaluation/table7.md").read_text()
    assert md.startswith("# Table 7") and "| mobilenet_v2 | penultimate | loso | strain |" in md
    strain = pq.read_table(clean / "results/strain/_features.parquet").to_pandas()
    assert len(strain) == len(_tiny.TINY_VIDEOS) and (strain["reason"] == "").all()
    assert np.isfinite(strain.filter(like="_signal_mean")).all().all()
    scores = pq.read_table(clean / "results/fusion/mobilenet_v2/penultimate/loso/relieff.parquet")
    assert scores.schema.names == FUSION_SCHEMA.names
    from neopain.core.provenance import read_provenance

    prov = read_provenance(clean / "results/evaluation/table7.parquet")
    assert prov["rule"] == "evaluate_fusion" and "video:S106_004" in prov["sources"]
    sig = read_provenance(clean / "results/strain/S106_004.parquet")
    assert sig["rule"] == "strain" and sig["params"]["flow"]["winsize"] == 25


@pytest.mark.slow
def test_report_shows_table7_next_to_table5(clean):
    from test_provenance_run import embedded_files

    report = clean / "report_table7.html"
    _tiny.snakemake(clean, "--report", str(report))
    files = embedded_files(report.read_text())
    assert "table7.html" in files and "table5.html" in files, sorted(files)
    assert b"Table 7" in files["table7.html"][1] and b"<td class=\"t\">strain</td>" in \
        files["table7.html"][1]
