"""Snakemake entry point: optical-strain signals of one shard of videos (see neopain.features.strain)."""
import _bootstrap  # noqa: F401
from neopain.core import provenance
from neopain.core import runtime
from neopain.core import shards


def main(sm):
    from neopain.core.videocache import cache_for
    from neopain.features.strain import signal_status, strain_signal

    cfg = dict(sm.params.strain)

    def one(i):
        crops, vid = sm.params.crops[i], sm.params.videos[i]["video_id"]
        table = strain_signal(crops, flow=cfg["flow"], max_gap=cfg["max_gap"],
                              split_x=cfg["split_x"], split_y=cfg["split_y"],
                              margin=cfg["margin"], smooth=cfg["smooth"],
                              reference=cfg["reference"])
        status = signal_status(table)
        runtime.logging.getLogger("strain").info(
            "%s: %d crops, %d valid pairs%s", vid, status["n_crops"],
            status["n_pairs"], f" ({status['reason']})" if status["reason"] else "")
        prov = provenance.make_provenance("strain", {"strain": cfg},
                                          upstream=[provenance.read_provenance(crops)],
                                          params=cfg)
        provenance.write_table(table, sm.output.signals[i], prov)

    cache = cache_for(sm, "strain", ("signals",), inputs=("crops",))
    shards.run_videos(sm, one, cache=cache)
    shards.write_manifest(sm.output.manifest, sm, ("signals",))


runtime.run(snakemake, main)  # noqa: F821
