"""The artefact format: a zip of JSON and NumPy members, verified member by member.

Format ``FORMAT`` ``neopain-model``, ``FORMAT_VERSION`` 1 (frame level; 2 for video-level
artefacts, :mod:`neopain.deploy.videoexport`). A zip archive (deterministic: fixed member
times, sorted names) holding

* ``manifest.json`` -- ``format``, ``format_version``, and for every other member
  its sha256 and size;
* ``manifest.sha256`` -- the sha256 of ``manifest.json`` (so every byte of every
  member is covered);
* ``model.json`` -- the configuration: labels, tracker / crop settings, backbone
  (name, layer, config, weights file and sha256, feature dimension), selector (name,
  parameters, selected feature indices), scaler and classifier (type and scalar
  parameters), calibrator, threshold;
* ``arrays/<name>.npy`` -- NumPy arrays (read with ``allow_pickle=False``): scaler
  offsets/scales, selected indices, and the fitted attributes of the classifier
  (:mod:`neopain.deploy.arrays`);
* ``provenance.json`` -- the study's sample-sheet sha256 and every raw source and
  weight hash the feature table carries, the training subjects and row counts, the
  evaluation metrics of the configuration with their CIs, the calibration folds,
  the code version, package versions and the configuration hash;
* ``weights/<file>`` -- only with ``embed_weights``: the backbone's weights file.
  Otherwise the weights are referenced by file name and sha256 and looked up as the
  pipeline does (``neopain.features.weightfiles``); the file found must have that sha256.

:func:`read_artefact` verifies the format and version first, then every member's sha256
against the manifest (and the manifest against ``manifest.sha256``), refuses unlisted
or missing members, and names the member in every error (:class:`ArtefactError`). The
hashes guard integrity, not authenticity: compare the artefact's own sha256 (printed at
export, ``--sha256`` of ``neopain predict``) with one obtained out of band to trust its
origin. Loading a verified artefact: :func:`neopain.deploy.exported.load`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np

FORMAT = "neopain-model"
FORMAT_VERSION = 1             #: frame-level artefacts (readable by every neopain)
VIDEO_FORMAT_VERSION = 2       #: video-level artefacts (neopain.deploy.videoexport)
SUPPORTED_VERSIONS = (1, 2)
SUFFIX = ".neopain"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class ArtefactError(ValueError):
    """An artefact that cannot be trusted or read; the message names the file and member."""


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _strict(obj):
    """NaN / inf -> None, NumPy scalars -> Python: the members are strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_bytes(obj) -> bytes:
    return (json.dumps(_strict(obj), indent=1, sort_keys=True, default=_json_default,
                       allow_nan=False) + "\n").encode()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def write_artefact(path: str | Path, model: dict, provenance: dict,
                   arrays: Mapping[str, np.ndarray],
                   extra: Mapping[str, bytes] | None = None,
                   format_version: int = FORMAT_VERSION) -> str:
    """Write the artefact atomically; return its sha256."""
    from neopain.core.provenance import atomic_path

    members: dict[str, bytes] = {"model.json": _json_bytes(model),
                                 "provenance.json": _json_bytes(provenance)}
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype == object:
            raise ValueError(f"array {name!r} has dtype object: not storable without pickle")
        members[f"arrays/{name}.npy"] = _npy(a)
    for name, b in (extra or {}).items():
        members[name] = bytes(b)
    manifest = {"format": FORMAT, "format_version": int(format_version),
                "members": {n: {"sha256": _sha(b), "size": len(b)}
                            for n, b in sorted(members.items())}}
    mbytes = _json_bytes(manifest)
    members["manifest.json"] = mbytes
    members["manifest.sha256"] = (_sha(mbytes) + "\n").encode()
    path = Path(path)
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name in ["manifest.json", "manifest.sha256"] + sorted(
                    n for n in members if not n.startswith("manifest.")):
                info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                info.compress_type = (zipfile.ZIP_STORED if name.startswith("weights/")
                                      else zipfile.ZIP_DEFLATED)
                info.external_attr = 0o644 << 16
                zf.writestr(info, members[name])
    from neopain.core.provenance import sha256_file

    return sha256_file(path)


def read_artefact(path: str | Path) -> tuple[dict, dict[str, bytes]]:
    """``(manifest, members)`` after every check (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ArtefactError(f"{path}: model artefact not found")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtefactError(f"{path}: not a neopain model artefact (not a zip archive: "
                            f"{exc})") from None
    with zf:
        names = zf.namelist()

        def read(name: str) -> bytes:
            try:
                return zf.read(name)
            except KeyError:
                raise ArtefactError(f"{path}: member {name!r} is missing") from None
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                raise ArtefactError(f"{path}: member {name!r} is damaged ({exc}); "
                                    f"refusing to load") from None

        mbytes = read("manifest.json")
        try:
            manifest = json.loads(mbytes)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtefactError(f"{path}: member 'manifest.json' is not valid JSON ({exc}); "
                                "refusing to load") from None
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        if fmt != FORMAT:
            raise ArtefactError(f"{path}: member 'manifest.json' does not describe a "
                                f"{FORMAT!r} artefact (format {fmt!r})")
        version = manifest.get("format_version")
        if version not in SUPPORTED_VERSIONS:
            raise ArtefactError(
                f"{path}: format version {version!r} is not supported (this neopain reads "
                f"format version(s) {', '.join(map(str, SUPPORTED_VERSIONS))}); export the "
                "model again with this version or use a matching neopain")
        expect = read("manifest.sha256").decode("ascii", "replace").strip()
        if _sha(mbytes) != expect:
            raise ArtefactError(f"{path}: member 'manifest.json' sha256 {_sha(mbytes)} does "
                                f"not match 'manifest.sha256' ({expect[:64]}): the artefact "
                                "was modified or damaged; refusing to load")
        listed = manifest.get("members") or {}
        unlisted = sorted(set(names) - set(listed) - {"manifest.json", "manifest.sha256"})
        if unlisted:
            raise ArtefactError(f"{path}: member {unlisted[0]!r} is not listed in the "
                                "manifest; refusing to load")
        members = {}
        for name, ent in sorted(listed.items()):
            b = read(name)
            if _sha(b) != ent.get("sha256") or len(b) != ent.get("size"):
                raise ArtefactError(
                    f"{path}: member {name!r} sha256 {_sha(b)} does not match the manifest "
                    f"({ent.get('sha256')}): the artefact was modified or damaged; "
                    "refusing to load")
            members[name] = b
    return manifest, members

