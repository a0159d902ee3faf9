"""The Dockerfile builds a torch-free image that serves and recognises (where a Docker engine runs)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "hmer-test-image"


def engine_runs() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@pytest.mark.skipif(not engine_runs(), reason="no Docker engine runs here (the client alone cannot build)")
def test_the_image_builds_and_reads_a_bundled_sample_without_torch():
    build = subprocess.run(["docker", "build", "-t", IMAGE, str(ROOT)], capture_output=True, text=True, timeout=1500)
    assert build.returncode == 0, build.stderr[-2000:]
    try:
        def run(*cmd):
            return subprocess.run(["docker", "run", "--rm", IMAGE, *cmd], capture_output=True, text=True, timeout=300)

        sample = ("import hmer_runtime, pathlib, subprocess; "
                  "folder = pathlib.Path(hmer_runtime.__file__).parent; "
                  "subprocess.run(['hmer-run', str(folder / 'samples' / 'x2.png')])")
        assert run("python", "-c", sample).stdout.strip() == "x ^ { 2 } + 2 x + 1"
        assert run("python", "-c", "import torch").returncode != 0  # the runtime image carries no torch
        assert run("hmer-serve", "--version").returncode == 0
        train = run("hmer-train", "--version")  # a training command names the extra it needs
        assert "pip install 'hmer[train]'" in train.stderr or train.returncode == 0
    finally:
        subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True, timeout=120)
