"""Shared fixtures. Real data lives in ../shared/data beside the checkout (tests only)."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (tests only; see README)")
    return SHARED_DATA


SHARED_MODELS = REPO.parent / "shared" / "models"


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not (SHARED_MODELS / "README.md").is_file():
        pytest.skip(f"shared test models not found at {SHARED_MODELS} (tests only; see README)")
    return SHARED_MODELS


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
