"""Snakemake entry point: track, crop and keyframes of one shard of videos, one decode
pass per video (see neopain.faces.framepass, neopain.core.shards); per-video outputs and logs."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime
from neopain.core import shards


class _Progress:
    def __init__(self):
        import time

        self.clock, self.t0 = time.perf_counter, time.perf_counter()

    def __call__(self, n_frames):
        if n_frames % 100 == 0:
            elapsed = self.clock() - self.t0
            runtime.logging.getLogger("neopain.faces.track").info(
                "%d frames tracked in %.1f s (%.1f frames/s)", n_frames, elapsed,
                n_frames / max(elapsed, 1e-9))


def main(sm):
    import functools

    from neopain.faces.framepass import track_crop_keyframes
    from neopain.faces.detectors.registry import build_detector
    from neopain.faces.trackparams import params_from_config
    from neopain.faces.video import source_sha256
    from neopain.core.videocache import cache_for

    p = sm.params
    cfg, crop_cfg, kf_cfg = dict(p.track), dict(p.crop), dict(p.keyframes)
    # detector and refiner: built once per shard, and only if a video is not restored
    detector_pair = functools.cache(lambda: build_detector(cfg))
    track_params = params_from_config(cfg)
    max_bytes = int(p.shards["keep_frames_mb"]) << 20

    def one(i):
        video = p.videos[i]
        detector, refiner = detector_pair()
        table, qc, crops, keyframes = track_crop_keyframes(
            video["path"], detector, refiner, track_params=track_params, crop_cfg=crop_cfg,
            keyframes_cfg=kf_cfg, fps_for_images=p.fps_for_images,
            on_error=cfg["on_error"], max_bytes=max_bytes, progress=_Progress())
        # provenance as the per-video rules track, crop and keyframes record it
        info = qc["detector"]
        sources = {f"video:{video['video_id']}": source_sha256(video["path"])}
        sources.update({f"weights:{k}": v for k, v in info.get("weights", {}).items()})
        if "refiner" in info:
            sources.update({f"weights:{k}": v
                            for k, v in info["refiner"].get("weights", {}).items()})
        stage = {"video": video, "track": cfg, "fps_for_images": p.fps_for_images}
        prov = provenance.make_provenance("track", stage, sources,
                                          params={"detector": info, **cfg})
        qc = {**qc, "video_id": video["video_id"], "path": video["path"]}
        provenance.write_table(table, sm.output.tracks[i], prov)
        provenance.write_json(qc, sm.output.qc[i])
        if qc["status"] == "error":
            runtime.logging.getLogger("neopain.faces.track").error(
                "%s: recorded as an error (track.on_error: record), %d frame(s) kept: %s",
                video["path"], qc["n_frames"], qc["error"])
        prov_crop = provenance.make_provenance(
            "crop", {"video": video, "crop": crop_cfg, "fps_for_images": p.fps_for_images},
            upstream=[prov], params=crop_cfg)
        provenance.write_table(crops, sm.output.crops[i], prov_crop)
        prov_kf = provenance.make_provenance("keyframes", {"keyframes": kf_cfg},
                                             upstream=[prov_crop], params=kf_cfg)
        provenance.write_table(keyframes, sm.output.keyframes[i], prov_kf)

    cache = cache_for(sm, "track", ("tracks", "qc", "crops", "keyframes"), source=True)
    shards.run_videos(sm, one, logs=list(sm.log.videos), cache=cache)
    shards.write_manifest(sm.output.manifest, sm, ("tracks", "qc", "crops", "keyframes"))


runtime.run(snakemake, main)  # noqa: F821
