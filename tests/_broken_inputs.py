"""Broken inputs made as a user would make them (issue 16): a video cut short with
``head -c`` and a frame folder with one corrupt image.  Shared by
tests/unit/test_bad_inputs.py and tests/workflow/test_bad_inputs_dag.py."""

from __future__ import annotations

import subprocess
from pathlib import Path


def head_c(src: Path, dst: Path, fraction: float) -> Path:
    """A truncated copy made as a user would: ``head -c N``."""
    n = int(src.stat().st_size * fraction)
    with open(dst, "wb") as out:
        subprocess.run(["head", "-c", str(n), str(src)], stdout=out, check=True)
    return dst


def broken_folder(shared_data: Path, dst: Path, seq="ckplus_sequences/disgust/S106_004"):
    """A copy of a CK+ sequence (symlinks) with one corrupt image in the middle."""
    files = sorted((shared_data / seq).iterdir())
    dst.mkdir()
    for f in files:
        (dst / f.name).symlink_to(f)
    mid = files[len(files) // 2]
    (dst / mid.name).unlink()
    (dst / mid.name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)  # unreadable
    return dst, len(files), files.index(mid)
