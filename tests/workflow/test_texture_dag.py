"""Texture (LBP/LTP) tables through the DAG (slow), in a copy of the tiny clean run
(tests/_tiny.py); the descriptors themselves: tests/unit/test_texture.py."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import _tiny


# ---------------------------------------------------------------- the workflow path
@pytest.mark.slow
def test_texture_tables_flow_through_select_classify_evaluate(tmp_path_factory, shared_data,
                                                              tmp_path):
    """Texture on (both methods) in a copy of the tiny clean run: `snakemake` runs only
    the texture jobs and their aggregations (rule all lists every ROC figure, so the new
    feature tables' figures make evaluate rerun); Table 5 gets lbp/grid and ltp/grid rows;
    the tables have the deep table's schema and rows."""
    clean = _tiny.clean_run(tmp_path_factory, shared_data)
    work = tmp_path / "run"
    shutil.copytree(clean, work, symlinks=True)
    cfg = _tiny.variant_config(work, "texture", texture={"lbp": {"enabled": True},
                                                         "ltp": {"enabled": True}})
    target = "results/evaluation/table5.md"
    planned = _tiny.snakemake(work, "--dry-run", configfile=cfg)
    counts = _tiny.job_counts(planned.stdout + planned.stderr)
    assert counts == {"texture": 8, "gather_features": 2, "select": 2, "classify": 2,
                      "evaluate": 1, "all": 1,
                      # the nested search takes the new tables, the report its new numbers
                      "nested": 1, "nested_summary": 1, "report_pages": 1}, counts
    _tiny.snakemake(work, configfile=cfg)
    t5 = pq.read_table(work / "results/evaluation/table5.parquet").to_pandas()
    assert {("lbp", "grid"), ("ltp", "grid"), ("mobilenet_v2", "penultimate")} == \
        set(zip(t5["backbone"], t5["layer"]))
    assert np.isfinite(t5["frame_accuracy"]).all()
    deep = pq.read_table(work / "results/features/mobilenet_v2/penultimate/features.parquet")
    for method, dim in (("lbp", 490), ("ltp", 980)):
        path = work / f"results/features/{method}/grid/features.parquet"
        t = pq.read_table(path)
        assert t.schema.names == deep.schema.names
        assert t.schema.field("features").type == pa.list_(pa.float32(), dim)
        assert t.schema.metadata[b"neopain.backbone"] == method.encode()
        assert t.select(["video_id", "frame", "y"]).equals(deep.select(["video_id", "frame",
                                                                        "y"]))
    assert "| lbp | grid | loso |" in (work / target).read_text()
