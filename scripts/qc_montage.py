"""Snakemake entry point: QC montage PNG of one video (see neopain.qc)."""
import _bootstrap  # noqa: F401
from neopain import runtime


def main(sm):
    import json

    import pyarrow.parquet as pq

    from neopain.qc import faces_mode, montage, write_png

    cfg = dict(sm.params.report)
    img = montage(pq.read_table(sm.input.crops), pq.read_table(sm.input.track),
                  json.loads(open(sm.input.qc).read()),
                  show_faces=faces_mode(cfg.get("show_faces", False)),
                  n_tiles=int(cfg.get("montage_tiles", 16)),
                  crop_size=int(sm.params.crop_size))
    write_png(img, sm.output[0])


runtime.run(snakemake, main)  # noqa: F821
