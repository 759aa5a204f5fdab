"""Snakemake entry point: QC montage PNGs of one shard of videos (see neopain.faces.qc)."""
import _bootstrap  # noqa: F401
from neopain.core import runtime
from neopain.core import shards


def main(sm):
    import json

    import pyarrow.parquet as pq

    from neopain.core.videocache import cache_for
    from neopain.faces.qc import faces_mode, montage, write_png

    cfg = dict(sm.params.report)

    def one(i):
        img = montage(pq.read_table(sm.params.crops[i]), pq.read_table(sm.params.tracks[i]),
                      json.loads(open(sm.params.qc[i]).read()),
                      show_faces=faces_mode(cfg["show_faces"]),
                      n_tiles=int(cfg["montage_tiles"]),
                      crop_size=int(sm.params.crop_size))
        write_png(img, sm.output.montages[i])

    cache = cache_for(sm, "qc_montage", ("montages",), inputs=("crops", "tracks", "qc"))
    shards.run_videos(sm, one, cache=cache)
    shards.write_manifest(sm.output.manifest, sm, ("montages",))


runtime.run(snakemake, main)  # noqa: F821
