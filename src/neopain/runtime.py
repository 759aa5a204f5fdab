"""Helpers for the thin Snakemake ``script:`` entry points in ``scripts/``."""

from __future__ import annotations

import logging
import os
import platform
import sys
import traceback
from typing import Any, Callable


def run(snakemake: Any, main: Callable[[Any], None]) -> None:
    """Run ``main(snakemake)`` with logging to the rule's log file.

    Any exception is written to the log with its traceback and re-raised, so
    Snakemake marks the job failed (and removes its incomplete outputs) while
    the other jobs go on under ``--keep-going``.
    """
    # Keep numerical libraries to the job's thread budget (set before torch/numpy
    # threads start): on a 2-core node, two jobs with torch's default threads each
    # slow each other down many times over.
    threads = str(max(1, int(getattr(snakemake, "threads", 1) or 1)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = threads
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(str(snakemake.log[0]), mode="w"))
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("neopain.rule." + snakemake.rule)
    log.info("rule %s wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    try:
        main(snakemake)
    except Exception:
        log.error("failed:\n%s", traceback.format_exc())
        raise
    log.info("done")


def stage_config(snakemake: Any) -> dict:
    """The params of the job as a plain dict (what the provenance hash covers)."""
    return {k: v for k, v in snakemake.params.items()}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for benchmark and run records."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
