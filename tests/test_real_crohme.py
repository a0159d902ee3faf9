"""Real CROHME archives: every file reads and renders, counts match. Skipped without ../shared."""

import pytest

from hmer_runtime.errors import HmerError
from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.render import render_ink
from hmer_runtime.inputs.sources import iter_source
from hmer_runtime.text.latex import LatexError, tokenize

EXPECTED = {"train": (8836, {"MfrDB3088.inkml"}), "2013": (671, set()), "2014": (986, set())}


@pytest.mark.realdata
@pytest.mark.parametrize("split", ["train", "2013", "2014"])
def test_every_file_reads_and_renders(crohme_dir, split):
    files, unreadable, no_truth, bad_latex = 0, set(), 0, 0
    for sample in iter_source(crohme_dir / f"crohme-{split}.tar.gz"):
        files += 1
        try:
            ink = sample.load()
        except HmerError:
            unreadable.add(sample.name.rsplit("/", 1)[-1])
            continue
        assert isinstance(ink, Ink)
        image = render_ink(ink)
        assert image.ndim == 2 and image.min() < 128
        if ink.truth is None:
            no_truth += 1
            continue
        try:
            tokenize(ink.truth)
        except LatexError:
            bad_latex += 1
    count, known_unreadable = EXPECTED[split]
    assert files == count
    # The only unreadable file in the release is an empty one (MfrDB3088, 0 bytes).
    assert unreadable == known_unreadable
    assert no_truth + bad_latex <= 3
