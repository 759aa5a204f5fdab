"""Snakemake entry point: optical-strain signal of one video (see neopain.strain)."""
import _bootstrap  # noqa: F401
from neopain import provenance, runtime


def main(sm):
    from neopain.strain import signal_status, strain_signal

    cfg = dict(sm.params.strain)
    table = strain_signal(sm.input[0], flow=cfg.get("flow"), max_gap=cfg.get("max_gap", 1),
                          split_x=cfg.get("split_x", 0.5), split_y=cfg.get("split_y", 0.5),
                          margin=cfg.get("margin", 8), smooth=cfg.get("smooth", 4.0),
                          reference=cfg.get("reference", "previous"))
    status = signal_status(table)
    runtime.logging.getLogger("strain").info(
        "%s: %d crops, %d valid pairs%s", sm.wildcards.video, status["n_crops"],
        status["n_pairs"], f" ({status['reason']})" if status["reason"] else "")
    up = provenance.read_provenance(sm.input[0])
    prov = provenance.make_provenance(sm.rule, runtime.stage_config(sm), upstream=[up],
                                      params=cfg)
    provenance.write_table(table, sm.output[0], prov)


runtime.run(snakemake, main)  # noqa: F821
