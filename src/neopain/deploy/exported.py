"""A loaded, verified artefact: its configuration, calibrator, threshold and NumPy scorer.

:func:`load` verifies an artefact (:func:`neopain.deploy.artefact.read_artefact`) and
returns an :class:`ExportedModel`: frame-level models score full feature vectors
(selected columns -> :class:`neopain.deploy.arrays.ScoreModel`); video-level ones hold a
:class:`neopain.deploy.videoexport.VideoScorer`.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from neopain.deploy.arrays import ScoreModel
from neopain.deploy.artefact import ArtefactError, read_artefact
from neopain.learn.calibrate import Calibrator


class ExportedModel:
    """A loaded, verified artefact: the configuration and the NumPy scorer."""

    def __init__(self, path: Path, manifest: dict, members: dict[str, bytes], sha256: str):
        self.path = Path(path)
        self.manifest = manifest
        self.sha256 = sha256
        try:
            self.info = json.loads(members["model.json"])
            self.provenance = json.loads(members["provenance.json"])
        except (KeyError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtefactError(f"{path}: model.json / provenance.json unreadable ({exc})") \
                from None
        self.arrays: dict[str, np.ndarray] = {}
        for name, b in members.items():
            if name.startswith("arrays/") and name.endswith(".npy"):
                try:
                    self.arrays[name[7:-4]] = np.load(io.BytesIO(b), allow_pickle=False)
                except ValueError as exc:
                    raise ArtefactError(f"{path}: member {name!r} is not a plain NumPy array "
                                        f"({exc})") from None
        self._weights = {n[8:]: b for n, b in members.items() if n.startswith("weights/")}
        #: "frame" (frame scores from selected features) or "video" (neopain.deploy.videoexport)
        self.level = str(self.info.get("level", "frame"))
        self.video = None
        if self.level == "video":
            from neopain.deploy.videoexport import VideoScorer

            self.video = VideoScorer(self.info["video"], self.arrays)
            self.features = None
            self.scorer = self.video.model
        else:
            self.features = np.asarray(self.arrays["selected_features"], dtype=np.int64)
            self.scorer = ScoreModel(self.info["model"], self.arrays)
        self.calibrator = Calibrator.from_dict(self.info["calibration"])
        self.threshold = float(self.info["threshold"]["value"])

    @property
    def labels(self) -> tuple[str, str]:
        """(negative label, positive label)."""
        pos = self.info["positive_label"]
        neg = [lab for lab in self.info["labels"] if lab != pos][0]
        return neg, pos

    def score(self, F: np.ndarray) -> np.ndarray:
        """Raw classifier scores of full feature vectors ``F`` (n x feature_dim)."""
        F = np.asarray(F)
        dim = int(self.info["backbone"]["feature_dim"])
        if F.ndim != 2 or F.shape[1] != dim:
            raise ValueError(f"features must be n x {dim}, got {F.shape}")
        if self.video is not None:
            raise ValueError(f"{self.path}: a video-level model scores recordings, not single "
                             "frames: use .video.score_frames(F, reference)")
        return self.scorer.positive_score(np.asarray(F[:, self.features], dtype=np.float64))

    def probability(self, F: np.ndarray) -> np.ndarray:
        return self.calibrator.apply(self.score(F))

    def embedded_weights(self) -> dict[str, bytes]:
        return dict(self._weights)

    def summary(self) -> str:
        b, c = self.info["backbone"], self.info["configuration"]
        if self.video is not None:
            v = self.info["video"]
            return (f"{self.path.name} (sha256 {self.sha256[:16]}..., format "
                    f"{self.manifest['format_version']}): video-level {b['name']}/"
                    f"{b['layer']}, baseline {v['baseline']}, pooling {v['pooling']} "
                    f"{v['stats']}, "
                    + ("all features" if c["selector"] == "all" else
                       f"{c['selector']}({c['k']})")
                    + f" {c['model']} {c['params']}, "
                    f"calibration {self.calibrator.method}, threshold {self.threshold:.4f}")
        return (f"{self.path.name} (sha256 {self.sha256[:16]}..., format "
                f"{self.manifest['format_version']}): {b['name']}/{b['layer']} "
                f"{c['selector']}({c['k']}) {c['classifier']}, calibration "
                f"{self.calibrator.method}, threshold {self.threshold:.4f}")


def load(path: str | Path, expect_sha256: str | None = None) -> ExportedModel:
    """Verify and load an artefact (:class:`ArtefactError` on any problem)."""
    from neopain.core.provenance import sha256_file

    path = Path(path)
    manifest, members = read_artefact(path)
    digest = sha256_file(path)
    if expect_sha256 and not digest.startswith(expect_sha256.lower()):
        raise ArtefactError(f"{path}: sha256 {digest} is not the expected {expect_sha256}")
    return ExportedModel(path, manifest, members, digest)
