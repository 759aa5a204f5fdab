"""Helpers for the thin Snakemake ``script:`` entry points in ``scripts/``."""

from __future__ import annotations

import logging
import os
import platform
import sys
import traceback
from typing import Any, Callable


def run(snakemake: Any, main: Callable[[Any], None], cnn: bool = False) -> None:
    """Run ``main(snakemake)`` with logging to the rule's log file.

    ``cnn`` (the rules that run a network batch after batch: extract, finetune,
    cascade, predict) keeps freed tensors mapped (:func:`keep_freed_memory`).

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
    malloc = keep_freed_memory() if cnn else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(str(snakemake.log[0]), mode="w"))
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log = logging.getLogger("neopain.rule." + snakemake.rule)
    log.info("rule %s wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    if cnn:
        log.info("glibc malloc: %s", malloc or "left as it is (not glibc, or "
                 "NEOPAIN_GLIBC_MALLOC=defaults)")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    try:
        main(snakemake)
    except Exception:
        log.error("failed:\n%s", traceback.format_exc())
        raise
    log.info("done")


#: glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_INT_MAX = 2**31 - 1
_MALLOC_TUNED: dict | None = None


def keep_freed_memory() -> dict:
    """Stop glibc handing every freed activation buffer back to the kernel.

    A CNN forward pass allocates and frees the same few- to few-hundred-MB tensors at
    every layer of every batch.  With glibc's defaults the large ones are mmap'd and
    unmapped each time and the heap is trimmed, so every reuse page-faults (and the
    kernel zeroes) its memory again: ~14,000 minor faults per batch of 32 on the fer
    network, ~200,000 on MobileNetV2, a third or more of the CPU time spent in the
    kernel (bench/bench_extract.py, tests/unit/test_runtime.py).  This serves every block
    from the heap (``M_MMAP_MAX`` 0) and never trims it (``M_TRIM_THRESHOLD`` at its
    maximum): the memory is reused instead, so a job's resident memory stays at its peak
    rather than shrinking between batches (what a cluster's memory limit sees anyway).
    Large blocks requested by threads other than the main one may still be mmap'd.
    Only for processes that repeat same-sized allocations: where big arrays of changing
    sizes come and go (gathering tables), never-returned holes could raise the peak.

    Called by the CNN rule scripts (``run(..., cnn=True)``: extract, finetune, cascade,
    predict), ``neopain predict`` and the benchmarks.
    Idempotent; returns what was set, ``{}`` where the C library is not glibc or where
    ``NEOPAIN_GLIBC_MALLOC=defaults`` asks to leave it alone.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is not None:
        return _MALLOC_TUNED
    tuned: dict = {}
    if (os.environ.get("NEOPAIN_GLIBC_MALLOC", "") != "defaults"
            and sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        import ctypes

        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            if mallopt(_M_MMAP_MAX, 0) == 1:
                tuned["mmap_max"] = 0
            if mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1:
                tuned["trim_threshold"] = _INT_MAX
    _MALLOC_TUNED = tuned
    return tuned


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
