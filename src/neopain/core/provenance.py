"""Provenance and atomic output for every table the pipeline writes.

Every Parquet file written through :func:`write_table` carries, in its schema
metadata under the key ``neopain.provenance``, a JSON record with

* ``code_version``: the package version plus the git commit of the checkout
  (``+dirty`` when the work tree has uncommitted changes), when available;
* ``config_hash``: sha256 of the canonical JSON of the run's configuration;
* ``rule``: the Snakemake rule (or the function) that produced the table;
* ``sources``: sha256 of the raw inputs the table derives from (video files,
  frame folders, weight files), carried forward from upstream tables so that a
  video is hashed once, by the first stage that reads it;
* ``packages``: versions of the packages that computed it;
* ``params``: the parameters of the stage.

No timestamps or host names are recorded, so identical inputs, config and seed
give byte-identical tables.  Writes are atomic: data goes to a temporary file
in the destination folder, is flushed and fsync'ed, then renamed over the
target, so a crash never leaves a truncated table behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from neopain import __version__

META_KEY = b"neopain.provenance"
PACKAGES = (
    "numpy", "pandas", "pyarrow", "scikit-learn", "scipy", "torch", "torchvision",
    "opencv-python-headless", "av", "facenet-pytorch", "snakemake",
)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def source_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder: over the sorted ``(relative posix name, file
    sha256)`` of every regular file below it (hidden ones included), each fed as
    ``"<name>\\0<hex>\\n"``, so renaming, adding, removing or changing a file changes it.
    The ``video:<id>`` source of the tables' provenance, the run record's input hashes and
    the per-video cache's keys (:mod:`neopain.core.videocache`) all use it."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    entries = sorted((p.relative_to(path).as_posix(), sha256_file(p))
                     for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for name, digest in entries:
        h.update(f"{name}\0{digest}\n".encode("utf-8"))
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version, plus git commit (and ``+dirty``) of the source checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return f"{__version__}+g{commit[:12]}" + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def make_provenance(
    rule: str,
    config: Mapping[str, Any] | None = None,
    sources: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    upstream: list[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build a provenance record; ``upstream`` records' sources are merged in."""
    merged: dict[str, str] = {}
    for rec in upstream or []:
        merged.update(rec.get("sources", {}))
    merged.update(sources or {})
    return {
        "code_version": code_version(),
        "config_hash": config_hash(config or {}),
        "rule": rule,
        "sources": dict(sorted(merged.items())),
        "packages": package_versions(),
        "params": dict(params or {}),
    }


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    if META_KEY not in meta:
        raise ValueError(f"{path}: no neopain provenance in the Parquet schema metadata")
    return json.loads(meta[META_KEY])


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_table(
    table: pa.Table,
    path: str | os.PathLike,
    provenance: Mapping[str, Any],
    row_group_size: int | None = None,
) -> None:
    """Atomically write ``table`` to Parquet with provenance in its schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = canonical_json(provenance).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj: Any, path: str | os.PathLike) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)
