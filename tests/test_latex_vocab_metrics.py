from collections import Counter

import pytest

from hmer_runtime.text.latex import LatexError, detokenize, tokenize
from hmer_runtime.text.metrics import Metrics, edit_distance, format_summary
from hmer_runtime.text.vocab import Vocab


@pytest.mark.parametrize("a, b", [
    ("x^2", "x^{2}"),
    ("x_i^2", "x^{2}_{i}"),
    ("\\frac12", "\\frac{1}{2}"),
    ("\\sqrt x", "\\sqrt{x}"),
    ("a \\lt b", "a<b"),
    ("a\\ge b", "a \\geq b"),
    ("a \\ne b", "a\\neq b"),
    ("x \\to 0", "x\\rightarrow 0"),
    ("\\left( x \\right)", "(x)"),
    ("\\Bigg( x \\Bigg)", "(x)"),
    ("a\\,b\\quad c ~ d", "abcd"),
    ("\\mbox{sin} x", "\\sin x"),
    ("\\mathrm{d}x", "dx"),
    ("\\lim\\limits_{x\\to0}", "\\lim_{x \\rightarrow 0}"),
    ("{x}^{2}", "x^2"),
    ("$x + 1$", "x+1"),
    ("a \\ltq", "a < q"),
    ("\\dfrac{a}{b}", "\\frac ab"),
])
def test_synonyms_and_spellings_fold_to_one_sequence(a, b):
    assert tokenize(a) == tokenize(b)


def test_canonical_form_and_roundtrip():
    t = tokenize("\\frac{x^2}{\\sqrt[3]{y}} + \\sin\\theta")
    assert t == ["\\frac", "{", "x", "^", "{", "2", "}", "}", "{", "\\sqrt", "[", "3", "]", "{", "y",
                 "}", "}", "+", "\\sin", "\\theta"]
    assert tokenize(detokenize(t)) == t
    assert detokenize(["x", "^", "{", "2", "}"]) == "x ^ { 2 }"


def test_mathrm_content_keeps_scripts():
    assert tokenize("\\mathrm{F^1_0}") == ["F", "_", "{", "0", "}", "^", "{", "1", "}"]


@pytest.mark.parametrize("bad", ["\\frac{a", "x^", "\\sqrt[3{x}"])
def test_malformed_latex_raises(bad):
    with pytest.raises(LatexError):
        tokenize(bad)


def test_stray_top_level_brace_is_ignored():
    assert tokenize("\\lim_{x \\to 1}} f") == tokenize("\\lim_{x\\to1} f")


def test_vocab_specials_encode_unknown_counted(tmp_path):
    v = Vocab.build([["x", "+", "1"], ["x", "=", "2"]])
    assert v.tokens[:4] == ["<pad>", "<sos>", "<eos>", "<unk>"] and len(v) == 9
    unknown = Counter()
    ids = v.encode(["x", "\\alpha", "\\alpha", "1"], unknown)
    assert ids.count(v.unk_id) == 2 and unknown == {"\\alpha": 2}
    assert v.decode(ids + [v.eos_id, v.index["x"]]) == ["x", "<unk>", "<unk>", "1"]
    x, one = v.index["x"], v.index["1"]
    assert v.kept([v.sos_id, x, v.pad_id, one, v.eos_id, x]) == [1, 3]  # where decode's tokens came from
    assert v.decode([v.sos_id, x, v.pad_id, one, v.eos_id, x]) == ["x", "1"]
    v.save(tmp_path / "vocab.json")
    assert Vocab.load(tmp_path / "vocab.json") == v
    assert v.unknown_symbols([["y", "x", "y"]]) == {"y": 2}


def test_edit_distance_hand_computed():
    assert edit_distance(list("abc"), list("abc")) == 0
    assert edit_distance(list("abc"), list("abd")) == 1  # substitution
    assert edit_distance(list("abc"), list("ac")) == 1  # deletion
    assert edit_distance(["\\frac", "{", "1", "}"], ["{", "1", "}", "x"]) == 2


def test_metrics_hand_computed():
    m = Metrics()
    m.add(list("abcd"), list("abcd"))  # 0 edits
    m.add(list("abcd"), list("abed"))  # 1
    m.add(list("abcd"), list("ab"))  # 2
    m.add(list("ab"), list("xyz"))  # 3
    s = m.summary()
    assert s["n"] == 4
    assert s["exprate"] == 25.0 and s["le1"] == 50.0 and s["le2"] == 75.0
    assert s["wer"] == pytest.approx(100 * 6 / 14)
    assert s["by_length"]["1-10"] == {"n": 4, "exprate": 25.0}
    assert "ExpRate 25.00" in format_summary(s)


def test_error_breakdown_groups_and_edits():
    from benchmarks.error_breakdown import breakdown, structures

    assert structures(["x", "^", "{", "2", "}", "_", "{", "i", "}"]) == ["superscript", "subscript"]
    assert structures(["\\int", "x", "d", "x"]) == ["sum / integral / limit"]
    assert structures(["a", "+", "b"]) == ["flat"]
    long = " ".join(["x"] * 25)
    rows = [{"truth": "\\frac { a } { b }", "prediction": "\\frac { o } { b }"},
            {"truth": "x ^ { 2 } + 1", "prediction": "x ^ { 2 } + 1"},
            {"truth": "a + b", "prediction": "a + b c"},
            {"truth": long, "prediction": long[:-2]}]
    b = breakdown(rows)
    assert b["n"] == 4
    assert b["groups"] == {"1-10 tokens": [1, 3], "21-30 tokens": [0, 1], "fraction": [0, 1],
                           "superscript": [1, 1], "flat": [0, 2]}
    assert b["edits"] == {"a -> o": 1, "extra c": 1, "missing x": 1}
    assert b["invalid"] == 0


def test_readings_that_are_not_valid_latex_are_counted():
    from benchmarks.error_breakdown import breakdown

    rows = [{"truth": "\\sqrt { x }", "prediction": p} for p in
            ("\\sqrt { x", "x ^", "\\frac { 1 } { 2 }", "x } {", "\\sqrt [ 3 ] { x }", "")]
    assert breakdown(rows)["invalid"] == 3


def test_runaway_readings_are_counted():
    from benchmarks.error_breakdown import breakdown, runs_away

    loop = " ".join(["8 1 2 4"] * 10)  # 40 tokens for a 3-token truth
    assert runs_away(["a", "+", "b"], loop.split()) and not runs_away(["a", "+", "b"], list("a+b=c"))
    assert runs_away(["x"] * 100, ["x"] * 150) and not runs_away(["x"] * 100, ["x"] * 149)
    rows = [{"truth": "a + b", "prediction": loop}, {"truth": "a + b", "prediction": "a + b"}]
    assert breakdown(rows)["runaway"] == 1


def test_training_hours_leave_out_pauses_and_sessions_between():
    from benchmarks.training_hours import training_seconds

    rows = [{"step": s, "time": t} for s, t in ((50, 0), (100, 30), (150, 60), (200, 5000), (250, 5040))]
    # the 4 940 s between steps 150 and 200 is a pause, not training
    assert training_seconds(rows, 200) == (100.0, 150)
    assert training_seconds(rows, 10_000) == (5040.0, 200)
