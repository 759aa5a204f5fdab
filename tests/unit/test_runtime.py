"""neopain.core.runtime.keep_freed_memory and neopain.features.tables.fixed_size_list."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import _paths
from neopain.features.tables import feature_matrix, fixed_size_list

SRC = str(_paths.SRC)

# a conv stack whose activations (32 x 16 x 64 x 64 float32 = 8 MiB) are freed and
# re-allocated at every layer of every pass, as in a CNN forward over a batch
PROBE = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
tuned = {}
if sys.argv[2] == "tuned":
    from neopain.core.runtime import keep_freed_memory
    tuned = keep_freed_memory()
    assert keep_freed_memory() is tuned  # idempotent
net = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)]).eval()
x = torch.rand(int(sys.argv[3]), 16, 64, 64)
with torch.inference_mode():
    for _ in range(3):
        net(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        net(x)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "tuned": tuned}))
"""


def probe(mode: str, batch: int = 32, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, SRC, mode, str(batch)], check=True,
                         env=env,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc mallopt only")
@pytest.mark.parametrize("batch", [32, 256])  # 8 MiB and 64 MiB (above glibc's mmap cap)
def test_keep_freed_memory_stops_page_faults_between_passes(batch):
    default = probe("defaults", batch)
    # the tuned process's fewest faults of two runs: on a busy machine the kernel's
    # reclaim can fault a tuned heap's pages back in (CI once saw 6,142 tuned vs 67,200
    # default faults, 11x fewer, in one run)
    runs = [probe("tuned", batch) for _ in range(2)]
    assert all(t["tuned"] == {"mmap_max": 0, "trim_threshold": 2**31 - 1} for t in runs)
    tuned = min(t["faults"] for t in runs)
    # defaults: activations are mmap'd afresh (batch * 64 pages each, 10 passes); at least
    # half of that is asked, since transparent huge pages (kernel, memory state) can serve
    # part of it with fewer faults (CI once saw 14,199 of 20,480 on a loaded machine)
    assert default["faults"] > 5 * batch * 64, default
    assert tuned < default["faults"] / 10, (default, runs)


def test_fixed_size_list_wraps_the_matrix_without_copy():
    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    col = fixed_size_list(m)
    assert col.type == pa.list_(pa.float32(), 3) and len(col) == 4
    assert col.values.buffers()[1].address == m.ctypes.data  # zero copy
    np.testing.assert_array_equal(feature_matrix(pa.table({"features": col})), m)
    h = fixed_size_list(m.astype(np.float16))
    assert h.type == pa.list_(pa.float16(), 3)
    np.testing.assert_array_equal(np.asarray(h.values.to_numpy()).reshape(4, 3), m)
    # a non-contiguous view is copied once, still with the right values
    np.testing.assert_array_equal(
        feature_matrix(pa.table({"features": fixed_size_list(m[:, ::2])})), m[:, ::2])
    with pytest.raises(ValueError, match="float64"):
        fixed_size_list(m.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(12,\)"):
        fixed_size_list(m.ravel())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc mallopt only")
def test_keep_freed_memory_can_be_switched_off():
    import os

    off = probe("tuned", 32, env={**os.environ, "NEOPAIN_GLIBC_MALLOC": "defaults"})
    assert off["tuned"] == {} and off["faults"] > 5 * 32 * 64
