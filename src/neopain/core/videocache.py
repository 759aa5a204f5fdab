"""Per-video results kept across shard jobs, keyed by everything that makes them.

Snakemake reruns a whole shard job when one video joins the shard (its membership
changed) and removes the job's outputs first, so without help every other video of the
shard would be tracked, cropped and featurised again.  A shard stage that is given a
:class:`VideoCache` instead restores a video's files when an entry exists under the
video's **key**: sha256 of

* the stage, the video's id and path;
* the bytes of the video's inputs (the source video or frame folder for ``track``, the
  upstream per-video tables for the other stages) and any extra files the stage names
  (a backbone's weights file);
* the stage's parameters (the rule's params, less the per-video lists);
* the code: every source file of the ``neopain`` package and of the rule scripts, the
  package versions that provenance records, and the Python version;
* whether the machine has an NVIDIA GPU for ``device: auto`` (:func:`accelerator`).

So an entry is restored only where recomputing would run the same code on the same bytes
with the same settings; given determinism (same inputs + config + seed give identical
tables) the restored files are the files recomputation would write, provenance included.
Anything else is a miss and is computed.  An entry's files are hard links (no extra disk;
a copy where the file system has none) and are checked against their recorded sha256
before use: an entry whose files were changed is ignored and recomputed.  Entries are
written complete or not at all (``entry.json`` last, in a folder renamed into place).

A cache that cannot be read or written never fails a job: the video is computed, and the
log says why.  The cache lives at ``shards.cache`` (default ``results/.cache``); deleting
it costs only recomputation.  See docs/scale.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

from neopain.core.provenance import package_versions, source_sha256

log = logging.getLogger(__name__)

ENTRY = "entry.json"
LOG = "log.txt"


@lru_cache(maxsize=4)
def code_digest(scripts: str | None = None) -> str:
    """sha256 of the ``neopain`` package's source files and of the rule scripts' folder
    (``scripts``: the job's ``snakemake.scriptdir``), the recorded package versions and
    the Python version: any edit to the code changes every key."""
    h = hashlib.sha256()
    for root in [Path(__file__).resolve().parents[1], *([Path(scripts)] if scripts else [])]:
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    h.update(json.dumps(package_versions(), sort_keys=True).encode())
    h.update(platform.python_version().encode())
    return h.hexdigest()


def accelerator() -> dict[str, Any]:
    """What ``device: auto`` would pick from, without importing torch: an NVIDIA device
    node and CUDA_VISIBLE_DEVICES (a GPU node and a CPU node never share entries)."""
    return {"nvidia": os.path.exists("/dev/nvidiactl"),
            "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}


class VideoCache:
    """Restore or keep one shard stage's per-video files (see the module docstring).

    ``stage``: the stage's name in the cache (``track``, ``extract/mobilenet_v2`` ...).
    ``outputs``: the names of the job's per-video output lists (``sm.output[name][i]``).
    ``inputs``: the names of per-video params lists whose files' bytes enter the key
    (``sm.params[name][i]``); ``source=True`` adds the video's own source (its ``path``).
    ``extra``: digests every video's key depends on (a backbone's weights file).
    """

    def __init__(self, sm: Any, root: str | os.PathLike, stage: str,
                 outputs: Sequence[str], inputs: Sequence[str] = (), source: bool = False,
                 extra: Mapping[str, str] | None = None):
        self.sm, self.root, self.stage = sm, Path(root), stage
        self.outputs, self.inputs, self.source = list(outputs), list(inputs), source
        # every per-video params list must be named in ``inputs``: the other videos'
        # paths are not settings (a shard that gains a video would miss every entry)
        self.settings = {k: v for k, v in sm.params.items()
                         if k not in {"videos", *self.inputs}}
        self.extra = dict(extra or {})
        self.hits = 0   # videos restored
        self._keys: dict[int, str] = {}

    def key(self, i: int) -> str:
        if i not in self._keys:
            self._keys[i] = self._key(i)
        return self._keys[i]

    def _key(self, i: int) -> str:
        video = dict(self.sm.params.videos[i])
        material = {
            "stage": self.stage, "video": video, "settings": self.settings,
            "inputs": {name: source_sha256(self.sm.params[name][i]) for name in self.inputs},
            "source": source_sha256(video["path"]) if self.source else None,
            "extra": self.extra, "accelerator": accelerator(),
            "code": code_digest(getattr(self.sm, "scriptdir", None)),
        }
        blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.root / self.stage / key[:2] / key

    def _targets(self, i: int) -> dict[str, str]:
        return {name: str(self.sm.output[name][i]) for name in self.outputs}

    def restore(self, i: int) -> bool:
        """Put video ``i``'s cached files in place; False (nothing written) on a miss."""
        try:
            key = self.key(i)
            entry = self._entry(key)
            meta_path = entry / ENTRY
            if not meta_path.is_file():
                return False
            meta = json.loads(meta_path.read_text())
            files = meta["files"]
            for name in self.outputs:
                if source_sha256(entry / files[name]["file"]) != files[name]["sha256"]:
                    log.warning("cache entry %s: %s changed since it was kept; recomputing",
                                entry, files[name]["file"])
                    return False
            for name, target in self._targets(i).items():
                _place(entry / files[name]["file"], Path(target))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cache not used for %s: %s", self.sm.params.videos[i]["video_id"], exc)
            return False
        log.info("restored from cache entry %s (same inputs, settings and code)", key)
        if (entry / LOG).is_file():
            log.info("the log of the job that computed them:\n%s", (entry / LOG).read_text())
        self.hits += 1
        return True

    def keep(self, i: int, log_file: str | None = None) -> None:
        """Keep video ``i``'s freshly written files (hard links) under its key, and a
        copy of its log so far (``log_file``), shown again when the entry is restored."""
        try:
            key = self.key(i)
            entry = self._entry(key)
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
            files = {}
            for name, target in self._targets(i).items():
                fname = f"{name}{''.join(Path(target).suffixes)}"
                _link_or_copy(Path(target), tmp / fname)
                files[name] = {"file": fname, "sha256": source_sha256(tmp / fname)}
            if log_file and Path(log_file).is_file():
                shutil.copyfile(log_file, tmp / LOG)   # a copy: the log is reopened "w"
            (tmp / ENTRY).write_text(json.dumps(
                {"stage": self.stage, "video": dict(self.sm.params.videos[i]),
                 "files": files}, indent=1, sort_keys=True) + "\n")
            if entry.exists():
                shutil.rmtree(entry)
            os.replace(tmp, entry)
        except OSError as exc:
            log.warning("could not keep %s in the cache: %s",
                        self.sm.params.videos[i]["video_id"], exc)


def prune(root: str | os.PathLike, dry_run: bool = False) -> tuple[int, int]:
    """Remove the entries no result uses any more; return (entries, bytes) removed.

    An entry is in use while one of its files is also a result (a hard link: link count
    above 1); entries left by old settings, old code or deleted videos are not, and
    neither are entries whose files were copied (no hard links on that file system) or
    whose results were deleted: all of those go. Half-written entries (a job killed while
    keeping) go too. ``dry_run``: count, remove nothing.
    """
    root = Path(root)
    removed = freed = 0
    if not root.is_dir():
        return 0, 0
    # entries: the folders holding an entry.json; half-written ones: mkdtemp's ".<key>."
    entries = {f.parent for f in root.rglob(ENTRY)}
    entries |= {d for d in root.rglob(".*") if d.is_dir()}
    for entry in sorted(entries):
        if not entry.is_dir():
            continue
        files = [f for f in entry.iterdir() if f.is_file()]
        if not entry.name.startswith(".") and any(
                f.stat().st_nlink > 1 for f in files if f.name not in (ENTRY, LOG)):
            continue
        removed += 1
        freed += sum(f.stat().st_size for f in files if f.stat().st_nlink == 1)
        if not dry_run:
            shutil.rmtree(entry)
    return removed, freed


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _place(src: Path, target: Path) -> None:
    """``src`` at ``target`` (atomically), with a fresh mtime: Snakemake sees a new file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.restore")
    if tmp.exists():
        tmp.unlink()
    _link_or_copy(src, tmp)
    os.utime(tmp)
    os.replace(tmp, target)


def cache_for(sm: Any, stage: str, outputs: Sequence[str],
              **kwargs: Any) -> VideoCache | None:
    """The stage's cache under the config's ``shards.cache`` folder; None where it is
    empty (no cache). Read from the config, not a rule param: moving the cache does not
    rerun the shard jobs."""
    root = sm.config["shards"]["cache"]
    return VideoCache(sm, root, stage, outputs, **kwargs) if root else None
