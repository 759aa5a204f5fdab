"""The images fine-tuning learns from: the keyframe crops of a study's videos, or an
auxiliary labelled expression set (cascade stage 1), as an :class:`ImageSet` of encoded
images with their labels and ids.  Crops are decoded batch by batch during training
(:func:`neopain.finetune.train.decoded_batches`)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from neopain.core import provenance
from neopain.features.keyframe_crops import keyframe_rows


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
        kf = pq.read_table(keyframes[vid], columns=["frame", "keep"])
        ct = pq.read_table(crops[vid], columns=["frame", "jpeg"])
        fr = ct.column("frame").to_pylist()
        jp = ct.column("jpeg")
        for i in keyframe_rows(ct, kf):
            images.append(jp[i].as_py())
            ys.append(int(row["label"] == positive_label))
            subj.append(str(row["subject_id"]))
            vids.append(str(vid))
            frames.append(int(fr[i]))
    return ImageSet(images, np.asarray(ys, np.int64), np.asarray(subj, dtype=object),
                    np.asarray(vids, dtype=object), np.asarray(frames, np.int32),
                    (negative[0], positive_label))


def per_video(video_ids: Sequence[str], files: Sequence[str | os.PathLike], what: str
              ) -> dict[str, str | os.PathLike]:
    """video_id -> its ``what`` table, from two lists in the same order."""
    if len(files) != len(video_ids):
        shown = ", ".join(map(str, list(video_ids)[:5])) + (", ..." if len(video_ids) > 5 else "")
        raise ValueError(f"{len(files)} {what} tables for {len(video_ids)} videos ({shown})")
    return dict(zip(video_ids, files))


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
