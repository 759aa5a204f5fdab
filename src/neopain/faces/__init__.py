"""From video to faces: decoding, detectors, tracking, aligned crops, keyframes, QC."""
