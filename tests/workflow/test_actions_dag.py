"""Facial actions through the DAG (slow): actions.enabled in a copy of the tiny clean run
(tests/_tiny.py) adds the actions tables to Tables 5 and 7; the descriptors themselves are
tested in tests/unit/test_actions.py."""

from __future__ import annotations

import numpy as np
import pytest

from neopain.features import actions as A


@pytest.mark.slow
def test_actions_tables_flow_through_select_classify_evaluate(tmp_path_factory, shared_data,
                                                              tmp_path, mesh_dir):
    """actions.enabled (+ intensity, then pose_regression) in a copy of the tiny clean run:
    only the actions jobs and their aggregations run; Table 5 gains actions/frame and
    actions/video rows (the pose-only actions/pose is scored too), Table 7 actions and
    deep+strain+actions; the tables have the deep table's schema plus pose, keyframe rows
    (frame) and one row per video (video, pose); pose_regression reruns only the actions
    fits."""
    import shutil

    import _tiny
    import pyarrow as pa
    import pyarrow.parquet as pq

    clean = _tiny.clean_run(tmp_path_factory, shared_data)
    work = tmp_path / "run"
    shutil.copytree(clean, work, symlinks=True)
    cfg = _tiny.variant_config(work, "actions", actions={"enabled": True,
                                                         "intensity": {"enabled": True}})
    planned = _tiny.snakemake(work, "--dry-run", configfile=cfg)
    counts = _tiny.job_counts(planned.stdout + planned.stderr)
    assert counts == {"actions": 4, "gather_features": 1, "gather_actions_video": 2,
                      "select": 3, "classify": 3, "evaluate": 1, "fusion": 1,
                      "actions_intensity": 1,
                      "evaluate_fusion": 1, "all": 1,
                      # the nested search takes the new tables, the report its new numbers
                      "nested": 1, "nested_summary": 1, "report_pages": 1}, counts
    _tiny.snakemake(work, configfile=cfg)
    t5 = pq.read_table(work / "results/evaluation/table5.parquet").to_pandas()
    assert {("actions", "frame"), ("actions", "video")} <= set(zip(t5["backbone"], t5["layer"]))
    # the pose-only control is scored like any table (with 2 subjects its 2 training videos
    # give a constant Naive Bayes, which Table 5 leaves out)
    metrics = pq.read_table(work / "results/evaluation/metrics.parquet").to_pandas()
    assert ("actions", "pose") in set(zip(metrics["backbone"], metrics["layer"]))
    deep = pq.read_table(work / "results/features/mobilenet_v2/penultimate/features.parquet")
    frame = pq.read_table(work / "results/features/actions/frame/features.parquet")
    video = pq.read_table(work / "results/features/actions/video/features.parquet")
    pose = pq.read_table(work / "results/features/actions/pose/features.parquet")
    for t, dim, npose in ((frame, len(A.FRAME_FEATURES), 3),
                          (video, 5 * len(A.FRAME_FEATURES), 12), (pose, 12, 0)):
        # the deep table's schema, plus the head pose the actions rows carry (not features)
        assert t.schema.names == deep.schema.names + (["pose"] if npose else [])
        assert t.schema.field("features").type == pa.list_(pa.float32(), dim)
        assert np.isfinite(np.asarray(t.column("features").to_pylist())).all()
        if npose:
            assert t.schema.field("pose").type == pa.list_(pa.float32(), npose)
    np.testing.assert_array_equal(np.asarray(pose.column("features").to_pylist()),
                                  np.asarray(video.column("pose").to_pylist()))
    # actions.pose_regression reruns the fits of the actions frame/video tables only (not the
    # pose table, not the deep table); their scores' provenance records it
    from neopain.core.provenance import read_provenance

    cfg2 = _tiny.variant_config(work, "actions_pose", actions={
        "enabled": True, "intensity": {"enabled": True}, "pose_regression": True})
    planned = _tiny.snakemake(work, "--dry-run", configfile=cfg2)
    counts = _tiny.job_counts(planned.stdout + planned.stderr)
    assert {k: counts.get(k) for k in ("select", "classify", "actions_intensity", "actions",
                                       "extract")} == {
        "select": 2, "classify": 2, "actions_intensity": 1, "actions": None,
        "extract": None}, counts
    _tiny.snakemake(work, "results/scores/actions/frame/loso/relieff.parquet",
                    configfile=cfg2)
    f = work / "results/scores/actions/frame/loso/relieff.parquet"
    assert read_provenance(f)["params"]["pose_regression"] is True
    f = next((work / "results/scores/mobilenet_v2/penultimate/loso").glob("*.parquet"))
    assert "pose_regression" not in read_provenance(f)["params"]
    # the out-of-fold intensity model scored every keyframe of the actions table
    inten = pq.read_table(work / "results/actions/intensity/loso.parquet").to_pandas()
    assert len(inten) == frame.num_rows and inten["intensity"].between(0, 1).all()
    assert "frame AUC" in (work / "results/actions/intensity/loso.md").read_text()
    keys = set(zip(deep.column("video_id").to_pylist(), deep.column("frame").to_pylist()))
    got = set(zip(frame.column("video_id").to_pylist(), frame.column("frame").to_pylist()))
    assert got <= keys and len(got) >= 0.9 * len(keys)
    assert sorted(video.column("video_id").to_pylist()) == sorted(v[0] for v in _tiny.TINY_VIDEOS)
    t7 = pq.read_table(work / "results/evaluation/table7.parquet").to_pandas()
    fm = pq.read_table(work / "results/evaluation/fusion_metrics.parquet").to_pandas()
    assert {"actions", "deep+strain+actions"} <= set(fm["features"])
    # Table 7 shows every feature set with a non-constant configuration (issue 17: a model
    # answering one class for every row is never chosen as best; with 2 tiny subjects the
    # fused Naive Bayes can be one)
    usable = set(fm.loc[~fm["constant"].astype(bool), "features"])
    assert "actions" in usable and usable <= set(t7["features"])
    readable = pq.read_table(work / f"results/actions/{_tiny.TINY_VIDEOS[0][0]}.parquet")
    assert {"yaw", "pitch", "roll", "pspi", "au4_brow_lower_r"} <= set(readable.column_names)
