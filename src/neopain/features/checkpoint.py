"""The fine-tuned checkpoint format, in one place: written and read back by
:mod:`neopain.finetune`, loaded as a backbone by :mod:`neopain.features.weightload`, its
sidecar's sha256 used as a pin by :mod:`neopain.features.weightfiles`.

``model.safetensors`` (never a pickle): ``backbone.<key>`` = the full architecture's state
dict (unused original classifier included) and ``head.<key>``; its metadata
``neopain.checkpoint`` (JSON) holds the format, base backbone, layer, feature dimension,
classes, input size and the provenance record (parent weights sha256, data fingerprint,
sample-sheet hashes, settings, code version; no timestamps).  The sidecar ``model.json``
repeats it with the file's own sha256, the training history (with timings) and the
subjects used.  Both are written atomically, the checkpoint first.
:func:`read_checkpoint` refuses a file whose sha256 differs from its sidecar.  As a
backbone: ``extract.backbones.<name>: {base: <base>, weights_file:
<path>/model.safetensors, layers: [penultimate]}`` (the sidecar's sha256 is a pin; a
``sha256`` in the config is checked too).

Light: torch and safetensors are imported only when a file is read or written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from neopain.core import provenance
from neopain.features.pins import WeightsError

FORMAT = "neopain.finetune/1"
FAMILY = "neopain.finetune/"          # every version of the format
META_KEY = "neopain.checkpoint"       # the safetensors metadata entry
BACKBONE = "backbone."                # key prefix of the full architecture's state dict
HEAD = "head."                        # key prefix of the new head's state dict


def is_checkpoint(metadata: Mapping[str, str] | None) -> bool:
    """Whether a safetensors file's metadata is a fine-tuned checkpoint's."""
    return META_KEY in (metadata or {})


def checkpoint_tensors(backbone: Mapping[str, Any], head: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors of a checkpoint (CPU copies) from the two state dicts."""
    out = {f"{BACKBONE}{k}": v for k, v in backbone.items()}
    out.update({f"{HEAD}{k}": v for k, v in head.items()})
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def backbone_state(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The full architecture's state dict of a checkpoint's tensors."""
    return {k[len(BACKBONE):]: v for k, v in tensors.items() if k.startswith(BACKBONE)}


def head_state(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The new head's state dict of a checkpoint's tensors."""
    return {k[len(HEAD):]: v for k, v in tensors.items() if k.startswith(HEAD)}


def write_safetensors(tensors: Mapping[str, Any], path: str | os.PathLike,
                      metadata: Mapping[str, str]) -> None:
    """``tensors`` as a safetensors file with ``metadata``, written atomically."""
    from safetensors.torch import save_file

    with provenance.atomic_path(Path(path)) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata))


def sidecar_path(path: str | os.PathLike) -> Path:
    """``<stem>.json`` beside ``<stem>.safetensors`` (or ``<name>.json``)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + ".json") \
        if path.name.endswith(".safetensors") else path.with_name(path.name + ".json")


def write_checkpoint(tensors: Mapping[str, Any], path: str | os.PathLike,
                     meta: Mapping[str, Any], extra: Mapping[str, Any] | None = None,
                     sidecar: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write ``path`` (safetensors) then its sidecar JSON, both atomically; return the
    sidecar record (with the checkpoint's sha256)."""
    path = Path(path)
    write_safetensors(tensors, path, {META_KEY: provenance.canonical_json(dict(meta))})
    rec = {"format": FORMAT, "file": path.name, "sha256": provenance.sha256_file(path),
           "bytes": path.stat().st_size, **dict(meta), **dict(extra or {})}
    provenance.write_json(rec, sidecar or sidecar_path(path))
    return rec


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        raise WeightsError(f"{path}: no sidecar {side.name} (a checkpoint is used only with "
                           f"the sidecar that records its sha256)")
    rec = json.loads(side.read_text())
    if rec.get("format") != FORMAT:
        raise WeightsError(f"{side}: not a neopain fine-tuning sidecar")
    return rec


def verify_checkpoint(path: str | os.PathLike) -> str:
    """The checkpoint's sha256, checked against its sidecar."""
    rec = read_sidecar(path)
    digest = provenance.sha256_file(path)
    if digest != rec.get("sha256"):
        raise WeightsError(f"{path}: sha256 {digest} does not match {rec.get('sha256')} "
                           f"recorded in {sidecar_path(path).name} (partial or modified "
                           f"checkpoint)")
    return digest


def read_checkpoint(path: str | os.PathLike, verify: bool = True
                    ) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(tensors, metadata, sha256) of a fine-tuned checkpoint (verified by default)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    digest = verify_checkpoint(path) if verify else provenance.sha256_file(path)
    with safe_open(str(path), framework="pt") as fh:
        raw = (fh.metadata() or {}).get(META_KEY)
    if raw is None:
        raise WeightsError(f"{path}: no {META_KEY} metadata: not a neopain checkpoint")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path}: format {meta.get('format')!r}, expected {FORMAT}")
    return load_file(str(path)), meta, digest


def sidecar_pins(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The sha256 recorded by the sidecar ``<stem>.json`` of a fine-tuned checkpoint
    ``<stem>.safetensors``, as a (pin, where) list (empty for any other file)."""
    path = Path(path)
    if not path.name.endswith(".safetensors"):
        return []
    side = sidecar_path(path)
    if not side.is_file():
        return []
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        return []
    if str(rec.get("format", "")).startswith(FAMILY) and rec.get("sha256"):
        return [(str(rec["sha256"]).lower(), f"{side} (fine-tuning sidecar)")]
    return []
