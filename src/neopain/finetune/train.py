"""The training loop of fine-tuning and prediction with the trained network (GPU when
present).

Loss: cross-entropy with class weights ``n / (C * n_c)`` of the training rows
(``class_balanced``); crops are decoded from their JPEG bytes batch by batch on a thread
pool ahead of the network (:func:`decoded_batches`).  After each epoch the validation loss
(class-weighted, no augmentation) is computed and the best epoch's weights are kept;
training stops after ``patience`` epochs without improvement.  Learning rates follow a
cosine decay, a pure function of the epoch (so a resumed run continues exactly:
:mod:`neopain.finetune.resume`).

Determinism
    Every epoch's shuffling, augmentation and dropout come from generators seeded with
    ``(seed, epoch)``; ``torch.use_deterministic_algorithms(True, warn_only=True)``,
    cuDNN benchmark off.  On a CPU two runs with the same seed, data and thread count
    give byte-identical checkpoints (tested); on CUDA a few kernels have no deterministic
    implementation (a warning is logged), so GPU runs agree only closely.  AMP: bf16
    autocast on CUDA (``precision``: auto/bf16/fp16 with a grad scaler/fp32), fp32 on CPU.

Test hook: the environment variable ``NEOPAIN_FINETUNE_KILL_AFTER_EPOCH=N`` SIGKILLs the
process right after epoch N's resume state is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neopain.core import provenance
from neopain.features.extract import to_input
from neopain.finetune.augment import augment
from neopain.finetune.data import ImageSet
from neopain.finetune.network import FinetuneNet, frozen_bn_eval, set_trainable
from neopain.finetune.resume import load_optimizer, optimizer_tensors, read_resume, write_resume
from neopain.finetune.settings import RESULT_KEYS, settings

log = logging.getLogger(__name__)

KILL_ENV = "NEOPAIN_FINETUNE_KILL_AFTER_EPOCH"


def decoded_batches(images: Sequence[bytes], order: Sequence[int], size: int, batch_size: int,
                    workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indices, N x size x size x 3 uint8) batches in ``order``, decoded ahead."""
    from neopain.faces.crop import decode_jpeg
    from neopain.features.extract import decode_batch, map_ahead, reduce_factor

    order = np.asarray(order)
    reduce = reduce_factor(min(decode_jpeg(images[order[0]]).shape[:2]), size) \
        if len(order) else 1
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def work(idx):
        return idx, decode_batch([images[i] for i in idx], size, reduce)

    yield from map_ahead(work, chunks, workers)


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def epoch_seed(seed: int, epoch: int, what: str) -> int:
    h = hashlib.sha256(f"{int(seed)}:{int(epoch)}:{what}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Learning rate of 0-based ``epoch`` (cosine from ``base`` to 0.05 * base)."""
    t = epoch / max(1, epochs - 1) if epochs > 1 else 0.0
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    was, warn = (torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled())
    bench, det = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = bench, det



@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    resumed_from: int | None
    validation: bool
    trainable: list[str] = field(default_factory=list)


def pick_device(requested: str = "auto") -> torch.device:
    from neopain.features.extract import pick_device as _pick

    return _pick(requested)


def _loss_on(net, data: ImageSet, weight: torch.Tensor, cfg, device, amp, workers
             ) -> tuple[float, float]:
    """(class-weighted mean loss, accuracy) of ``data`` without augmentation."""
    net.eval()
    tot, wsum, correct = 0.0, 0.0, 0
    with torch.inference_mode():
        for idx, batch in decoded_batches(data.images, range(len(data)), net.input_size,
                                   int(cfg["batch_size"]), workers):
            x = to_input(batch, device)
            y = torch.from_numpy(data.y[idx]).to(device)
            with _autocast(device, amp):
                logits = net(x)
            logits = logits.float()
            w = weight.to(device)[y]
            tot += float((F.cross_entropy(logits, y, reduction="none") * w).sum())
            wsum += float(w.sum())
            correct += int((logits.argmax(1) == y).sum())
    return tot / max(wsum, 1e-12), correct / max(len(data), 1)


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}


def _autocast(device: torch.device, amp: torch.dtype | None):
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp)


def train(net: FinetuneNet, train_set: ImageSet, val_set: ImageSet | None,
          cfg: Mapping[str, Any], *, device: torch.device | None = None,
          precision: str = "auto", workers: int = 2, resume_dir: str | os.PathLike | None = None,
          job_key: str = "", logger: logging.Logger | None = None) -> TrainResult:
    """Fine-tune ``net`` in place; on return it holds the best epoch's weights."""
    from neopain.features.extract import autocast_dtype

    lg = logger or log
    cfg = settings(cfg)
    device = device or torch.device("cpu")
    amp = autocast_dtype(device, precision)
    n_classes = net.head[-1].out_features
    if len(train_set) == 0:
        raise ValueError("no training images (no keyframes of the training subjects?)")
    trainable = set_trainable(net, cfg["unfreeze"], cfg.get("unfreeze_modules"))
    net.to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    head_params = list(net.head.parameters())
    body_params = [p for p in net.features.body.parameters() if p.requires_grad]
    groups = [{"params": head_params, "lr": float(cfg["lr"]), "base_lr": float(cfg["lr"])}]
    if body_params:
        blr = float(cfg["lr"]) * float(cfg["body_lr_scale"])
        groups.append({"params": body_params, "lr": blr, "base_lr": blr})
    opt = torch.optim.AdamW(groups, weight_decay=float(cfg["weight_decay"]))
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    weight = (class_weights(train_set.y, n_classes) if cfg["class_balanced"]
              else torch.ones(n_classes))
    epochs, patience = int(cfg["epochs"]), int(cfg["patience"])
    seed = int(cfg["seed"])
    history: list[dict[str, Any]] = []
    best_val, best_epoch, bad, start, best_state = math.inf, 0, 0, 0, None
    finished, stopped_early, resumed_from = False, False, None
    state_path = Path(resume_dir) / "state.safetensors" if resume_dir else None
    if state_path is not None:
        got = read_resume(state_path, job_key)
        if got is not None:
            own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
            theirs = {k[6:]: tuple(v.shape) for k, v in got[1].items() if k.startswith("model.")}
            if own != theirs:
                lg.warning("ignoring resume state %s (its network does not match this one); "
                           "training from scratch", state_path)
                got = None
        if got is not None:
            meta, tensors = got
            net.load_state_dict({k[6:]: v for k, v in tensors.items()
                                 if k.startswith("model.")})
            load_optimizer(opt, tensors, meta["optimizer"])
            history = list(meta["history"])
            start, best_epoch, bad = int(meta["epoch"]), int(meta["best_epoch"]), int(meta["bad"])
            best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
            if best:
                best_state = best
            elif val_set is not None and len(val_set) and best_epoch == start:
                best_state = _snapshot(net)
            best_val = float(meta["best_val"]) if meta["best_val"] is not None else math.inf
            finished, stopped_early = bool(meta["finished"]), bool(meta["stopped_early"])
            resumed_from = start
            lg.info("resumed from epoch %d (%s)%s", start, state_path,
                    ": training had finished" if finished else "")
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    with deterministic(device):
        epoch = start
        while not finished and epoch < epochs:
            t0 = time.perf_counter()
            torch.manual_seed(epoch_seed(seed, epoch, "dropout"))
            gen = torch.Generator().manual_seed(epoch_seed(seed, epoch, "data"))
            order = torch.randperm(len(train_set), generator=gen).numpy()
            for g in opt.param_groups:
                g["lr"] = cosine_lr(g["base_lr"], epoch, epochs)
            net.train()
            frozen_bn_eval(net)
            if not body_params:
                net.features.eval()
            tot, n_seen = 0.0, 0
            for idx, batch in decoded_batches(train_set.images, order, net.input_size,
                                       int(cfg["batch_size"]), workers):
                x = augment(to_input(batch, device), gen, cfg["augment"])
                y = torch.from_numpy(train_set.y[idx]).to(device)
                with _autocast(device, amp):
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), y, weight=weight.to(device))
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                tot += float(loss.detach()) * len(idx)
                n_seen += len(idx)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_train = time.perf_counter() - t0
            rec: dict[str, Any] = {"epoch": epoch + 1, "train_loss": tot / n_seen,
                                   "lr": opt.param_groups[0]["lr"], "train_seconds": t_train,
                                   "images_per_s": n_seen / max(t_train, 1e-9)}
            if val_set is not None and len(val_set):
                vl, va = _loss_on(net, val_set, weight, cfg, device, amp, workers)
                rec.update(val_loss=vl, val_accuracy=va)
                if vl < best_val:
                    best_val, best_epoch, bad = vl, epoch + 1, 0
                    best_state = _snapshot(net)
                else:
                    bad += 1
                    stopped_early = bad >= patience
            else:
                best_epoch, best_state = epoch + 1, None     # no validation: the last epoch
            history.append(rec)
            lg.info("epoch %d/%d: train loss %.4f%s, lr %.2e, %.1f images/s", epoch + 1,
                    epochs, rec["train_loss"],
                    (f", val loss {rec['val_loss']:.4f} acc {rec['val_accuracy']:.3f}"
                     if "val_loss" in rec else ""), rec["lr"], rec["images_per_s"])
            epoch += 1
            finished = stopped_early or epoch >= epochs
            if state_path is not None:
                tensors = {f"model.{k}": v for k, v in _snapshot(net).items()}
                if best_state is not None and best_epoch != epoch:
                    tensors.update({f"best.{k}": v for k, v in best_state.items()})
                ot, om = optimizer_tensors(opt)
                tensors.update(ot)
                write_resume(state_path, {
                    "job_key": job_key, "epoch": epoch, "best_epoch": best_epoch, "bad": bad,
                    "best_val": None if math.isinf(best_val) else best_val,
                    "finished": finished, "stopped_early": stopped_early,
                    "history": history, "optimizer": om}, tensors)
                if kill_after and epoch == kill_after:
                    lg.warning("%s=%d: killing this process (test hook)", KILL_ENV, kill_after)
                    for h in logging.getLogger().handlers:
                        h.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            if stopped_early:
                lg.info("early stop after epoch %d: no validation improvement for %d "
                        "epochs; best epoch %d", epoch, patience, best_epoch)
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return TrainResult(history, best_epoch, len(history), stopped_early, resumed_from,
                       val_set is not None and len(val_set) > 0, trainable)


def predict(net: FinetuneNet, data: ImageSet, batch_size: int = 64,
            device: torch.device | None = None, precision: str = "auto",
            workers: int = 2) -> np.ndarray:
    """Class probabilities (N x C, float64)."""
    from neopain.features.extract import autocast_dtype

    device = device or torch.device("cpu")
    amp = autocast_dtype(device, precision)
    net.to(device).eval()
    out = np.zeros((len(data), net.head[-1].out_features))
    with torch.inference_mode():
        for idx, batch in decoded_batches(data.images, range(len(data)), net.input_size,
                                   batch_size, workers):
            with _autocast(device, amp):
                logits = net(to_input(batch, device))
            out[idx] = torch.softmax(logits.float(), 1).cpu().numpy()
    return out



def job_key(cfg: Mapping[str, Any], data_fp: str, parent: Mapping[str, Any], extra: Any = None
            ) -> str:
    return provenance.config_hash({"settings": {k: cfg[k] for k in RESULT_KEYS if k in cfg},
                                   "data": data_fp, "parent": parent.get("sha256"),
                                   "extra": extra})


def fit(net: FinetuneNet, parent: Mapping[str, Any], train_set: ImageSet,
        val_set: ImageSet | None, cfg: Mapping[str, Any], *, device, precision: str,
        workers: int, resume_dir, logger=None, key_extra: Any = None) -> tuple[TrainResult, str]:
    """:func:`train` with the resume key of this job; (result, data fingerprint)."""
    fp = hashlib.sha256((train_set.fingerprint() + (val_set.fingerprint() if val_set
                                                    else "")).encode()).hexdigest()
    key = job_key(cfg, fp, parent, {"backbone": net.spec.name, "base": net.base_name,
                                    "layer": net.layer, "input_size": net.input_size,
                                    "n_classes": net.head[-1].out_features, "extra": key_extra})
    res = train(net, train_set, val_set, cfg, device=device, precision=precision,
                workers=workers, resume_dir=resume_dir, job_key=key, logger=logger)
    return res, fp


def summary(res: TrainResult) -> dict[str, Any]:
    """The deterministic part of a training result (for checkpoints and tables)."""
    return {"best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
            "stopped_early": res.stopped_early, "validation": res.validation,
            "train_loss": [round(h["train_loss"], 6) for h in res.history],
            "val_loss": [round(h["val_loss"], 6) for h in res.history if "val_loss" in h]}
