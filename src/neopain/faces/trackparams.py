"""The tracker's settings (config.yaml ``track``): :class:`TrackParams`, checked when built.

Score thresholds ``min_score`` / ``acquire_score`` left unset (None) take the backend's
calibrated ``score_defaults`` (MTCNN 0.9 / 0.95, BlazeFace, SCRFD and MediaPipe 0.5 / 0.6);
``min_mesh_score`` left unset the backend's ``mesh_score_default`` (BlazeFace 0.5, others
0, off).  See :mod:`neopain.faces.track` for what each setting does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DEFAULT_REACQUIRE_AFTER", "ORIENTATIONS", "PARAM_KEYS", "TrackParams",
           "params_from_config"]

DEFAULT_REACQUIRE_AFTER = 15
ORIENTATIONS = (0, 90, 180, 270)


@dataclass(frozen=True)
class TrackParams:
    """Tracker settings (config.yaml ``track``; see the module docstring)."""

    min_score: float | None = None  #: None: the backend's ``score_defaults[0]``
    acquire_score: float | None = None  #: score to start a track; None: ``score_defaults[1]``
    max_jump: float = 0.5
    max_scale_change: float = 1.5
    reacquire_after: int = DEFAULT_REACQUIRE_AFTER
    max_side: int | None = 480
    orientations: tuple[int, ...] = ORIENTATIONS
    search_every: int = 5
    roi: bool = True
    roi_size: int = 128
    roi_scale: float = 2.0
    full_every: int = 0
    batch_size: int = 1
    smooth: bool = True
    smooth_min_cutoff: float = 1.5  #: Hz
    smooth_beta: float = 2.0  #: per (face size / s)
    cut_threshold: float = 0.08  #: scene cut: mean |diff| of 32x18 grey thumbnails; 0 = off
    verify: bool = True  #: confirm a new track by an upright ROI detection on the same frame
    #: face-mesh face-presence probability a face needs (None: the backend's
    #: ``mesh_score_default``, BlazeFace 0.5, others 0 = off)
    min_mesh_score: float | None = None

    def __post_init__(self):
        if self.reacquire_after < 1:
            raise ValueError(f"reacquire_after must be >= 1, got {self.reacquire_after}")
        if not self.orientations or any(o not in ORIENTATIONS for o in self.orientations):
            raise ValueError(f"orientations must be a non-empty subset of {ORIENTATIONS}, "
                             f"got {self.orientations}")
        if self.search_every < 1 or self.batch_size < 1 or self.full_every < 0:
            raise ValueError("search_every and batch_size must be >= 1, full_every >= 0")
        if self.max_side is not None and self.max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {self.max_side}")
        if self.roi_size < 32 or self.roi_scale < 1.0:
            raise ValueError("roi_size must be >= 32 and roi_scale >= 1")

    @property
    def start_score(self) -> float:
        return self.min_score if self.acquire_score is None else self.acquire_score

    def for_detector(self, detector) -> "TrackParams":
        """Fill unset score thresholds with the backend's calibrated defaults."""
        lo, hi = getattr(detector, "score_defaults", (0.9, 0.95))
        mesh = getattr(detector, "mesh_score_default", 0.0)
        return replace(self, min_score=lo if self.min_score is None else self.min_score,
                       acquire_score=hi if self.acquire_score is None else self.acquire_score,
                       min_mesh_score=mesh if self.min_mesh_score is None
                       else self.min_mesh_score)


PARAM_KEYS = tuple(TrackParams.__dataclass_fields__)


def params_from_config(cfg: dict[str, Any]) -> TrackParams:
    """:class:`TrackParams` from a ``track`` config section (keys it lacks: the defaults)."""
    kw = {k: cfg[k] for k in PARAM_KEYS if k in cfg}
    if "orientations" in kw:
        kw["orientations"] = tuple(int(o) for o in kw["orientations"])
    return TrackParams(**kw)
