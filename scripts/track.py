"""Snakemake entry point: track one video (see neopain.track)."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


def _progress(n_frames):
    if n_frames % 100 == 0:
        runtime.logging.getLogger("neopain.track").info("%d frames tracked", n_frames)


def main(sm):
    from neopain.track import make_detector, track_video
    from neopain.video import source_sha256

    p = sm.params
    cfg = dict(p.track)
    det_params = {"max_side": cfg.get("max_side", 640)}
    if cfg.get("device", "auto") != "auto":
        det_params["device"] = cfg["device"]
    detector = make_detector(cfg.get("detector", "mtcnn"), **det_params)
    table, qc = track_video(
        p.video["path"], detector, min_score=cfg.get("min_score", 0.9),
        max_jump=cfg.get("max_jump", 0.5), fps_for_images=p.fps_for_images,
        progress=_progress,
    )
    info = detector.info()
    sources = {f"video:{p.video['video_id']}": source_sha256(p.video["path"])}
    sources.update({f"weights:{k}": v for k, v in info.get("weights", {}).items()})
    prov = provenance.make_provenance(
        sm.rule, runtime.stage_config(sm), sources,
        params={"detector": info, **cfg})
    qc = {**qc, "video_id": p.video["video_id"], "path": p.video["path"]}
    provenance.write_table(table, sm.output.table, prov)
    provenance.write_json(qc, sm.output.qc)


runtime.run(snakemake, main)  # noqa: F821
