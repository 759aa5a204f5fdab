"""One subject followed through frames: the tracker's decision per frame
(:func:`associate`) and its detector calls over rotated views (:class:`SubjectTracker`).

1. *Search* (no subject tracked, or lost for ``reacquire_after`` frames): full views at
   every angle of ``orientations``; detections of the same face from several angles are
   merged (IoU > 0.3, highest score kept); the subject is the one with the largest
   ``score x area`` among those with ``score >= acquire_score``, confirmed (``verify``) by
   detecting it again in an upright ROI view of the same frame (false detections at odd
   angles rarely survive that).
2. *Tracking* (a subject is tracked): an ROI view around the last accepted face (plus, when
   the caller prefetches them, full views at the current orientation).  Among the
   candidates with ``score >= min_score``, the one nearest (centre distance / last face
   size, ties by IoU) the last accepted face is taken; it is accepted unless that distance
   exceeds ``max_jump * sqrt(1 + missed)`` or its size changed by more than
   ``max_scale_change`` (reason ``jump``).
3. The orientation kept across frames is the multiple of 90 degrees nearest the accepted
   face's roll; it orders the next search and sets the full views.

Face-mesh check: with the mesh refiner, a face is accepted only when the mesh's
face-presence probability reaches ``min_mesh_score``; below it the frame is ``occluded``
(a subject is tracked) or ``low_score``.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from neopain.faces.detectors.detection import Detection
from neopain.faces.geometry import (Views, centre_distance, iou, map_back, merge_faces,
                                    orientation_of, roll_degrees)
from neopain.faces.trackparams import TrackParams
from neopain.faces.video import Frame

__all__ = ["SubjectTracker", "associate", "skipped_row"]


def associate(prev: Detection | None, active: bool, dets: Sequence[Detection],
              params: TrackParams, missed: int = 0) -> tuple[str, Detection | None]:
    """The tracker's decision for one frame: ``(reason, chosen)``.

    ``prev`` is the last accepted face, ``active`` whether the subject is still
    tracked (seen less than ``reacquire_after`` frames ago), ``missed`` the number
    of frames since it was accepted.  Pure function (see the module docstring).
    """
    if not active or prev is None:
        good = [d for d in dets if d.score >= params.start_score]
        if not dets:
            return "no_face", None
        if not good:
            return "low_score", max(dets, key=lambda d: d.score)
        return "ok", max(good, key=lambda d: d.score * d.area)
    good = [d for d in dets if d.score >= params.min_score]
    if not good:
        # the subject is tracked but not visible where it is
        return "occluded", (max(dets, key=lambda d: d.score) if dets else None)
    chosen = min(good, key=lambda d: (centre_distance(prev, d), -iou(prev.box, d.box)))
    ratio = chosen.size / max(prev.size, 1e-6)
    far = centre_distance(prev, chosen) > params.max_jump * math.sqrt(1 + missed)
    if far or max(ratio, 1 / max(ratio, 1e-9)) > params.max_scale_change:
        return "jump", chosen
    return "ok", chosen


class SubjectTracker:
    """The state of one subject's track and the detector calls that feed :func:`associate`."""

    def __init__(self, detector, params: TrackParams, refiner=None):
        self.det = detector
        self.p = params
        self.refiner = refiner
        self.prev: Detection | None = None
        self.missed = 0
        self.orientation = params.orientations[0]
        self.since_search = 0
        self.calls = {"search": 0, "roi": 0, "full": 0}

    # --- detector calls ------------------------------------------------------------
    def detect_views(self, views: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Detection]]:
        """Detections of ``(view image, A)`` pairs (batched when the backend can), mapped
        back to frame pixels."""
        imgs = [v[0] for v in views]
        if len(imgs) > 1 and hasattr(self.det, "detect_batch"):
            raw = self.det.detect_batch(imgs)
        else:
            raw = [self.det.detect(im) for im in imgs]
        out = []
        for (_, A), dets in zip(views, raw):
            Ainv = cv2.invertAffineTransform(A)
            out.append([map_back(d, Ainv) for d in dets])
        return out

    def search(self, views: Views) -> list[Detection]:
        self.calls["search"] += 1
        order = [self.orientation] + [o for o in self.p.orientations if o != self.orientation]
        found = self.detect_views([views.full(o) for o in order])
        return merge_faces(d for ds in found for d in ds)

    def full(self, views: Views) -> list[Detection]:
        self.calls["full"] += 1
        return self.detect_views([views.full(self.orientation)])[0]

    def roi(self, views: Views, prev: Detection) -> list[Detection]:
        self.calls["roi"] += 1
        roll = roll_degrees(prev.landmarks)
        img, A = views.roi(prev.centre, prev.size, roll, self.p.roi_size, self.p.roi_scale)
        if hasattr(self.det, "detect_roi"):  # a model made for faces filling the view
            Ainv = cv2.invertAffineTransform(A)
            return [map_back(d, Ainv) for d in self.det.detect_roi(img)]
        return self.detect_views([(img, A)])[0]

    # --- one frame -----------------------------------------------------------------
    def _finish(self, frame: Frame, reason: str, chosen: Detection | None, n_faces: int,
                mode: str, views: Views) -> dict:
        ok = reason == "ok"
        if ok and self.refiner is not None:
            chosen = self.refiner.refine(frame.image, chosen)
            if chosen.mesh_score is not None and chosen.mesh_score < (self.p.min_mesh_score
                                                                      or 0.0):
                # the mesh finds no face there: a face-like pattern, or the face hidden
                ok, reason = False, ("occluded" if self.active else "low_score")
        if ok:
            self.prev, self.missed = chosen, 0
            self.orientation = orientation_of(roll_degrees(chosen.landmarks))
        else:
            self.missed += 1
        return {"frame": frame.index, "timestamp": frame.timestamp, "ok": ok, "reason": reason,
                "det": chosen, "n_faces": n_faces, "mode": mode,
                "orientation": self.orientation if chosen is None else
                orientation_of(roll_degrees(chosen.landmarks))}

    @property
    def active(self) -> bool:
        return self.prev is not None and self.missed < self.p.reacquire_after

    def track_step(self, frame: Frame, views: Views, full_dets: list[Detection] | None,
                   ref: Detection | None = None) -> dict:
        """A frame while a subject is tracked (``ref``: face to track from)."""
        prev = ref or self.prev
        dets: list[Detection] = []
        mode = "roi"
        if self.p.roi:
            dets = self.roi(views, prev)
        if full_dets is not None:
            dets = merge_faces(list(dets) + list(full_dets))
            mode = "full" if not self.p.roi else mode
        elif not self.p.roi:
            dets, mode = self.full(views), "full"
        reason, chosen = associate(prev, True, dets, self.p, 0 if ref is not None else self.missed)
        n_faces = len(full_dets) if full_dets is not None else len(dets)
        return self._finish(frame, reason, chosen, n_faces, mode, views)

    def search_step(self, frame: Frame, views: Views) -> dict:
        dets = self.search(views)
        reason, chosen = associate(None, False, dets, self.p)
        if reason == "ok" and self.p.verify and self.p.roi:
            reason, chosen = self._verify(views, dets, chosen)
        return self._finish(frame, reason, chosen, len(dets), "search", views)

    def _verify(self, views: Views, dets: list[Detection], first: Detection):
        """Confirm a new subject by detecting it again in an upright ROI view."""
        good = sorted((d for d in dets if d.score >= self.p.start_score),
                      key=lambda d: -d.score * d.area)[:3]
        for cand in good:
            again = [d for d in self.roi(views, cand) if d.score >= self.p.min_score
                     and centre_distance(cand, d) <= self.p.max_jump]
            if again:
                return "ok", max(again, key=lambda d: d.score)
        return "low_score", first


def skipped_row(frame: Frame, orientation: int) -> dict:
    """The row of a frame skipped by ``search_every`` while no subject is tracked."""
    return {"frame": frame.index, "timestamp": frame.timestamp, "ok": False, "reason": "no_face",
            "det": None, "n_faces": 0, "mode": "skip", "orientation": orientation}
