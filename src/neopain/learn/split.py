"""Subject-disjoint evaluation protocols.

A protocol turns the subjects of the sample sheet that have usable frames
(:func:`neopain.core.samples.usable_subjects`; the others are listed, with the reason, in the split's
``neopain.excluded`` metadata and ``results/qc/tracking.md``) into folds; each fold lists
every subject once with the role ``train`` or ``test``.  Kinds:

* ``holdout``: one fold; subjects are shuffled with ``seed`` and split so
  that about ``test_fraction`` of them are test subjects, stratified by the
  subject's label (majority label of its videos) where each label has at
  least two subjects (the paper: 16 train / 15 test infants);
* ``loso``: leave-one-subject-out, one fold per subject;
* ``group_kfold``: ``n_splits`` folds of subjects, stratified by label
  (``StratifiedGroupKFold`` with ``seed``).

:func:`check_disjoint` refuses any split that puts a subject on both sides;
:func:`iter_folds` is the one fold loop of the select, classify and fusion stages.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from neopain.core.samples import subject_labels

SPLIT_SCHEMA = pa.schema(
    [("protocol", pa.string()), ("fold", pa.int32()), ("subject_id", pa.string()),
     ("role", pa.string())]
)


class LeakageError(ValueError):
    """A subject appears on both sides of a fold."""


def make_split(samples: pd.DataFrame, name: str, spec: dict) -> pd.DataFrame:
    kind = spec.get("kind")
    subj = subject_labels(samples)
    subjects = list(subj.index)
    rows = []
    if kind == "holdout":
        frac = float(spec.get("test_fraction", 0.5))
        rng = np.random.default_rng(int(spec.get("seed", 0)))
        test: list[str] = []
        groups = [list(g.index) for _, g in subj.groupby(subj)]
        if all(len(g) >= 2 for g in groups):
            for g in groups:
                g = list(rng.permutation(g))
                n_test = min(max(1, int(round(frac * len(g)))), len(g) - 1)
                test += g[:n_test]
        else:
            perm = list(rng.permutation(subjects))
            n_test = min(max(1, int(round(frac * len(perm)))), len(perm) - 1)
            test = perm[:n_test]
        for s in subjects:
            rows.append((name, 0, s, "test" if s in test else "train"))
    elif kind == "loso":
        for f, held in enumerate(subjects):
            for s in subjects:
                rows.append((name, f, s, "test" if s == held else "train"))
    elif kind == "group_kfold":
        from sklearn.model_selection import StratifiedGroupKFold

        n_splits = int(spec.get("n_splits", 5))
        if n_splits > len(subjects):
            raise ValueError(
                f"protocol {name!r}: n_splits={n_splits} exceeds the {len(subjects)} subjects")
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True,
                                  random_state=int(spec.get("seed", 0)))
        y = subj.values
        for f, (_, te) in enumerate(cv.split(np.zeros(len(subjects)), y, groups=subjects)):
            test = {subjects[i] for i in te}
            for s in subjects:
                rows.append((name, f, s, "test" if s in test else "train"))
    else:
        raise ValueError(
            f"protocol {name!r}: unknown kind {kind!r} (known: holdout, loso, group_kfold)")
    if len(subjects) < 2:
        raise ValueError(f"protocol {name!r}: needs at least 2 subjects, found {len(subjects)}")
    df = pd.DataFrame(rows, columns=["protocol", "fold", "subject_id", "role"])
    check_disjoint(df)
    return df


def check_disjoint(split: pd.DataFrame) -> None:
    """Raise :class:`LeakageError` if any fold has a subject in train and test."""
    roles = split.groupby(["protocol", "fold", "subject_id"])["role"].nunique()
    bad = roles[roles > 1]
    if len(bad):
        (proto, fold, subj) = bad.index[0]
        raise LeakageError(
            f"protocol {proto!r} fold {fold}: subject {subj!r} is in both train and test")
    unknown = set(split["role"]) - {"train", "test"}
    if unknown:
        raise ValueError(f"unknown role(s) in split: {sorted(unknown)}")


def fold_subjects(split: pd.DataFrame, fold: int) -> tuple[set[str], set[str]]:
    part = split[split["fold"] == fold]
    train = set(part.loc[part["role"] == "train", "subject_id"])
    test = set(part.loc[part["role"] == "test", "subject_id"])
    if train & test:
        raise LeakageError(f"fold {fold}: subjects in both train and test: {sorted(train & test)}")
    return train, test


def iter_folds(split: pd.DataFrame, subjects) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(fold, train, test)`` for every fold of ``split`` in fold order: boolean masks
    over the rows whose subject ids are ``subjects`` (a row is training or test data by
    its subject, never by itself; a subject the fold does not list is in neither)."""
    subjects = pd.Series(np.asarray(subjects, dtype=object))
    for fold in sorted(split["fold"].unique()):
        train_s, test_s = fold_subjects(split, fold)
        yield fold, subjects.isin(train_s).to_numpy(), subjects.isin(test_s).to_numpy()
