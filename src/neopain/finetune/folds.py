"""Training / validation / test rows of a fold.

A ``val_fraction`` of the fold's *training* subjects (never its test subjects),
stratified by subject label (:func:`validation_subjects`), is held out for early
stopping.  With fewer than two training subjects (or when holding one out would leave a
class without training rows) there is no validation: the last epoch is kept, and the log
and the checkpoint say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from neopain.finetune.data import ImageSet


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
