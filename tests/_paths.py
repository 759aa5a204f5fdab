"""Where the tests find the checkout and the shared material: one place, whatever the depth
of the test module (tests/unit, tests/workflow) that imports it."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SRC = REPO / "src"
WEIGHTS = REPO / "resources" / "weights"   # `make mesh-weights` and friends put files here
FIXTURES = TESTS / "fixtures"
SHARED = REPO.parent / "shared"            # ../shared beside the checkout (read-only, tests only)
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"
SHARED_REFERENCE = SHARED / "reference"
