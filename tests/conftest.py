"""Shared fixtures. Real data lives in ../shared/data beside the checkout (tests only).

tests/unit holds the library tests (no Snakemake), tests/workflow the tests that run
Snakemake (planning, dry runs, lint, whole-DAG runs); every test collected under
tests/workflow is marked ``workflow`` here (`make test-fast` runs tests/unit, `make
test-workflow` tests/workflow; docs/testing.md).  This folder is on ``sys.path`` (pytest's
prepend import mode), so the helpers beside this file (``_paths``, ``_tiny``, ...) import
by name from either subfolder.
"""

from pathlib import Path

import pytest

from _paths import REPO, SHARED_DATA, SHARED_MODELS, WEIGHTS

WORKFLOW_TESTS = Path(__file__).resolve().parent / "workflow"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if WORKFLOW_TESTS in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.workflow)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (tests only; see README)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not (SHARED_MODELS / "README.md").is_file():
        pytest.skip(f"shared test models not found at {SHARED_MODELS} (tests only; see README)")
    return SHARED_MODELS


@pytest.fixture(scope="module")
def mesh_dir() -> Path:
    """resources/weights with the default 468-point face mesh (`make mesh-weights`)."""
    from neopain.faces.mpmodels import MESH_FILE

    d = WEIGHTS
    if not (d / MESH_FILE).is_file():
        pytest.skip(f"{d / MESH_FILE} absent: run `make mesh-weights` (taken from the "
                    "pinned mediapipe wheel)")
    return d


@pytest.fixture(scope="session")
def videos(shared_data: Path) -> Path:
    """The shared real videos (../shared/data/videos)."""
    return shared_data / "videos"


@pytest.fixture(scope="session")
def ckplus48_mobilenet(shared_data):
    """(meta, X): the ckplus48 crops and their mobilenet_v2 penultimate features
    (bench/ckplus48_task.py documents the task), computed once per session."""
    import importlib.util

    from neopain.features.weightfiles import WeightsError

    spec = importlib.util.spec_from_file_location("ckplus48_task",
                                                  REPO / "bench" / "ckplus48_task.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    meta = mod.load_meta(shared_data)
    try:
        X = mod.mobilenet_features(shared_data, meta)
    except WeightsError as exc:
        pytest.skip(f"mobilenet_v2 weights not available: {exc}")
    return meta, X
