import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

CROHME = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "crohme"


@pytest.fixture
def crohme_dir() -> Path:
    """The real CROHME archives beside the checkout; tests using this skip when absent."""
    if not (CROHME / "crohme-2014.tar.gz").is_file():
        pytest.skip("CROHME data not found at ../shared/data/crohme")
    return CROHME
