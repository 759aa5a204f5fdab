"""Incremental recomputation, crash safety, determinism and offline runs, on the tiny config.

One clean run of the tiny DAG (tests/_tiny.py: 4 CK+ sequences of 2 subjects, one
backbone/layer/protocol/selector, k=[5], nb) is shared with tests/workflow/test_provenance_run.py.
Against it:

* incremental: from Snakemake's dry-run job list, a no-change rerun schedules nothing;
  adding a video schedules exactly its shard's jobs (per-video work runs in shards of
  videos, docs/scale.md) plus the aggregations;
  changing a selector parameter schedules only select and what follows;
* crash safety: a second run is SIGKILLed (the whole process group, as a node failure
  would) in the middle of its per-video jobs, then rerun (`--unlock`, then the workflow
  profile's `--rerun-incomplete`); its tables equal the uninterrupted run's;
* determinism + offline: a third clean run inside a network namespace with no network
  (`unshare -n`) gives tables byte-identical to the first.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import _tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean(tmp_path_factory, shared_data):
    return _tiny.clean_run(tmp_path_factory, shared_data)


def planned_jobs(output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of each job in a dry-run listing."""
    jobs: list[list[str]] = []
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            jobs.append([m.group(1), ""])
        elif jobs and line.strip().startswith("wildcards:"):
            jobs[-1][1] = line.strip().removeprefix("wildcards:").strip()
    return [tuple(j) for j in jobs]


def test_no_change_rerun_schedules_nothing(clean):
    proc = _tiny.snakemake(clean, "--dry-run")
    out = proc.stdout + proc.stderr
    assert "Nothing to be done" in out and _tiny.job_counts(out) == {}, out[-2000:]


def all_jobs(work: Path, *args: str, configfile: Path | None = None) -> list[tuple[str, str]]:
    """Every job of the DAG (forced dry run), as (rule, wildcards)."""
    proc = _tiny.snakemake(work, "--dry-run", "--forceall", *args, configfile=configfile)
    return sorted(planned_jobs(proc.stdout + proc.stderr))


def downstream_rules(work: Path, rule: str) -> set[str]:
    """``rule`` and every rule that depends on it, from Snakemake's rule graph."""
    dot = _tiny.snakemake(work, "--rulegraph").stdout
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, flags=re.M))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)
    todo, seen = [rule], {rule}
    while todo:
        cur = todo.pop()
        for a, b in edges:
            if names[a] == cur and names[b] not in seen:
                seen.add(names[b])
                todo.append(names[b])
    return seen


def test_adding_a_video_schedules_exactly_its_shard_and_the_aggregations(clean):
    """Per-video work runs in shards (docs/scale.md): the new video's shard is redone (its
    other videos too: at most one batch), no other shard, then the aggregations."""
    from neopain.core.shards import assign

    _tiny.write_sheet(clean / "grown.tsv", [*_tiny.TINY_VIDEOS, _tiny.EXTRA_VIDEO])
    grown = "grown.tsv"
    proc = _tiny.snakemake(clean, "--dry-run", "--config", f"samples={grown}")
    out = proc.stdout + proc.stderr
    planned = sorted(planned_jobs(out))
    new = _tiny.EXTRA_VIDEO[0]
    count = yaml.safe_load((clean / "config.yaml").read_text())["shards"]["count"]
    shards = assign([v[0] for v in (*_tiny.TINY_VIDEOS, _tiny.EXTRA_VIDEO)], count)
    shard = next(name for name, vids in shards.items() if new in vids)
    assert len(shards) > 1 and len(shards[shard]) > 1, shards   # a real batch, not alone
    # expected: every job of the grown DAG except the shard jobs of the other shards
    expected = sorted(j for j in all_jobs(clean, "--config", f"samples={grown}")
                      if not _tiny.shard_stage(j[0]) or _tiny.shard_stage(j[0])[1] == shard)
    assert planned == expected, (planned, expected)
    by_shard = _tiny.job_counts(out, by_shard=True)
    shard_jobs = {r for r in by_shard if _tiny.shard_stage(r)}
    assert {_tiny.shard_stage(r) for r in shard_jobs} == {
        (stage, shard) for stage in _tiny.SHARD_STAGES}, by_shard
    assert {"gather_features", "split", "select", "classify", "evaluate",
            "qc_summary"} <= set(by_shard), by_shard
    print(f"adding {new} schedules shard {shard} ({', '.join(shards[shard])}) "
          f"of {len(shards)} and the aggregations: {by_shard}")


def test_adding_a_video_computes_only_that_video_of_its_shard(clean, tmp_path):
    """The incremental run itself: the new video's shard jobs rerun, but its shard mates'
    per-video files come back from the cache (shards.cache, docs/scale.md) byte for byte;
    only the new video is tracked, featurised and measured, and the run leaves nothing to do."""
    from neopain.core.shards import assign

    work = tmp_path / "grown"
    shutil.copytree(clean, work, symlinks=True)
    _tiny.write_sheet(work / "grown.tsv", [*_tiny.TINY_VIDEOS, _tiny.EXTRA_VIDEO])
    count = yaml.safe_load((work / "config.yaml").read_text())["shards"]["count"]
    shards = assign([v[0] for v in (*_tiny.TINY_VIDEOS, _tiny.EXTRA_VIDEO)], count)
    shard = next(name for name, vids in shards.items() if _tiny.EXTRA_VIDEO[0] in vids)
    mates = [v for v in shards[shard] if v != _tiny.EXTRA_VIDEO[0]]
    per_video = [f"results/{d}/{v}.parquet" for v in mates
                 for d in ("tracks", "crops", "keyframes", "strain",
                           "features/mobilenet_v2/_per_video")] + \
                [f"results/qc/{v}.montage.png" for v in mates]
    _tiny.snakemake(work, "--config", "samples=grown.tsv")
    for f in per_video:
        assert (work / f).read_bytes() == (clean / f).read_bytes(), f
    logs = [f"logs/shards/track_{shard}.log", f"logs/shards/strain_{shard}.log",
            f"logs/shards/qc_montage_{shard}.log",
            f"logs/extract/mobilenet_v2/_shard_{shard}.log"]
    for log in logs:
        text = (work / log).read_text()
        assert f"{len(mates)} video(s) restored, 1 computed" in text, (log, text[-2000:])
    assert "restored from cache entry" in (work / f"logs/track/{mates[0]}.log").read_text()
    assert _tiny.dry_run_jobs(work, "--config", "samples=grown.tsv") == {}


def test_changing_a_selector_parameter_reruns_only_selection_and_downstream(clean):
    cfg = _tiny.variant_config(
        clean, "selector", select={"k": [5], "selectors": {"relieff": {"n_neighbors": 5}}})
    proc = _tiny.snakemake(clean, "--dry-run", configfile=cfg)
    out = proc.stdout + proc.stderr
    assert "Params have changed since last execution" in out, out[-3000:]
    planned = sorted(planned_jobs(out))
    down = downstream_rules(clean, "select")
    assert {"select", "classify", "evaluate", "all"} <= down
    assert not down & {"gather_features", "split"}
    assert not {r for r in down if _tiny.shard_stage(r)}
    expected = sorted(j for j in all_jobs(clean, configfile=cfg) if j[0] in down)
    assert planned == expected, (planned, expected)
    assert _tiny.job_counts(out)["select"] == 1
    print("changing a selector parameter schedules:", _tiny.job_counts(out))


def _per_video_done(work: Path) -> tuple[int, int, int]:
    """(crops written, per-video feature tables written, track shard jobs finished).

    A shard's qc_montage, strain and extract jobs start only after Snakemake has registered
    its track job as finished, so a shard with any of their outputs on disk has a track job
    that a rerun must not redo.
    """
    from neopain.core.shards import assign

    crops = len(list((work / "results" / "crops").glob("*.parquet")))
    feats = len(list((work / "results" / "features").glob("*/_per_video/*.parquet")))
    count = yaml.safe_load((work / "config.yaml").read_text())["shards"]["count"]
    after_track = [*(work / "results" / "qc").glob("*.montage.png"),
                   *(work / "results" / "strain").glob("*.parquet"),
                   *(work / "results" / "features").glob("*/_per_video/*.parquet")]
    done = {p.name.split(".")[0] for p in after_track}
    shards = assign([v[0] for v in _tiny.TINY_VIDEOS], count)
    tracked = sum(bool(done & set(vids)) for vids in shards.values())
    return crops, feats, tracked


def test_sigkill_mid_run_then_rerun_gives_identical_tables(clean, tmp_path, shared_data):
    from neopain.core.shards import assign

    work = tmp_path / "crash"
    work.mkdir()
    _tiny.tiny_config(work, shared_data)
    log = open(work / "killed_run.log", "w")
    proc = subprocess.Popen(_tiny.snakemake_cmd(work), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    n_videos = len(_tiny.TINY_VIDEOS)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            crops, feats, _ = _per_video_done(work)
            # mid per-video work: some videos tracked, not every video extracted yet
            if crops >= 1 and feats < n_videos:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)       # the workflow and every running job
        proc.wait(timeout=60)
    finally:
        log.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = _per_video_done(work)
    assert not (work / "results" / "evaluation").exists()
    incomplete = list((work / ".snakemake" / "incomplete").rglob("*"))
    print(f"killed with (crops, per-video features, track shards done) = {killed_at}; "
          f"{sum(p.is_file() for p in incomplete)} outputs marked incomplete")
    _tiny.snakemake(work, "--unlock")
    rerun = _tiny.snakemake(work, "--rerun-incomplete")
    out = rerun.stdout + rerun.stderr
    counts = _tiny.job_counts(out)
    # the rerun did not redo the track shard jobs that had finished before the kill
    n_shards = len(assign([v[0] for v in _tiny.TINY_VIDEOS],
                          yaml.safe_load((work / "config.yaml").read_text())["shards"]["count"]))
    assert counts.get("track", 0) <= n_shards - killed_at[2], counts
    print(f"rerun after the kill: {counts}")
    content, raw = _tiny.compare_runs(clean, work)
    assert content == [], f"tables differ from the uninterrupted run: {content}"
    assert raw == [], f"tables not byte-identical to the uninterrupted run: {raw}"
    assert _tiny.dry_run_jobs(work) == {}


def test_clean_run_offline_is_deterministic(clean, tmp_path, shared_data):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) not available")
    probe = subprocess.run(
        [unshare, "-n", "--", "python3", "-c",
         "import socket\ntry:\n socket.create_connection(('pypi.org', 443), timeout=3)\n"
         " print('online')\nexcept OSError as e:\n print('offline', e)"],
        capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    assert probe.stdout.startswith("offline"), probe.stdout
    work = tmp_path / "offline"
    work.mkdir()
    _tiny.tiny_config(work, shared_data)
    _tiny.snakemake(work, prefix=[unshare, "-n", "--"])
    content, raw = _tiny.compare_runs(clean, work)
    assert content == [] and raw == [], (content, raw)
    assert len(_tiny.result_tables(work)) >= 20
