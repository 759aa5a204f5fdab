"""Per-video work in stable shards: one process (one start-up) per batch of videos.

A study's videos are spread over ``shards.count`` shards by a hash of their
``video_id`` (:func:`shard_of`), so a video's shard never depends on the other
videos: adding a video to a study changes one shard's job and the aggregations,
nothing else.  A shard job still writes the per-video files it always did
(``results/tracks/{video}.parquet`` ...), and each of them carries the
provenance of its own video, as the per-video rule recorded it.  See docs/scale.md for the
trade-off between shard size, recomputation and start-up.

Only the standard library and ``logging`` here: the shard bookkeeping must not
cost the rules that use it an import of numpy, OpenCV or torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

log = logging.getLogger(__name__)


def shard_of(video_id: str, count: int) -> int:
    """The shard (0 .. count-1) of one video: sha256 of its id, modulo ``count``."""
    if count < 1:
        raise ValueError(f"shards.count must be >= 1, got {count}")
    digest = hashlib.sha256(str(video_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def assign(video_ids: Iterable[str], count: int) -> dict[str, list[str]]:
    """Shard name -> its videos (sheet order); shards without a video are left out.

    Names are ``s`` + the zero-padded shard number (``s03`` of 16), so they sort and
    stay the same when videos are added.
    """
    width = len(str(count - 1))
    out: dict[int, list[str]] = {}
    for vid in video_ids:
        out.setdefault(shard_of(vid, count), []).append(vid)
    return {f"s{k:0{width}d}": out[k] for k in sorted(out)}


def membership_digest(video_ids: Sequence[str]) -> str:
    """8 hex digits of sha256 over a shard's video ids (in shard order): part of its
    manifest's name, so that a change of membership asks for a new manifest."""
    return hashlib.sha256("\n".join(map(str, video_ids)).encode("utf-8")).hexdigest()[:8]


@contextmanager
def video_log(path: str | None) -> Iterator[None]:
    """Also send the log records to one video's own log file (``logs/track/{video}.log``)."""
    if not path:
        yield
        return
    handler = logging.FileHandler(str(path), mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def run_videos(sm: Any, one: Callable[[int], None], logs: Sequence[str] | None = None,
               cache: Any = None) -> None:
    """``one(i)`` for every video of shard job ``sm``; a video that raises does not stop
    the others: every video is attempted, then the job fails naming the ones that did not
    finish (Snakemake then removes the shard's outputs; ``--keep-going`` runs the other
    shards).  Bad *input* (unreadable or truncated video) is not an exception here: the
    track stage records it per video (``track.on_error: record``).

    ``cache`` (a :class:`neopain.core.videocache.VideoCache`): a video whose files are
    kept under the same key (same inputs, settings and code) is restored, not computed;
    a computed video is kept. So a shard that reruns because one video joined it
    computes that video only."""
    videos = [v["video_id"] for v in sm.params.videos]
    failed: list[str] = []
    for i, vid in enumerate(videos):
        with video_log(logs[i] if logs else None):
            log.info("video %d/%d: %s", i + 1, len(videos), vid)
            try:
                if cache is None or not cache.restore(i):
                    one(i)
                    if cache is not None:
                        cache.keep(i, logs[i] if logs else None)
            except Exception as exc:  # noqa: BLE001 - reported below, job fails at the end
                log.error("%s failed: %s\n%s", vid, exc, traceback.format_exc())
                failed.append(f"{vid}: {exc}")
    if cache is not None:
        log.info("cache %s: %d video(s) restored, %d computed", cache.root / cache.stage,
                 cache.hits, len(videos) - cache.hits - len(failed))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(videos)} video(s) of this shard failed: "
                           + "; ".join(failed))


def write_manifest(path: str | os.PathLike, sm: Any, outputs: Sequence[str]) -> None:
    """The shard's manifest: its videos and the per-video files it wrote (written last,
    atomically). Aggregations that read every video take the study's manifests as inputs
    instead of every per-video file, which keeps planning linear in shards, not in videos
    x consumers (docs/scale.md); a shard that reruns rewrites its manifest, so they rerun."""
    from neopain.core.provenance import write_text

    videos = [v["video_id"] for v in sm.params.videos]
    files = {name: list(sm.output[name]) for name in outputs}
    write_text(json.dumps({"rule": sm.rule, "videos": videos, "files": files}, indent=1,
                          sort_keys=True) + "\n", path)
