"""The resume state of a training job.

With a ``resume_dir`` the full training state (model, best weights so far, optimizer,
history, epoch) is written atomically after every epoch as ``state.safetensors`` with a
sha256 of its tensors and the job's key (settings, data fingerprint, initial weights) in
its metadata.  A rerun of the same job resumes after the last complete epoch and ends
with exactly the checkpoint an uninterrupted run gives; a truncated, corrupt or foreign
state is ignored with a warning and training restarts cleanly.  The state is removed
once the outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from neopain.core import provenance
from neopain.features.checkpoint import write_safetensors

log = logging.getLogger(__name__)

RESUME_FORMAT = "neopain.finetune-resume/1"
RESUME_KEY = "neopain.resume"


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()



def write_resume(path: Path, state: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
                 ) -> None:
    meta = {**state, "format": RESUME_FORMAT, "tensors_sha256": _tensor_digest(tensors)}
    write_safetensors(tensors, path, {RESUME_KEY: provenance.canonical_json(meta)})


def read_resume(path: Path, job_key: str) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The resume state at ``path`` for ``job_key``, or None (with a warning when a file
    is there but unusable)."""
    if not path.exists():
        return None
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})[RESUME_KEY])
        tensors = load_file(str(path))
        if meta.get("format") != RESUME_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        if _tensor_digest(tensors) != meta.get("tensors_sha256"):
            raise ValueError("its tensors do not match their recorded sha256")
        if meta.get("job_key") != job_key:
            raise ValueError("it belongs to another job (settings, data or initial "
                             "weights differ)")
        return meta, tensors
    except Exception as exc:   # any unreadable state: start afresh, never use it
        log.warning("ignoring resume state %s (%s: %s); training from scratch", path,
                    type(exc).__name__, exc)
        return None


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{idx}.{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
              meta: Mapping[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for k, v in meta.get("scalars", {}).items():
        idx, name = k.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})



def clear_resume(resume_dir: str | os.PathLike | None) -> None:
    if resume_dir and Path(resume_dir).exists():
        shutil.rmtree(resume_dir, ignore_errors=True)
