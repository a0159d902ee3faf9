"""The torch-free runtime: Recognizer, hmer-run, beam reordering, bad inputs, photo-like images."""

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synth import expression_strokes, write_inkml_set

from hmer_runtime.decoding.search import beam_search
from hmer_runtime.engine.model_spec import ModelSpec
from hmer_runtime.errors import HmerError, ImageError, ModelError
from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.preprocess import (
    PreprocessConfig,
    component_extents,
    match_stroke,
    preprocess,
    stroke_width,
    to_gray,
    written_symbol_size,
)
from hmer_runtime.inputs.render import RenderConfig, render_ink
from hmer_runtime.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir) -> Path:
    return tiny_model_dir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder of our own InkML files and PNG renders of them."""
    d = tmp_path_factory.mktemp("inputs")
    paths = write_inkml_set(d / "ink", [list("1+2"), list("x=7"), list("y-4")])
    for p in paths:
        from hmer_runtime.inputs.inkml import read_inkml

        Image.fromarray(render_ink(read_inkml(p), RenderConfig(symbol_px=20, line_width=2))).save(
            d / f"{p.stem}.png")
    return d


def test_runtime_never_imports_torch(model_dir, inputs):
    code = ("import sys; from hmer_runtime.recognizer import Recognizer; import hmer_runtime.cli_run; "
            f"r = Recognizer({str(model_dir)!r}, provider='cpu'); r.recognize({str(inputs / 'expr_000.png')!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_same_preprocessing_as_training(model_dir, inputs):
    from hmer_runtime.inputs.render import model_input
    from hmer_runtime.inputs.sources import iter_source

    rec = Recognizer(model_dir, provider="cpu")
    spec = rec.spec
    for sample in iter_source(inputs / "ink"):
        train_side = model_input(sample.load(), spec.render, spec.preprocess, sample.name)  # as prepare() does
        run_side = rec.load(inputs / "ink" / sample.name)
        assert np.array_equal(train_side, run_side)
        strokes = [t[:, :2].tolist() for t in sample.load().traces]
        assert np.array_equal(rec.load(strokes), train_side)  # a drawing pad's strokes: same image


def test_recognize_kinds_and_batch_agree(model_dir, inputs):
    rec = Recognizer(model_dir, provider="cpu", beam=2)
    assert rec.provider == "cpu"
    png = inputs / "expr_001.png"
    one = rec.recognize(png)
    assert isinstance(one.latex, str) and one.ms > 0 and one.timings["steps"] > 0
    as_image = rec.recognize(Image.open(png))
    as_array = rec.recognize(np.asarray(Image.open(png)))
    batch = rec.recognize_batch([inputs / "expr_000.png", png, inputs / "expr_002.png"])
    assert one.tokens == as_image.tokens == as_array.tokens == batch[1].tokens
    with_att = rec.recognize(png, attention=True)
    assert len(with_att.attention) == len(with_att.tokens)


def test_each_result_carries_its_own_error_and_options_are_per_call(model_dir, inputs, tmp_path):
    rec = Recognizer(model_dir, provider="cpu", beam=2)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    good = [inputs / "expr_000.png", inputs / "expr_001.png"]
    results = rec.recognize_batch([good[0], bad, good[1], tmp_path / "missing.inkml"])
    assert [r.ok for r in results] == [True, False, True, False]
    assert "broken.png" in str(results[1].error) and "missing.inkml" in str(results[3].error)
    assert results[1].to_dict() == {"error": results[1].error.message} and results[1].latex == ""
    assert [r.tokens for r in results[::2]] == [r.tokens for r in rec.recognize_batch(good)]
    with pytest.raises(HmerError, match="broken.png"):
        rec.recognize(bad)  # one input: its error is raised
    # options given per call are used whole, and leave the recognizer's own untouched
    greedy = rec.options.with_overrides(beam=1)
    assert rec.recognize(good[0], greedy).tokens == Recognizer(model_dir, "cpu", beam=1).recognize(good[0]).tokens
    assert len(rec.recognize(good[0], greedy.with_overrides(max_len=3)).tokens) <= 3 < len(results[0].tokens)
    assert rec.resolve(greedy, beam=3).beam == 3 and rec.resolve().beam == 2 and rec.options.beam == 2


def test_beam_reorders_state_of_any_shape():
    """A toy decoder whose state is three tensors of different ranks recording the same history:
    after every reorder each row's tensors must still agree, and beam search must find the best
    sequence (checked by brute force)."""
    vocab, eos, sos, length = 4, 1, 0, 4
    rng = np.random.default_rng(0)
    table = rng.normal(size=(vocab, vocab, vocab)).astype(np.float32)  # logits given the last two tokens
    table[:, :, eos] -= 0.5

    def step(tokens, st):
        hist = np.concatenate([st["hist"], tokens[:, None]], 1)  # (B, t)
        total = st["total"] + tokens  # (B,)
        grid = st["grid"] + tokens[:, None, None]  # (B, 2, 3)
        assert (hist.sum(1) == total).all() and (grid == total[:, None, None]).all()
        prev = hist[:, -2] if hist.shape[1] > 1 else np.full(len(tokens), sos)
        logits = table[prev, tokens]
        return logits, np.zeros((len(tokens), 1, 1)), {"hist": hist, "total": total, "grid": grid}

    beam = 3
    state = {"hist": np.zeros((beam, 0), dtype=np.int64), "total": np.zeros(beam, dtype=np.int64),
             "grid": np.zeros((beam, 2, 3), dtype=np.int64)}
    def reorder_state(st, rows):  # host-side numpy state, whatever the names and shapes
        return {k: np.take(v, rows, axis=0) for k, v in st.items()}

    best = beam_search(step, reorder_state, state, 1, beam, sos, eos, length, length_penalty=0.0)[0][0]

    def logprob(seq):
        lp, prev, tok = 0.0, sos, sos
        for nxt in seq:
            z = table[prev, tok]
            lp += float(z[nxt] - np.log(np.exp(z - z.max()).sum()) - z.max())
            prev, tok = tok, nxt
        return lp

    import itertools

    candidates = [list(c) + [eos] for n in range(length) for c in itertools.product([2, 3], repeat=n)]
    candidates += [list(c) for c in itertools.product([2, 3], repeat=length)]
    brute = max(candidates, key=logprob)
    assert best.ids == [t for t in brute if t != eos]
    assert best.logprob == pytest.approx(logprob(brute), abs=1e-4)


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG that claims w x h pixels: the decompression-bomb case, without the memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def _run(*args, stdin: str | None = None):
    return subprocess.run([str(BIN / "hmer-run"), *map(str, args)], capture_output=True, text=True, input=stdin)


def test_hmer_run_outputs_and_bad_inputs(model_dir, inputs, tmp_path):
    good = [inputs / "expr_000.png", inputs / "ink" / "expr_001.inkml"]
    p = _run("--model", model_dir, "--json", *good)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(g) for g in good]
    assert all({"latex", "tokens", "score", "ms"} <= set(r) for r in rows)

    # --search and --grammar replace the model's decode settings: the facade's readings with them
    from hmer_runtime.recognizer import Recognizer

    p = _run("--model", model_dir, "--json", "--beam", "2", "--search", "comer", "--no-grammar", good[0])
    assert p.returncode == 0, p.stderr
    want = Recognizer(model_dir, "cpu", beam=2, search="comer", grammar=False).recognize(good[0]).to_dict()
    got = json.loads(p.stdout)
    assert (got["latex"], got["score"]) == (want["latex"], want["score"])
    assert got["score"] != Recognizer(model_dir, "cpu", beam=2, grammar=False).recognize(good[0]).to_dict()["score"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.png").write_text("not an image")
    (bad / "corrupt.png").write_bytes((inputs / "expr_000.png").read_bytes()[:60])
    (bad / "blank.png").write_bytes(b"")
    Image.new("L", (50, 30), 255).save(bad / "blank.png")
    _png_header_only(bad / "bomb.png", 30000, 30000)
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "notes.txt").write_text("x")
    args = [good[0], tmp_path / "missing.png", bad / "empty.png", bad / "text.png", bad / "corrupt.png",
            bad / "blank.png", bad / "bomb.png", tmp_path / "no-images", good[1]]
    p = _run("--model", model_dir, *args)
    assert p.returncode == 1
    # one line per file input, FILE<TAB>LATEX; a failed one leaves its LaTeX empty
    cells = [line.split("\t") for line in p.stdout.splitlines()]
    assert len(cells) == 8 and all(len(c) == 2 for c in cells)
    assert cells[0][1] and cells[-1][1] and not any(c[1] for c in cells[1:-1])  # both good inputs still read
    assert [c[0] for c in cells] == [str(a) for a in args if a != tmp_path / "no-images"]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 7 and "Traceback" not in p.stderr
    for name in ("missing.png", "empty.png", "text.png", "corrupt.png", "blank.png", "bomb.png", "no-images"):
        assert sum(name in e for e in errors) == 1, (name, errors)
    assert any("bomb.png" in e and "too large" in e for e in errors)

    # Paths from stdin, a glob, and attention strips.
    att = tmp_path / "att"
    p = _run("--model", model_dir, "--attention", att, "-", str(inputs / "expr_00[12].png"),
             stdin=f"{good[0]}\n")
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 3 and len(list(att.glob("*.png"))) == 3
    # an input name too long for a file name still gets its strip; a folder that cannot be made
    # fails each input's strip with one line naming it, and every input is still read
    long = tmp_path / ("x" * 240 + ".png")
    long.write_bytes(good[0].read_bytes())
    p = _run("--model", model_dir, "--attention", att, long)
    assert p.returncode == 0, p.stderr
    (tmp_path / "a-file").write_text("")
    p = _run("--model", model_dir, "--attention", tmp_path / "a-file" / "att", good[0], long, good[1])
    assert p.returncode == 1 and "Traceback" not in p.stderr and all(p.stdout.splitlines())
    errors = p.stderr.splitlines()
    assert len(errors) == 4 and errors[-1] == "3 input(s) failed"
    assert all(e.startswith("error: ") and "attention not written" in e for e in errors[:3])
    assert str(good[0]) in errors[0] and str(good[1]) in errors[2]

    # Paths from a list file; a list file that is missing is one error naming it.
    (tmp_path / "list.txt").write_text(f"{good[1]}\n\n{good[0]}\n")
    p = _run("--model", model_dir, "--json", f"@{tmp_path / 'list.txt'}", f"@{tmp_path / 'nolist.txt'}")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert [json.loads(line)["file"] for line in p.stdout.splitlines()] == [str(good[1]), str(good[0])]
    assert p.stderr.startswith(f"error: {tmp_path / 'nolist.txt'}: no such file")


def test_broken_and_mismatched_model_dirs(model_dir, tmp_path, inputs):
    import shutil

    missing = tmp_path / "nothing"
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_json = tmp_path / "bad-json"
    shutil.copytree(model_dir, bad_json)
    (bad_json / "model.json").write_text("{not json")
    truncated = tmp_path / "truncated"
    shutil.copytree(model_dir, truncated)
    data = (truncated / "decoder.onnx").read_bytes()
    (truncated / "decoder.onnx").write_bytes(data[: len(data) // 3])
    mismatched = tmp_path / "mismatched"
    shutil.copytree(model_dir, mismatched)
    spec = json.loads((mismatched / "model.json").read_text())
    spec["checkpoint"]["sha256"] = "0" * 64
    (mismatched / "model.json").write_text(json.dumps(spec))
    for d, message in [(missing, "not found"), (empty, "no model.json"), (bad_json, "not valid JSON"),
                       (truncated, "cannot load ONNX graph"), (mismatched, "mismatched model directory")]:
        with pytest.raises(ModelError, match=message):
            Recognizer(d, provider="cpu")
        p = _run("--model", d, inputs / "expr_000.png")
        assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and message in p.stderr, p.stderr


@pytest.mark.parametrize("section, key, value", [
    ("decode", "max_len", 10**9), ("decode", "length_penalty", float("nan")), ("decode", "beam", 0),
    ("decode", "side_beam", 100),
    (None, "stride", 0), (None, "stride", -16), ("render", "pad", -100), ("render", "supersample", 0),
    ("preprocess", "max_width", 3), ("render", "symbol_px", float("inf")), ("preprocess", "ink_threshold", 1.5)])
def test_model_json_values_out_of_range_are_one_named_error(model_dir, tmp_path, inputs, section, key, value):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    raw = json.loads((broken / "model.json").read_text())
    (raw[section] if section else raw)[key] = value
    (broken / "model.json").write_text(json.dumps(raw))  # NaN and Infinity as Python's json writes them
    name = f"{section}.{key}" if section else key
    with pytest.raises(ModelError, match=rf"{key}( is .*outside the range| and max_len must be)"):
        Recognizer(broken, provider="cpu")
    if key == "max_len":  # and the command says so in one line, without decoding
        p = _run("--model", broken, inputs / "expr_000.png")
        assert p.returncode == 1 and p.stderr.strip().splitlines() == [p.stderr.strip()] and name in p.stderr


# --- photo-like inputs --------------------------------------------------------------------------

def _clean_render(line_width: float = 2.5, symbol_px: float = 24.0, symbols: str = "x+2=y") -> np.ndarray:
    ink = Ink.from_strokes([s.tolist() for s in expression_strokes(list(symbols))])
    return render_ink(ink, RenderConfig(symbol_px=symbol_px, line_width=line_width, max_height=2000,
                                        max_width=6000))


def _ink_mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of ink after resizing ``b`` to ``a``'s shape."""
    b = np.asarray(Image.fromarray(b, mode="F").resize(a.shape[::-1], Image.Resampling.BILINEAR))
    ma, mb = a > 0.3, b > 0.3
    return (ma & mb).sum() / max(1, (ma | mb).sum())


def test_stroke_width_estimate():
    for lw, px in [(2.5, 24), (5, 48), (10, 96)]:
        est = stroke_width(1 - to_gray(_clean_render(lw, px)))
        assert 0.8 * lw <= est <= 1.15 * lw, (lw, est)


def test_component_extents():
    mask = np.zeros((20, 30), bool)
    mask[2:5, 2:12] = True  # 3 x 10 bar
    mask[8, 8] = mask[9, 9] = mask[10, 10] = True  # diagonal: one 8-connected component, extent 3
    mask[5:19, 20] = True  # 14 tall
    mask[18, 21:26] = True  # joined to it: an L, 14 x 6
    assert sorted(component_extents(mask).tolist()) == [3, 10, 14]
    snake = np.zeros((41, 41), bool)  # one long winding component, slow for naive propagation
    snake[::2] = True
    for k, row in enumerate(range(1, 41, 2)):
        snake[row, 40 if k % 2 == 0 else 0] = True
    assert len(component_extents(snake)) == 1
    assert len(component_extents(np.zeros((5, 5), bool))) == 0


def _flood_fill_extents(mask: np.ndarray) -> list[int]:
    """Reference: 8-connected components by breadth-first search, pixel by pixel."""
    seen = np.zeros_like(mask)
    out = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        seen[y, x] = True
        todo, ys, xs = [(y, x)], [], []
        while todo:
            cy, cx = todo.pop()
            ys.append(cy)
            xs.append(cx)
            for ny in range(max(0, cy - 1), min(mask.shape[0], cy + 2)):
                for nx in range(max(0, cx - 1), min(mask.shape[1], cx + 2)):
                    if mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        todo.append((ny, nx))
        out.append(max(max(ys) - min(ys), max(xs) - min(xs)) + 1)
    return sorted(out)


def test_component_extents_match_a_flood_fill_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 30, 2)
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.7)
        assert sorted(component_extents(mask).tolist()) == _flood_fill_extents(mask)


def test_written_symbol_size_matches_the_renderer():
    for lw, px in [(2.5, 24), (1.5, 48), (6, 32), (4, 96)]:
        ink = 1 - to_gray(_clean_render(lw, px))
        assert 0.75 * px <= written_symbol_size(ink) <= 1.33 * px, (lw, px, written_symbol_size(ink))


PRE = PreprocessConfig(max_height=192, max_width=768, stroke_width=2.5, symbol_px=24)


def test_other_pens_and_sizes_look_like_the_training_render():
    """A fine pen with big writing, a marker, small writing: resized by symbol size, then strokes
    thickened or thinned; resizing by stroke width alone gets the fine pen's scale wrong."""
    clean = preprocess(_clean_render(), PRE)
    for lw, px in [(1.5, 48), (1.2, 60), (6.0, 32), (6.0, 24), (1.6, 16), (1.0, 12)]:
        out = preprocess(_clean_render(lw, px), PRE)
        assert abs(out.shape[1] - clean.shape[1]) <= 0.2 * clean.shape[1], (lw, px, out.shape, clean.shape)
        assert 2.5 / 1.5 <= stroke_width(out) <= 2.5 * 1.5, (lw, px, stroke_width(out))
        assert _ink_mask_iou(clean, out) > 0.4, (lw, px)
    by_stroke = preprocess(_clean_render(1.5, 48), PreprocessConfig(max_height=192, max_width=768, stroke_width=2.5))
    assert by_stroke.shape[1] > 1.5 * clean.shape[1]


def test_one_or_two_symbols_in_another_pen_keep_the_training_size():
    """Too few symbols for a confident size: the pen's width says nothing of it either (a marker
    halved the image, a fine pen doubled it), so the symbols' own extent decides."""
    for symbols in ("x", "2y"):
        clean = preprocess(_clean_render(symbols=symbols), PRE)
        for lw, px in [(6.0, 24), (1.2, 48)]:
            out = preprocess(_clean_render(lw, px, symbols), PRE)
            assert abs(out.shape[0] - clean.shape[0]) <= 0.2 * clean.shape[0], (symbols, lw, px, out.shape, clean.shape)


def _ring(width: float, radius: float = 20.0, size: int = 56, ss: int = 4) -> np.ndarray:
    """An antialiased circle of pen ``width``: strokes in every direction."""
    y, x = (np.mgrid[0:size * ss, 0:size * ss] + 0.5) / ss - size / 2
    on = (np.abs(np.hypot(y, x) - radius) <= width / 2).astype(np.float32)
    return on.reshape(size, ss, size, ss).mean(axis=(1, 3))


def test_strokes_are_thickened_and_thinned_to_the_training_pen_in_every_direction():
    want = _ring(3.0) >= 0.5
    # 4.5 px measures 1.33x the pen: a matcher that left strokes within 1.5x alone would let a
    # thick pen shrunk to its symbol size stay thicker than training ever varies the pen.
    for width in (1.0, 1.2, 4.5, 6.0, 7.0):
        out = match_stroke(_ring(width), 3.0, 0.2)
        assert abs(stroke_width(out) - 3.0) <= 0.45, (width, stroke_width(out))
        got = out >= 0.5
        assert (got & want).sum() / (got | want).sum() > 0.75, width
        assert out.max() == 1.0  # full strength, as a render's ink
    assert np.array_equal(match_stroke(_ring(3.5), 3.0, 0.2) > 0, _ring(3.5) > 0)  # near the pen: left alone


def test_ruled_paper_lines_are_erased():
    arr = _clean_render(3.0, 32).astype(np.float32) / 255
    arr = np.pad(arr, 40, constant_values=1.0)
    rgb = np.stack([arr, arr, arr], -1)
    for y in range(10, arr.shape[0], 40):
        rgb[y:y + 2] *= np.array([0.75, 0.85, 1.0])
    rgb[:, 25:27] *= np.array([1.0, 0.8, 0.8])  # a margin line
    ruled = preprocess(Image.fromarray((rgb * 255).astype(np.uint8)), PRE, "ruled")
    plain = preprocess(Image.fromarray((arr * 255).astype(np.uint8)), PRE, "plain")
    assert ruled.shape == plain.shape
    # Only antialiased ink edges on the lines differ (erased up to 2x the ink threshold).
    assert np.abs(ruled - plain).max() < 0.45 and np.abs(ruled - plain).mean() < 0.005


def test_photo_like_inputs_match_the_clean_render():
    pre = PRE
    clean = preprocess(_clean_render(), pre)
    rng = np.random.default_rng(0)
    big = _clean_render(10.0, 96.0).astype(np.float32) / 255  # a 4x higher-resolution photo, thick pen
    h, w = big.shape
    variants = {
        "inverted": 1 - big,
        "coloured": np.stack([0.9 - 0.5 * (1 - big), 0.85 - 0.6 * (1 - big), 0.5 + 0.4 * (1 - big)], -1),
        "noisy": np.clip(big * 0.8 + 0.1 + rng.normal(0, 0.06, big.shape), 0, 1),
        "margins": np.pad(big, ((400, 300), (500, 900)), constant_values=1.0),
        "uneven light": big * np.linspace(0.55, 1.0, w)[None, :],
    }
    for name, arr in variants.items():
        img = Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8))
        out = preprocess(img, pre, name)
        assert abs(out.shape[0] - clean.shape[0]) <= 0.25 * clean.shape[0], (name, out.shape, clean.shape)
        assert abs(out.shape[1] - clean.shape[1]) <= 0.25 * clean.shape[1], (name, out.shape, clean.shape)
        assert _ink_mask_iou(clean, out) > 0.5, name
    with pytest.raises(ImageError, match="no ink"):
        preprocess(Image.new("RGB", (300, 200), (240, 230, 200)), pre, "blank")


def test_clean_renders_are_not_rescaled():
    img = _clean_render()
    off = preprocess(img, PreprocessConfig(max_height=192, max_width=768, stroke_width=0))
    for pre in (PRE, PreprocessConfig(max_height=192, max_width=768, stroke_width=2.5)):
        assert np.array_equal(preprocess(img, pre), off)


def test_model_spec_describes_state(model_dir):
    spec = ModelSpec.load(model_dir)
    names = {t.name for t in spec.state}
    assert {"pos", "k0", "v0", "cov0"} <= names
    assert next(t for t in spec.state if t.name == "k0").shape[2] == "steps"


def test_robustness_benchmark_reads_every_capture(model_dir, inputs):
    """benchmarks.robustness: each capture condition yields an input the runtime reads, and the
    table has a row per condition over all expressions."""
    from click.testing import CliRunner

    from hmer_bench.robustness import CONDITIONS, at_model_size, main, past_the_size_estimate

    spec = ModelSpec.load(model_dir)
    px = spec.render.symbol_px
    result = CliRunner().invoke(main, ["--model", str(model_dir), "--data", str(inputs / "ink"), "--limit", "3",
                                       "--stages"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ") and "ExpRate" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == [*CONDITIONS, *at_model_size(px),
                                                    *past_the_size_estimate(px, spec.preprocess)]
    assert "3 expressions" in result.output
    only = CliRunner().invoke(main, ["--model", str(model_dir), "--data", str(inputs / "ink"), "--limit", "1",
                                     "--only", "thick pen", "--only", "scan"])
    assert only.exit_code == 0, only.output
    names = [line.split(" | ")[0][2:] for line in only.output.splitlines()
             if line.startswith("| ") and "ExpRate" not in line]
    assert names and all("thick pen" in n or "scan" in n for n in names) and len(names) == 3


def test_length_vs_size_benchmark_measures_each_expression(model_dir, inputs):
    """benchmarks.length_vs_size: tokens per symbol size of each model input, three measures."""
    from click.testing import CliRunner

    from hmer_bench.length_vs_size import main

    result = CliRunner().invoke(main, [str(inputs / "ink"), "--model", str(model_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("3 expressions")
    rows = {r.split(" | ")[0][2:]: [float(v) for v in r.strip(" |").split(" | ")[1:]]
            for r in result.output.splitlines() if r.startswith("| ") and "median" not in r}
    assert list(rows) == ["width", "area", "width + height"]
    # three 3-token expressions, each a few symbol sizes wide: about one token per symbol size
    assert all(0.1 < v[0] <= v[3] < 10 for v in rows.values())
