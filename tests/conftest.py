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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight tiny CoMER model exported as a runtime model directory (shared, read-only)."""
    from tiny import random_checkpoint

    from hmer_export.exporter import export_checkpoint

    tmp = tmp_path_factory.mktemp("tiny-model")
    export_checkpoint(random_checkpoint(tmp, "comer"), tmp / "model", log=lambda s: None)
    return tmp / "model"
