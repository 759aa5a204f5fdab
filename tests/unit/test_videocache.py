"""The per-video cache of shard jobs (neopain.core.videocache, docs/scale.md).

A fake shard job (``sm``: params, output, config as a Snakemake script sees them) whose
per-video work writes a table derived from an input file: a shard that reruns with one
more video restores the others byte for byte and computes only the new one; anything
that would change a result (input bytes, a setting, the code) is a miss; a damaged entry
or an unusable cache folder never gives a wrong file or a failed job.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from neopain.core import shards, videocache


class _Bag(dict):
    """Attribute and item access, like Snakemake's Namedlist."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _job(tmp: Path, vids: list[str], scale: float = 2.0, cache: str | None = None):
    """A shard job over ``vids``: input ``in/{v}.txt``, output ``out/{v}.txt``."""
    params = _Bag(videos=[{"video_id": v, "path": str(tmp / "src" / f"{v}.bin")} for v in vids],
                  inputs=[str(tmp / "in" / f"{v}.txt") for v in vids],
                  scale=scale)
    output = _Bag(tables=[str(tmp / "out" / f"{v}.txt") for v in vids])
    config = {"shards": {"cache": str(tmp / "cache") if cache is None else cache}}
    return _Bag(params=params, output=output, config=config, rule="demo_s00")


def _inputs(tmp: Path, vids: list[str]) -> None:
    for d in ("in", "out", "src"):
        (tmp / d).mkdir(exist_ok=True)
    for v in vids:
        (tmp / "in" / f"{v}.txt").write_text(f"{len(v)}\n")
        (tmp / "src" / f"{v}.bin").write_bytes(v.encode())


def _run(sm, source: bool = False) -> list[str]:
    """Run the shard job as a rule script would; return the videos actually computed."""
    computed = []

    def one(i):
        vid = sm.params.videos[i]["video_id"]
        value = float(Path(sm.params.inputs[i]).read_text()) * sm.params.scale
        Path(sm.output.tables[i]).write_text(f"{vid} {value}\n")
        computed.append(vid)

    cache = videocache.cache_for(sm, "demo", ("tables",), inputs=("inputs",), source=source)
    shards.run_videos(sm, one, cache=cache)
    return computed


def _rerun(sm, **kw):
    """Snakemake removes a job's outputs before it reruns it."""
    for f in sm.output.tables:
        Path(f).unlink(missing_ok=True)
    return _run(sm, **kw)


def test_a_shard_that_gains_a_video_computes_only_that_video(tmp_path):
    _inputs(tmp_path, ["a", "bb", "ccc"])
    first = _job(tmp_path, ["a", "bb"])
    assert _run(first) == ["a", "bb"]
    kept = {f: Path(f).read_bytes() for f in first.output.tables}
    before = {f: os.stat(f).st_mtime_ns for f in first.output.tables}
    time.sleep(0.02)
    grown = _job(tmp_path, ["a", "bb", "ccc"])
    assert _rerun(grown) == ["ccc"]
    for f, data in kept.items():
        assert Path(f).read_bytes() == data
        # a fresh mtime: Snakemake sees the restored file as newer than the job's inputs
        assert os.stat(f).st_mtime_ns > before[f]
    assert Path(grown.output.tables[2]).read_text() == "ccc 6.0\n"
    # no extra disk: the entry and the output are one file (hard link)
    assert os.stat(grown.output.tables[0]).st_nlink == 2


def test_what_changes_a_result_is_a_miss(tmp_path, monkeypatch):
    _inputs(tmp_path, ["a", "bb"])
    assert _run(_job(tmp_path, ["a", "bb"])) == ["a", "bb"]
    # a setting
    assert _rerun(_job(tmp_path, ["a", "bb"], scale=3.0)) == ["a", "bb"]
    assert Path(tmp_path / "out" / "a.txt").read_text() == "a 3.0\n"
    # the bytes of one video's input
    (tmp_path / "in" / "bb.txt").write_text("7\n")
    assert _rerun(_job(tmp_path, ["a", "bb"], scale=3.0)) == ["bb"]
    assert Path(tmp_path / "out" / "bb.txt").read_text() == "bb 21.0\n"
    # the video's own source, where the stage reads it (track)
    assert _rerun(_job(tmp_path, ["a", "bb"], scale=3.0), source=True) == ["a", "bb"]
    (tmp_path / "src" / "a.bin").write_bytes(b"other")
    assert _rerun(_job(tmp_path, ["a", "bb"], scale=3.0), source=True) == ["a"]
    # the rule script (a job's snakemake.scriptdir)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "demo.py").write_text("VERSION = 1\n")
    with_script = _job(tmp_path, ["a", "bb"], scale=3.0)
    with_script["scriptdir"] = str(scripts)
    assert _rerun(with_script) == ["a", "bb"]
    assert _rerun(with_script) == []
    (scripts / "demo.py").write_text("VERSION = 2\n")
    videocache.code_digest.cache_clear()
    assert _rerun(with_script) == ["a", "bb"]
    # the code
    monkeypatch.setattr(videocache, "code_digest", lambda scripts=None: "another version")
    assert _rerun(_job(tmp_path, ["a", "bb"], scale=3.0)) == ["a", "bb"]


def test_a_changed_entry_is_recomputed_not_restored(tmp_path, caplog):
    _inputs(tmp_path, ["a", "bb"])
    sm = _job(tmp_path, ["a", "bb"])
    _run(sm)
    # the output (one inode with the entry) is edited in place, then the job reruns
    with open(sm.output.tables[0], "w") as fh:
        fh.write("tampered\n")
    with caplog.at_level(logging.WARNING):
        assert _rerun(sm) == ["a"]
    assert "changed since it was kept" in caplog.text
    assert Path(sm.output.tables[0]).read_text() == "a 2.0\n"
    assert _rerun(sm) == []   # the recomputed file was kept again


def test_an_unusable_cache_folder_never_fails_the_job(tmp_path, caplog):
    _inputs(tmp_path, ["a", "bb"])
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    sm = _job(tmp_path, ["a", "bb"], cache=str(blocker / "cache"))
    with caplog.at_level(logging.WARNING):
        assert _run(sm) == ["a", "bb"]
        assert _rerun(sm) == ["a", "bb"]
    assert "could not keep" in caplog.text
    assert [Path(f).read_text() for f in sm.output.tables] == ["a 2.0\n", "bb 4.0\n"]


def test_no_cache_folder_means_no_cache(tmp_path):
    _inputs(tmp_path, ["a"])
    sm = _job(tmp_path, ["a"], cache="")
    assert videocache.cache_for(sm, "demo", ("tables",)) is None
    assert _run(sm) == ["a"] and _rerun(sm) == ["a"]
    assert not (tmp_path / "cache").exists()


def test_a_restored_video_log_carries_the_log_of_the_job_that_computed_it(tmp_path):
    _inputs(tmp_path, ["a", "bb"])
    (tmp_path / "logs").mkdir()
    logs = [str(tmp_path / "logs" / f"{v}.log") for v in ("a", "bb")]
    sm = _job(tmp_path, ["a", "bb"])

    def run():
        def one(i):
            logging.getLogger("demo").info("computed %s the long way",
                                           sm.params.videos[i]["video_id"])
            Path(sm.output.tables[i]).write_text("x\n")
        logging.getLogger().setLevel(logging.INFO)
        shards.run_videos(sm, one, logs=logs,
                          cache=videocache.cache_for(sm, "demo", ("tables",),
                                                     inputs=("inputs",)))

    run()
    for f in sm.output.tables:
        Path(f).unlink()
    run()
    text = Path(logs[1]).read_text()
    assert "restored from cache entry" in text
    assert "computed bb the long way" in text   # the first job's log, kept with the entry


def test_a_video_key_does_not_depend_on_its_shard_mates(tmp_path):
    """The stage names its per-video lists (``inputs``), so the other videos' paths never
    enter a key; left out, they would, and a shard that gains a video would miss."""
    _inputs(tmp_path, ["a", "bb", "ccc"])

    def key(vids, **kw):
        return videocache.cache_for(_job(tmp_path, vids), "demo", ("tables",), **kw).key(0)

    assert key(["a", "bb"], inputs=("inputs",)) == key(["a", "bb", "ccc"], inputs=("inputs",))
    assert key(["a", "bb"]) != key(["a", "bb", "ccc"])


def test_prune_removes_the_entries_no_result_uses(tmp_path, capsys):
    from neopain.cli import main

    _inputs(tmp_path, ["a", "bb"])
    sm = _job(tmp_path, ["a", "bb"])
    _run(sm)
    # a nested stage name (extract/<backbone>) with its own result, in use
    other = _job(tmp_path, ["a"])
    other["output"] = _Bag(tables=[str(tmp_path / "out" / "a.features.txt")])
    Path(other.output.tables[0]).write_text("features\n")
    videocache.cache_for(other, "extract/net", ("tables",), inputs=("inputs",)).keep(0)
    # a half-written entry of a job killed while keeping
    (tmp_path / "cache" / "demo" / "ab" / ".abc.tmp1").mkdir(parents=True)
    # new settings: Snakemake deletes the old results, the job computes and keeps anew
    assert _rerun(_job(tmp_path, ["a", "bb"], scale=5.0)) == ["a", "bb"]
    cache = tmp_path / "cache"
    assert len(list(cache.rglob("entry.json"))) == 5
    assert main(["cache", "prune", str(cache), "--dry-run"]) == 0
    assert "3 unused entries" in capsys.readouterr().out   # 2 old settings + half-written
    assert len(list(cache.rglob("entry.json"))) == 5
    assert main(["cache", "prune", str(cache)]) == 0
    # the entries behind today's results stay (both stages), the rest is gone
    assert len(list(cache.rglob("entry.json"))) == 3
    assert not (cache / "demo" / "ab" / ".abc.tmp1").exists()
    assert _rerun(_job(tmp_path, ["a", "bb"], scale=5.0)) == []
    assert _rerun(_job(tmp_path, ["a", "bb"], scale=2.0)) == ["a", "bb"]
