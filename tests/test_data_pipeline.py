import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from synth import random_expressions, write_inkml_set

from hmer_runtime.errors import DatasetError, ImageError
from hmer_runtime.inputs.preprocess import PreprocessConfig, load_image, preprocess
from hmer_runtime.inputs.sources import iter_source, resolve_split
from hmer_train.cli_data import main as data_cli
from hmer_train.prepared import prepare


@pytest.fixture
def inkml_dir(tmp_path):
    d = tmp_path / "ink"
    write_inkml_set(d, random_expressions(6, seed=1))
    (d / "broken.inkml").write_text("<ink><trace>1 2, 3 4")
    (d / "dot.inkml").write_text('<ink><annotation type="truth">$x$</annotation><trace>5 5</trace></ink>')
    return d


def test_no_torch_in_runtime():
    code = ("import sys, hmer_runtime, hmer_runtime.inputs.inkml, hmer_runtime.inputs.render, "
            "hmer_runtime.text.latex, hmer_runtime.text.vocab, hmer_runtime.text.metrics, "
            "hmer_runtime.inputs.preprocess, hmer_runtime.inputs.sources, "
            "hmer_train.cli_data; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_folder_tar_and_zip_sources_agree(inkml_dir, tmp_path):
    with tarfile.open(tmp_path / "ink.tar.gz", "w:gz") as tar:
        tar.add(inkml_dir, arcname="ink")
    with zipfile.ZipFile(tmp_path / "ink.zip", "w") as zf:
        for f in sorted(inkml_dir.iterdir()):
            zf.write(f, f"ink/{f.name}")
    labels = [sorted((s.name.split("/")[-1], s.latex) for s in iter_source(p))
              for p in (inkml_dir, tmp_path / "ink.tar.gz", tmp_path / "ink.zip")]
    assert labels[0] == labels[1] == labels[2]
    assert len(labels[0]) == 8


def test_prepared_cache_counts_errors_and_rebuilds_on_change(inkml_dir, tmp_path):
    cache = tmp_path / "cache"
    ps = prepare(inkml_dir, cache_root=cache, progress=False)
    assert len(ps) == 6 and len(ps.errors) == 2
    assert any("broken.inkml" in e for e in ps.errors) and any("single point" in e for e in ps.errors)
    img = ps.image(0)
    assert img.dtype == np.float32 and img.max() == pytest.approx(1.0) and img[0, 0] == 0.0
    again = prepare(inkml_dir, cache_root=cache, progress=False)
    assert again.path == ps.path and again.tokens == ps.tokens  # served from the cache
    write_inkml_set(inkml_dir / "more", random_expressions(2, seed=9))
    grown = prepare(inkml_dir, cache_root=cache, progress=False)
    assert grown.path != ps.path and len(grown) == 8
    assert not list(cache.glob("*/*.pkl")) and not list(cache.glob("*/*.pickle"))


def test_prepare_in_worker_processes_matches_one_process(inkml_dir, tmp_path):
    one = prepare(inkml_dir, cache_root=tmp_path / "c1", progress=False, workers=0)
    many = prepare(inkml_dir, cache_root=tmp_path / "c2", progress=False, workers=3)
    assert one.names == many.names and one.tokens == many.tokens
    assert np.array_equal(one.shapes, many.shapes) and np.array_equal(one.pixels, many.pixels)
    assert sorted(one.errors) == sorted(many.errors) and len(many.errors) == 2


def test_render_command_writes_offline_format_and_reads_back(inkml_dir, tmp_path):
    out = tmp_path / "offline"
    r = CliRunner().invoke(data_cli, ["render", str(inkml_dir), str(out)])
    assert r.exit_code == 1 and "rendered 6 expressions" in r.output and "2 failed" in r.output
    assert len(list((out / "images").glob("*.png"))) == 6
    # The offline folder is itself a source, with the same labels.
    samples = list(iter_source(out))
    assert len(samples) == 6 and all(s.kind == "image" for s in samples)
    ink_labels = sorted(s.latex for s in iter_source(inkml_dir) if s.latex and s.latex != "x")
    assert sorted(s.latex for s in samples) == ink_labels
    # Rendered PNG -> preprocess == ink -> render -> preprocess (training and runtime agree).
    ps = prepare(out, cache_root=tmp_path / "c1", progress=False)
    pi = prepare(inkml_dir, cache_root=tmp_path / "c2", progress=False)
    i, j = ps.names.index("expr_000"), pi.names.index("expr_000.inkml")
    assert np.array_equal(ps.image(i), pi.image(j))


def test_concat_keeps_each_samples_image_ink_and_label(inkml_dir, tmp_path):
    ink = prepare(inkml_dir, cache_root=tmp_path / "c1", progress=False)
    CliRunner().invoke(data_cli, ["render", str(inkml_dir), str(tmp_path / "offline")])
    images = prepare(tmp_path / "offline", cache_root=tmp_path / "c2", progress=False)
    odd = ink.select(np.array([4, 1]))  # a view: its offsets point into the whole pixel array
    for a, b in ((odd, images), (images, odd), (odd, odd)):
        both = a.concat(b)
        assert len(both) == len(a) + len(b) and both.errors == a.errors + b.errors
        for k, (s, i) in enumerate([(a, i) for i in range(len(a))] + [(b, i) for i in range(len(b))]):
            assert both.names[k] == s.names[i] and both.tokens[k] == s.tokens[i]
            assert np.array_equal(both.image(k), s.image(i))
            want, got = s.ink(i), both.ink(k)
            assert (want is None) == (got is None)
            if want is not None:
                assert all(np.array_equal(x, y) for x, y in zip(want.traces, got.traces, strict=True))


def test_a_missing_source_fails_prepare_in_worker_processes_too(tmp_path):
    """A source that fails inside the worker pool's feeder is raised, not left hanging, and
    errors cross processes whole."""
    import pickle

    err = pickle.loads(pickle.dumps(ImageError("a.png", "too large", 413)))
    assert (type(err), str(err), err.source, err.status) == (ImageError, "a.png: too large", "a.png", 413)
    with pytest.raises(DatasetError, match="nowhere"):
        prepare(tmp_path / "nowhere", cache_root=tmp_path / "cache", progress=False, workers=2)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DatasetError, match="broken.tar.gz: unreadable archive"):
        prepare(broken, cache_root=tmp_path / "cache", progress=False, workers=2)


def test_hme100k_layout(tmp_path):
    root = tmp_path / "datasets" / "HME100K"
    (root / "test_images").mkdir(parents=True)
    lines = []
    for i, latex in enumerate(["x + 1", "\\frac { 1 } { 2 }"]):
        img = np.full((40, 80), 255, np.uint8)
        img[15:25, 10 + 10 * i:60] = 0
        Image.fromarray(img).save(root / "test_images" / f"img_{i}.jpg")
        lines.append(f"img_{i}.jpg\t{latex}")
    (root / "test_labels.txt").write_text("\n".join(lines) + "\n")
    src = resolve_split("HME100K", "test", roots=[str(tmp_path / "datasets")])
    ps = prepare(src, cache_root=tmp_path / "cache", progress=False)
    assert ps.names == ["img_0", "img_1"] and ps.tokens[1][0] == "\\frac" and not ps.errors


def test_dataset_not_found_shows_layout(tmp_path):
    with pytest.raises(DatasetError) as e:
        resolve_split("CROHME", "train", roots=[str(tmp_path)])
    assert "expected <root>/CROHME/" in str(e.value) and str(tmp_path) in str(e.value)


def test_crohme_name_resolves_archives(tmp_path):
    d = tmp_path / "CROHME"
    d.mkdir()
    (d / "crohme-2014.tar.gz").write_bytes(b"")
    (d / "train").mkdir()
    assert resolve_split("CROHME", "2014", roots=[str(tmp_path)]) == d / "crohme-2014.tar.gz"
    assert resolve_split("crohme", "train", roots=[str(tmp_path)]) == d / "train"


def test_preprocess_inverts_light_on_dark_and_handles_alpha():
    img = np.full((60, 120), 255, np.uint8)
    img[20:40, 30:90] = 0
    a = preprocess(img)
    b = preprocess(255 - img)
    rgba = Image.new("RGBA", (120, 60), (0, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (30, 20, 90, 40))
    c = preprocess(rgba)
    assert a.shape == b.shape == c.shape == (20 + 16, 60 + 16)
    assert np.allclose(a, b) and np.allclose(a, c, atol=0.01)


def test_preprocess_limits_and_errors(tmp_path):
    big = np.full((100, 4000), 255, np.uint8)
    big[40:60, 10:3990] = 0
    out = preprocess(big, PreprocessConfig(max_height=128, max_width=512))
    assert out.shape[1] <= 512 and out.shape[0] <= 128
    with pytest.raises(ImageError, match="no ink"):
        preprocess(np.full((10, 10), 255, np.uint8), name="blank.png")
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(ImageError, match="fake.png: not a readable image"):
        load_image(tmp_path / "fake.png")
    Image.new("L", (8000, 6000)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="over the"):
        load_image(tmp_path / "bomb.png")


def test_stats_and_vocab_commands(inkml_dir, tmp_path):
    r = CliRunner().invoke(data_cli, ["vocab", str(inkml_dir), str(tmp_path / "v.json")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(data_cli, ["stats", str(inkml_dir), "--vocab", str(tmp_path / "v.json")])
    assert r.exit_code == 0, r.output
    assert "files       8   usable 6   errors 2" in r.output and "unknown     none" in r.output


def test_missing_source_is_one_error_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "hmer_train.cli_data", "stats", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip().count("\n") == 0 and "nope: not found" in p.stderr
