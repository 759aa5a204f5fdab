"""Snakemake entry point: the pain timeline of one video (neopain.deploy.batch)."""
import _bootstrap  # noqa: F401
from neopain.core import runtime


def main(sm):
    from pathlib import Path

    from neopain.deploy.batch import predict_rule

    predict_rule(sm.input.model, sm.input.video, sm.wildcards.pvideo,
                 Path(sm.output.frames).parent, dict(sm.params.predict),
                 threads=sm.threads,
                 baseline=_baseline(sm))


def _baseline(sm):
    b = sm.input.get("baseline")
    return b if isinstance(b, str) and b else None


runtime.run(snakemake, main, cnn=True)  # noqa: F821
