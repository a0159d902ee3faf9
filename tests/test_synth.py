"""hmer-data synth: new handwriting from a training set's own glyphs, on fixtures of our own making."""

import random
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from synth import GLYPHS, expression_strokes

pytest.importorskip("matplotlib")

from hmer_runtime.errors import DatasetError  # noqa: E402
from hmer_runtime.inputs.inkml import Ink, SymbolGroup, inkml_bytes, parse_inkml, read_inkml  # noqa: E402
from hmer_runtime.text.latex import compact, tokenize  # noqa: E402
from hmer_train.cli_data import main as data_cli  # noqa: E402
from hmer_train.synth import Glyph, GlyphBank, compose, layout, recombine  # noqa: E402
from hmer_train.synth_structures import FUNCTIONS, GREEK, LETTERS, StructureGrammar, label_fragments, structured  # noqa: E402

#: Labelled expressions of the test glyphs (the bank's writers), with a traceGroup per symbol.
BANK_EXPRESSIONS = [list("x+1=2"), list("y-3=4"), list("7x+0"), list("2y=x"), list("13-4")]


def write_bank(folder, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i, symbols in enumerate(BANK_EXPRESSIONS):
        strokes = expression_strokes(symbols, unit=50.0 + 10 * i, jitter=0.02, rng=rng)
        groups, k = [], 0
        for s in symbols:
            n = len(GLYPHS[s])
            groups.append(SymbolGroup(s, [str(j) for j in range(k, k + n)]))
            k += n
        ink = Ink(strokes, " ".join(symbols), f"writer{i}", trace_ids=[str(j) for j in range(k)], groups=groups)
        (folder / f"writer{i}.inkml").write_bytes(inkml_bytes(ink))
    return folder


def test_inkml_written_reads_back_with_its_symbols(tmp_path):
    folder = write_bank(tmp_path / "bank")
    ink = read_inkml(folder / "writer0.inkml")
    assert ink.truth == "x + 1 = 2" and [g.label for g in ink.groups] == list("x+1=2")
    assert len(ink.traces) == sum(len(GLYPHS[s]) for s in "x+1=2")


def test_layout_gives_a_box_per_symbol_with_bars_and_roots():
    boxes = layout(r"\frac { x ^ { 2 } } { \sqrt { y + 1 } } - \sin x")
    labels = [b.label for b in boxes]
    assert sorted(labels) == sorted(["x", "2", r"\sqrt", "y", "+", "1", "-", r"\sin", "x", "-"])
    root = next(b for b in boxes if b.label == r"\sqrt")
    y, one = (next(b for b in boxes if b.label == s) for s in ("y", "1"))
    assert root.stretch and root.x0 < y.x0 and root.x1 >= one.x1  # the root covers its radicand
    bar = next(b for b in boxes if b.label == "-" and b.stretch)
    two = next(b for b in boxes if b.label == "2")
    assert bar.y1 < two.y0 and bar.y0 > root.y1  # the fraction bar between numerator and denominator


def test_compose_draws_every_symbol_from_the_bank(tmp_path):
    bank = GlyphBank.from_source(write_bank(tmp_path / "bank"))
    assert set(bank.glyphs) == set("x+1=2y-34 70".replace(" ", "")) and len(bank.labels) == 5
    ink = compose("x ^ { 2 } + 1 = 7", bank, random.Random(0), "s0")
    assert ink.truth == "x ^ { 2 } + 1 = 7"
    assert [g.label for g in ink.groups] == ["x", "2", "+", "1", "=", "7"]
    again = parse_inkml(inkml_bytes(ink), "s0")
    assert [g.label for g in again.groups] == [g.label for g in ink.groups]
    boxes = {g.label: np.concatenate([ink.traces[int(t)] for t in g.trace_ids]) for g in ink.groups}
    # the superscript sits higher (smaller y: InkML y grows down) and is smaller than its base
    assert boxes["2"][:, 1].mean() < boxes["x"][:, 1].mean()
    assert np.ptp(boxes["2"][:, 1]) < np.ptp(boxes["7"][:, 1])
    assert compose(r"\alpha + 1", bank, random.Random(0), "s1") is None  # no \alpha in the bank


def test_recombine_replaces_within_classes_and_stays_valid():
    rng = random.Random(3)
    labels = ["x ^ { 2 } + 1 = 7", r"\frac { a } { b } - 3"]
    made = {recombine(labels, rng, replace=0.5) for _ in range(40)}
    assert len(made) > 10 and all(tokenize(m) for m in made)
    assert any(m not in labels for m in made)


def test_synth_command_writes_readable_inkml_resumes_and_refuses_test_splits(tmp_path):
    bank = write_bank(tmp_path / "bank")
    out = tmp_path / "synth"
    r = CliRunner().invoke(data_cli, ["synth", str(bank), str(out), "-n", "6", "--seed", "1"])
    assert r.exit_code == 0, r.output
    files = sorted(out.glob("*.inkml"))
    assert len(files) == 6 and "6 written" in r.output
    for f in files:
        ink = read_inkml(f)
        assert ink.truth and len(ink.groups) == len([t for t in tokenize(ink.truth) if t not in "{}^_"])
    before = {f.name: f.read_bytes() for f in files}
    r = CliRunner().invoke(data_cli, ["synth", str(bank), str(out), "-n", "8", "--seed", "1"])
    assert "2 written, 6 already there" in r.output
    assert all((out / n).read_bytes() == b for n, b in before.items())
    r = CliRunner().invoke(data_cli, ["stats", str(out)])
    assert r.exit_code == 0 and "8" in r.output, r.output
    (tmp_path / "crohme-2014").mkdir()
    with pytest.raises(DatasetError, match="test split"):
        GlyphBank.from_source(tmp_path / "crohme-2014")


def test_training_reads_synthetic_inkml(tmp_path):
    from tiny import tiny_config

    from hmer_train.train import train

    bank = write_bank(tmp_path / "bank")
    out = tmp_path / "synth"
    assert CliRunner().invoke(data_cli, ["synth", str(bank), str(out), "-n", "8"]).exit_code == 0
    cfg = tiny_config(tmp_path, "comer", max_steps=2, epochs=1)
    cfg = cfg.updated({"dataset": str(out), "val_split": None})
    train(cfg, progress=False)
    assert (tmp_path / "out" / "last.pt").is_file()


def test_training_adds_synthetic_inkml_to_its_dataset(tmp_path):
    import yaml
    from tiny import tiny_config

    from hmer_train.cli_train import main as train_cli

    bank = write_bank(tmp_path / "bank")
    out = tmp_path / "synth"
    assert CliRunner().invoke(data_cli, ["synth", str(bank), str(out), "-n", "8"]).exit_code == 0
    cfg = tiny_config(tmp_path, "comer", max_steps=1, epochs=1).updated({"val_split": None})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    r = CliRunner().invoke(train_cli, ["--config", str(config), "--extra", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "train: 14 expressions" in r.output  # the six of the dataset and the eight composed
    p = subprocess.run([sys.executable, "-m", "hmer_train.cli_train", "--config", str(config), "--extra",
                        str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "nowhere" in p.stderr, p.stderr


def test_compose_raises_scripts_as_mathtext_sets_them():
    # the canonical truth is spaced ("x ^ { 2 }"), which mathtext would set on one baseline
    bank = GlyphBank()
    for label in "x2":
        bank.glyphs[label] = [Glyph([np.array([[0.0, 0.0], [10.0, 10.0]])], 10.0, 10.0, "w")]
    ink = compose("x^{2}", bank, random.Random(0), "s")
    x_stroke, two_stroke = ink.traces
    assert ink.truth == "x ^ { 2 }"
    # InkML y grows downwards; about half an x-height up (on one baseline, 1.4 from the boxes alone)
    assert x_stroke[:, 1].mean() - two_stroke[:, 1].mean() > 40
    assert np.ptp(two_stroke[:, 1]) < np.ptp(x_stroke[:, 1])  # and smaller


def test_structures_are_new_shapes_in_the_vocabulary_that_mathtext_lays_out():
    labels = ["x ^ { 2 } + 1 = 7", r"\frac { a } { b } - 3", r"\sqrt { x + 1 }"]
    grammar = StructureGrammar(label_fragments(labels))
    rng = random.Random(0)
    made = [structured(grammar, rng) for _ in range(300)]
    vocab = set(tokenize(" ".join(labels))) | set("0123456789") | set(LETTERS + GREEK + FUNCTIONS) | {
        "(", ")", "[", "]", "|", r"\{", r"\}", ",", "=", "+", "-", "<", ">", "^", "_", "{", "}", r"\frac",
        r"\sqrt", r"\sum", r"\int", r"\lim", r"\rightarrow", r"\infty", r"\times", r"\cdot", r"\pm", r"\div",
        r"\leq", r"\geq", r"\neq", r"\in", r"\ldots", "d", "e"}
    tokens = [tokenize(m) for m in made]
    assert all(0 < len(t) <= 50 and set(t) <= vocab for t in tokens)
    assert len(set(made)) > 250
    for shape in (r"\frac { \frac", r"\sum _ {", r"\int _ {", r"\lim _ {", r"\sqrt [", "^ { e ^ {"):
        assert any(shape in m for m in made) or shape == "^ { e ^ {", shape
    assert any(" ".join(t).count(r"\frac") >= 2 for t in tokens)  # nested fractions
    for m in made[:60]:
        assert layout(compact(tokenize(m)))


def test_synth_command_mixes_structures_by_its_option(tmp_path):
    bank = write_bank(tmp_path / "bank")
    runner = CliRunner()
    for share, name in ((0.0, "labels"), (1.0, "structures")):
        res = runner.invoke(data_cli, ["synth", str(bank), str(tmp_path / name), "-n", "12", "--seed", "1",
                                       "--structures", str(share)])
        assert res.exit_code == 0, res.output
    truths = {name: [read_inkml(p).truth for p in sorted((tmp_path / name).glob("*.inkml"))]
              for name in ("labels", "structures")}
    # the bank knows only digits, x, y, + - =: recombined labels keep their one-line shape
    assert all("{" not in t for t in truths["labels"])
    assert truths["labels"] != truths["structures"]
