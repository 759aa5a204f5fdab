"""Helpers for the thin Snakemake ``script:`` entry points in ``scripts/``."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any, Callable


def run(snakemake: Any, main: Callable[[Any], None]) -> None:
    """Run ``main(snakemake)`` with logging to the rule's log file.

    Any exception is written to the log with its traceback and re-raised, so
    Snakemake marks the job failed (and removes its incomplete outputs) while
    the other jobs go on under ``--keep-going``.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(str(snakemake.log[0]), mode="w"))
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("neopain.rule." + snakemake.rule)
    log.info("rule %s wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    try:
        main(snakemake)
    except Exception:
        log.error("failed:\n%s", traceback.format_exc())
        raise
    log.info("done")


def stage_config(snakemake: Any) -> dict:
    """The params of the job as a plain dict (what the provenance hash covers)."""
    return {k: v for k, v in snakemake.params.items()}
