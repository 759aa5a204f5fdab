"""Synthetic crop tables for tests (known content, CROP_SCHEMA)."""

import numpy as np
import pyarrow as pa

from neopain.faces.crop import CROP_SCHEMA, encode_jpeg


def crops_table(images):
    n = len(images)
    return pa.table({
        "frame": pa.array(range(n), pa.int32()),
        "timestamp": pa.array([i / 30 for i in range(n)], pa.float64()),
        "jpeg": pa.array([encode_jpeg(im) for im in images], pa.binary()),
        "matrix": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(6 * n, np.float32)), 6),
        "landmarks": pa.FixedSizeListArray.from_arrays(
            pa.array(np.zeros(10 * n, np.float32)), 10),
    }, schema=CROP_SCHEMA)
