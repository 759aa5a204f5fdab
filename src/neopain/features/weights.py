"""Weights for air-gapped clusters: list the registry's files and their state, verify them,
import a user-supplied file into the weights directory.

``import`` checks the source against the registry's pin (when there is one), checks that
it loads into the architecture (MatConvNet .mat geometry, Keras HDF5, torchvision/timm
state dicts strict), writes it under the registry's file name in the weights directory
(converting a timm ``.safetensors`` or a wrapped checkpoint to a plain state dict when the
backbone has no registry pin) and records its sha256 in ``<weights_dir>/SHA256SUMS``,
printing the ``extract.backbones.<name>.sha256`` line to pin it in the config.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from neopain.core.provenance import atomic_path, sha256_file
from neopain.features.registry import REGISTRY, BackboneSpec, get_spec
from neopain.core.wheelfiles import record_sum
from neopain.features.weightfiles import (WeightsError, pins_for, verify_file,
                                          weight_candidates)
from neopain.features.weightload import adapt_state, load_weights_into, read_torch_state


def status(spec: BackboneSpec, weights_dir: str | Path | None) -> dict[str, Any]:
    """Where the file is, its pins, and whether it verifies (hashes the file)."""
    pins = pins_for(spec, weights_dir)
    rec: dict[str, Any] = {"backbone": spec.name, "file": spec.weights_file,
                           "pins": [p for p, _ in pins], "path": None, "state": "missing",
                           "sha256": None, "obtain": spec.obtain, "licence": spec.licence}
    for cand in weight_candidates(spec, weights_dir):
        if cand.is_file():
            rec["path"] = str(cand)
            try:
                rec["sha256"] = verify_file(spec, cand, weights_dir)
                rec["state"] = "ok"
            except WeightsError as exc:
                rec["state"] = "unpinned" if not pins else "MISMATCH"
                rec["error"] = str(exc)
            break
    return rec


def specs(names: list[str] | None, backbones_cfg: Mapping[str, Any] | None) -> list[BackboneSpec]:
    cfg = dict(backbones_cfg or {})
    names = names or sorted(set(REGISTRY) | set(cfg))
    return [get_spec(n, cfg.get(n)) for n in names]


def import_weights(name: str, source: str | Path, weights_dir: str | Path,
                   cfg: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Import ``source`` as the weights of backbone ``name``; return {path, sha256, source}."""
    spec = get_spec(name, cfg)
    source = Path(source)
    if not source.is_file():
        raise WeightsError(f"{source}: no such file")
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    src_digest = sha256_file(source)
    dest = weights_dir / spec.weights_file
    converted = False
    if spec.sha256 and not src_digest.startswith(spec.sha256):
        raise WeightsError(
            f"{source}: sha256 {src_digest} does not match the pinned {spec.sha256} for "
            f"{spec.weights_file!r} (backbone {name!r}); obtain the genuine file: {spec.obtain}")
    model = None if spec.weights_format == "matconvnet" else spec.build()
    if spec.weights_format == "torch":
        state = adapt_state(model, read_torch_state(source))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(f"{source}: does not fit backbone {name!r}: {exc}") from exc
        raw = None if source.suffix == ".safetensors" else torch.load(
            source, map_location="cpu", weights_only=True)
        converted = not (isinstance(raw, dict) and set(raw) == set(state) and all(
            isinstance(raw[k], torch.Tensor) and raw[k].shape == state[k].shape for k in state))
        if converted and spec.sha256:
            raise WeightsError(f"{source}: a wrapped/converted checkpoint cannot carry the "
                               f"registry's pin {spec.sha256}; supply the official file")
    else:
        load_weights_into(spec, model, source)      # raises WeightsError when it does not fit
    with atomic_path(dest) as tmp:
        if converted:
            torch.save(model.state_dict(), tmp)
        else:
            shutil.copyfile(source, tmp)
    digest = sha256_file(dest)
    if spec.sha256 and not digest.startswith(spec.sha256):   # pragma: no cover (copy)
        raise WeightsError(f"{dest}: copy does not match {spec.sha256}")
    record_sum(weights_dir, spec.weights_file, digest)
    return {"path": str(dest), "sha256": digest, "source_sha256": src_digest,
            "converted": str(converted)}
