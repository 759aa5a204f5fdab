"""The per-frame intensity model over the facial actions (neopain.learn.intensity)."""

import numpy as np
import pandas as pd

from neopain.learn.intensity import fold_intensity, summary_markdown
from neopain.learn.split import fold_subjects, make_split


def frames_task(seed=0, n_subjects=8, frames=30):
    """Pain videos rise and fall in a per-frame action ``a`` (a grimace), rest videos stay
    low; feature 0 = a + noise, feature 1 = noise, 'pspi' = a (the composite's answer)."""
    rng = np.random.default_rng(seed)
    X, rows, act = [], [], []
    for s in range(n_subjects):
        for v, y in enumerate((0, 1)):
            a = y * np.sin(np.linspace(0, np.pi, frames)) ** 2
            for f in range(frames):
                X.append([a[f] + rng.normal(0, 0.2), rng.normal(), a[f]])
                rows.append((f"s{s}_v{v}", f"s{s}", y, f, f / 30.0))
                act.append(a[f])
    meta = pd.DataFrame(rows, columns=["video_id", "subject_id", "y", "frame", "timestamp"])
    return np.asarray(X), meta, np.asarray(act)


def test_out_of_fold_intensity_follows_the_action_and_never_sees_the_test_subject():
    X, meta, act = frames_task()
    samples = meta.drop_duplicates("video_id").assign(
        label=lambda d: np.where(d["y"] == 1, "pain", "rest"))
    split = make_split(samples, "loso", {"kind": "loso"})
    seen = []
    res = fold_intensity(X, meta, split, ["au_x", "noise", "pspi"],
                         audit=lambda fold, subj: seen.append((fold, subj)))
    fr = res["frames"]
    assert len(fr) == len(meta) and fr["fold"].nunique() == 8   # every frame, out of fold
    for fold, subj in seen:
        train, test = fold_subjects(split, fold)
        assert subj == set(train) and not subj & set(test)
    # within the pain videos the intensity rises and falls with the action
    pain = fr[fr["y"] == 1].merge(meta.assign(act=act)[["video_id", "frame", "act"]])
    assert pain[["intensity", "act"]].corr(method="spearman").iloc[0, 1] > 0.9
    s = res["summary"].iloc[0]
    assert s["video_auc_intensity"] == 1.0 and s["frame_auc_intensity"] > 0.8
    np.testing.assert_array_equal(fr["pspi"], X[:, 2][fr.index])  # passed through as is
    coef = res["coefficients"]
    assert (coef["au_x"] + coef["pspi"] > 5 * coef["noise"].abs()).all()
    md = summary_markdown(res["summary"], coef)
    assert "| loso | 480 | 16 | 8 |" in md and "`pspi` +" in md
