"""onnxruntime sessions and local model files for the ONNX backends (SCRFD, the
FaceMesh ONNX refiner).  Nothing is downloaded: a missing file is an error naming the
folder and the config key to set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

__all__ = ["find_model_file", "ort_session"]


def ort_session(path: Path, device: str | None, threads: int | None = None):
    """``(session, provider)``: CUDA when asked for and present, else the CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    n = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        opts.intra_op_num_threads = n
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # no busy-waiting worker threads: they would steal the cores torch (MTCNN) and
    # the decoder need when several models share a 2-core job
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    want_cuda = device in (None, "auto") or str(device).startswith("cuda")
    providers = ["CPUExecutionProvider"]
    if want_cuda and "CUDAExecutionProvider" in available and device != "cpu":
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    return sess, sess.get_providers()[0]


def find_model_file(model_dir: str | os.PathLike | None, what: str, config_key: str,
                      candidates: Sequence[str], explicit: str | None) -> Path:
    """The model file in ``model_dir`` (``explicit``, else the first of ``candidates``)."""
    if not model_dir:
        raise FileNotFoundError(
            f"{what}: no model directory configured; set {config_key} to a local folder "
            f"holding {explicit or ' or '.join(candidates)} (nothing is downloaded)"
        )
    d = Path(model_dir).expanduser()
    names = [explicit] if explicit else list(candidates)
    for n in names:
        if (d / n).is_file():
            return d / n
    have = sorted(p.name for p in d.glob("*.onnx")) if d.is_dir() else []
    raise FileNotFoundError(
        f"{what}: {d} holds no detector model; expected "
        f"{' or '.join(names)} (e.g. from insightface's buffalo_l pack: det_10g.onnx, "
        f"2d106det.onnx); found {have if d.is_dir() else 'no such directory'}. "
        f"Nothing is downloaded: put the files there or set {config_key}."
    )

