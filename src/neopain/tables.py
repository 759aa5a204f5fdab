"""Reading the gathered feature tables (no torch import needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def feature_matrix(table: pa.Table) -> np.ndarray:
    """The ``features`` column as an (n_rows, dim) float32 matrix."""
    col = table.column("features").combine_chunks()
    d = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, d).astype(np.float32)
