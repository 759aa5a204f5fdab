"""Which rows of a video's per-frame table are keyframes: the one keyframe filter that
deep features (:mod:`neopain.features.extract`), texture descriptors
(:mod:`neopain.features.texture`), facial actions (:mod:`neopain.features.actions`) and
fine-tuning (:mod:`neopain.finetune.data`) apply, given the table written by
:mod:`neopain.faces.keyframes`."""

from __future__ import annotations

import pyarrow as pa


def keyframe_rows(crops: pa.Table, keyframes: pa.Table) -> list[int]:
    """Indices of the rows of ``crops`` (column ``frame``) whose frame ``keyframes`` keeps
    (columns ``frame``, ``keep``), in the crop table's order."""
    kept = keyframes.filter(keyframes.column("keep"))
    keep_frames = set(kept.column("frame").to_pylist())
    return [i for i, f in enumerate(crops.column("frame").to_pylist()) if f in keep_frames]
