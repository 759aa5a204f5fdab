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
