"""Snakemake entry point: track one video (see neopain.track)."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


_T0 = []


def _progress(n_frames):
    import time

    if not _T0:
        _T0.append(time.perf_counter() - 1e-9)
    if n_frames % 100 == 0:
        elapsed = time.perf_counter() - _T0[0]
        runtime.logging.getLogger("neopain.track").info(
            "%d frames tracked in %.1f s (%.1f frames/s)", n_frames, elapsed,
            n_frames / max(elapsed, 1e-9))


def main(sm):
    from neopain.track import build_detector, params_from_config, track_video
    from neopain.video import source_sha256

    p = sm.params
    cfg = dict(p.track)
    detector, refiner = build_detector(cfg)
    table, qc = track_video(
        p.video["path"], detector, params=params_from_config(cfg), refiner=refiner,
        fps_for_images=p.fps_for_images, on_error=cfg.get("on_error", "record"),
        progress=_progress,
    )
    info = qc["detector"]
    sources = {f"video:{p.video['video_id']}": source_sha256(p.video["path"])}
    sources.update({f"weights:{k}": v for k, v in info.get("weights", {}).items()})
    if "refiner" in info:
        sources.update({f"weights:{k}": v for k, v in info["refiner"].get("weights", {}).items()})
    prov = provenance.make_provenance(
        sm.rule, runtime.stage_config(sm), sources,
        params={"detector": info, **cfg})
    qc = {**qc, "video_id": p.video["video_id"], "path": p.video["path"]}
    provenance.write_table(table, sm.output.table, prov)
    provenance.write_json(qc, sm.output.qc)
    if qc["status"] == "error":
        runtime.logging.getLogger("neopain.track").error(
            "%s: recorded as an error (track.on_error: record), %d frame(s) kept: %s",
            p.video["path"], qc["n_frames"], qc["error"])


runtime.run(snakemake, main)  # noqa: F821
