import numpy as np
import pytest
from synth import expression_strokes, inkml_text, write_inkml_set

from hmer_runtime.errors import InkError
from hmer_runtime.inputs.inkml import MAX_INKML_BYTES, Ink, parse_inkml, read_inkml
from hmer_runtime.inputs.render import RenderConfig, render_ink


def test_reads_traces_truth_id_and_groups():
    doc = """<ink xmlns="http://www.w3.org/2003/InkML">
<traceFormat><channel name="X" type="decimal"/><channel name="Y" type="decimal"/>
<channel name="T" type="decimal"/></traceFormat>
<annotation type="truth">$x^2$</annotation><annotation type="UI">f_1</annotation>
<trace id="0">0 0 1, 10 10 2, 20 5 3</trace><trace id="1">30 0 4, 30 20 5</trace>
<traceGroup><traceGroup><annotation type="truth">x</annotation>
<traceView traceDataRef="0"/></traceGroup></traceGroup></ink>"""
    ink = parse_inkml(doc.encode(), "f.inkml")
    assert ink.truth == "x^2" and ink.id == "f_1"
    assert ink.channels == ["X", "Y", "T"]
    assert ink.traces[0].shape == (3, 3)
    assert ink.groups[0].label == "x" and ink.groups[0].trace_ids == ["0"]


@pytest.mark.parametrize("doc, message", [
    (b"", "empty"),
    (b"<ink><trace>1 2, 3", "well-formed"),
    (b"<svg/>", "not <ink>"),
    (b'<?xml version="1.0"?><!DOCTYPE ink [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
     b"<ink><annotation type='truth'>&b;</annotation></ink>", "unsafe XML"),
    (b'<?xml version="1.0"?><!DOCTYPE ink [<!ENTITY x SYSTEM "file:///etc/passwd">]><ink>&x;</ink>',
     "unsafe XML"),
    (b"<ink><trace>1 a, 2 3</trace></ink>", "bad trace point"),
])
def test_hostile_or_broken_xml_is_refused(doc, message):
    with pytest.raises(InkError, match=message):
        parse_inkml(doc, "bad.inkml")


def test_huge_file_refused_before_parsing(tmp_path):
    p = tmp_path / "huge.inkml"
    with open(p, "wb") as f:
        f.truncate(MAX_INKML_BYTES + 1)
    with pytest.raises(InkError, match="over the"):
        read_inkml(p)


@pytest.mark.parametrize("traces, message", [
    ([], "no traces"),
    ([np.array([[1.0, 2.0]])], "single point"),
    ([np.array([[1.0, 2.0], [1.0, 2.0]])], "coincide"),
    ([np.array([[1.0, np.nan], [3.0, 4.0]])], "NaN"),
    ([np.array([[1.0, 2.0], [np.inf, 4.0]])], "NaN or infinite"),
])
def test_degenerate_ink_is_a_clear_error(traces, message):
    with pytest.raises(InkError, match=message):
        render_ink(Ink(traces=traces, id="degenerate"))


def test_render_is_deterministic_dark_on_white_with_padding():
    ink = Ink(traces=expression_strokes(list("1+2")), id="a")
    a, b = render_ink(ink), render_ink(ink)
    assert a.dtype == np.uint8 and np.array_equal(a, b)
    cfg = RenderConfig()
    assert a[: cfg.pad].min() == 255 and a[:, : cfg.pad].min() == 255  # padding is background
    assert a.min() == 0 and 0 < (a < 128).mean() < 0.5  # dark ink, minority of pixels
    assert len(np.unique(a)) > 2  # antialiased edges


def test_scale_normalised_across_pen_units():
    # The same writing in pixels and in 1/1000 units must render to the same size.
    small = Ink(traces=expression_strokes(list("x=2"), unit=0.05), id="s")
    big = Ink(traces=expression_strokes(list("x=2"), unit=500.0), id="b")
    a, b = render_ink(small), render_ink(big)
    assert abs(a.shape[0] - b.shape[0]) <= 1 and abs(a.shape[1] - b.shape[1]) <= 1
    cfg = RenderConfig()
    assert abs(a.shape[0] - 2 * cfg.pad - cfg.symbol_px) < 0.35 * cfg.symbol_px


def test_line_width_is_set_by_config():
    ink = Ink(traces=[np.array([[0.0, 0.0], [100.0, 0.0]]), np.array([[0.0, 50.0], [100.0, 50.0]])], id="l")
    thin = render_ink(ink, RenderConfig(line_width=2))
    thick = render_ink(ink, RenderConfig(line_width=6))
    ink_rows = lambda im: ((255 - im.astype(float)) / 255).sum(axis=0)[im.shape[1] // 2]  # noqa: E731
    assert ink_rows(thick) / ink_rows(thin) == pytest.approx(3.0, rel=0.2)


def test_max_size_caps_long_expressions():
    ink = Ink(traces=expression_strokes(list("1+2+3+4+7") * 8), id="long")
    img = render_ink(ink, RenderConfig(max_height=128, max_width=512))
    assert img.shape[0] <= 128 and img.shape[1] <= 512


def test_written_inkml_roundtrip(tmp_path):
    paths = write_inkml_set(tmp_path, [list("1+2"), list("x=y")])
    ink = read_inkml(paths[1])
    assert ink.truth == "x = y" and len(ink.traces) == 6


def test_inkml_text_without_truth():
    ink = parse_inkml(inkml_text(expression_strokes(["1"]), None).encode())
    assert ink.truth is None


def test_the_capsule_pen_draws_round_strokes_of_the_pen_width_and_leaves_pil_models_alone():
    from hmer_runtime.inputs.render import RenderConfig

    ink = Ink.from_strokes([[[0, 0], [100, 0]], [[0, 40], [0, 140]], [[60, 80]]])
    pil, capsule = RenderConfig(line_width=4), RenderConfig(line_width=4, pen="capsule")
    a, b = render_ink(ink, pil), render_ink(ink, capsule)
    assert np.array_equal(b, render_ink(ink, capsule))  # deterministic
    assert abs(a.shape[0] - b.shape[0]) <= 3 and abs(a.shape[1] - b.shape[1]) <= 3
    # ink area in pixels: two 4 px strokes 32 px long (the median stroke is symbol_px), their round caps, a dot
    dark = (255 - b.astype(int)).sum() / 255
    assert abs(dark - (4 * 64 + 3 * np.pi * 2 ** 2)) < 8
    col = b[:, b.shape[1] // 2]
    assert 3 <= (col < 128).sum() <= 5  # the horizontal stroke is the pen's width
    assert "pen" not in pil.to_dict() and capsule.to_dict()["pen"] == "capsule"
    assert RenderConfig.from_dict(capsule.to_dict()) == capsule
    with pytest.raises(ValueError, match="pen"):
        RenderConfig(pen="brush")


def _capsule_reference(points, width, height, ss, r):
    """The capsule pen one segment at a time, over its whole box: what the vectorised passes of
    ``_capsule_render`` must reproduce exactly (hmer.js computes the same arithmetic)."""
    ink = np.zeros((height * ss, width * ss), dtype=bool)
    ys, xs = np.mgrid[0:height * ss, 0:width * ss] + 0.5
    for pts in points:
        pts = np.concatenate([pts, pts]) if len(pts) == 1 else pts
        for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):
            dx, dy = bx - ax, by - ay
            len2 = dx * dx + dy * dy or 1.0
            tx, ty = xs - ax, ys - ay
            u = np.clip((tx * dx + ty * dy) / len2, 0.0, 1.0)
            ex, ey = tx - u * dx, ty - u * dy
            ink |= ex * ex + ey * ey <= r * r
    paper = (~ink).reshape(height, ss, width, ss).sum(axis=(1, 3)) * 255
    return np.floor(paper / (ss * ss) + 0.5).astype(np.uint8)


@pytest.mark.parametrize("chunk", [1, 300, 1 << 14, 1 << 40])
def test_the_capsule_pen_is_the_same_in_any_number_of_passes(monkeypatch, chunk):
    from hmer_runtime.inputs import render

    rng = np.random.default_rng(0)
    width, height, ss, r = 40, 24, 4, 5.0
    points = [np.cumsum(rng.normal(0, 6, (n, 2)), axis=0) % [width * ss, height * ss] for n in (30, 7, 2)]
    points.append(np.array([[3.3, 80.0]]))  # a dot
    monkeypatch.setattr(render, "CAPSULE_CHUNK", chunk)
    got = render._capsule_render(points, width, height, ss, r)
    assert np.array_equal(got, _capsule_reference(points, width, height, ss, r))
    assert (got < 255).sum() > 100  # something was drawn


def test_the_capsule_pen_tests_pixels_in_proportion_to_stroke_length(monkeypatch):
    from hmer_runtime.inputs import render

    tested = []
    hits = render._capsule_hits
    monkeypatch.setattr(render, "_capsule_hits", lambda ink, cx0, row, width, *a: (
        tested.append(int(width.sum())), hits(ink, cx0, row, width, *a))[1])
    width, height, ss, r = 200, 60, 4, 6.0
    w, h = width * ss - 1, height * ss - 1
    # long diagonals, a flat and a steep zig-zag, exact horizontals and verticals, a dot: boxes
    # far larger than the strokes' own area
    zig = np.array([[0.0 if i % 2 == 0 else w, (i * 37) % h] for i in range(40)])
    steep = np.array([[(i * 53) % w, 0.0 if i % 2 == 0 else h] for i in range(40)])
    points = [zig, steep, np.array([[5.0, 7.0], [w - 3.0, 7.0]]), np.array([[9.5, 2.0], [9.5, h - 1.0]]),
              np.array([[0.0, 0.0], [w, h], [0.0, h], [w, 0.0]]), np.array([[400.0, 100.0]])]
    got = render._capsule_render(points, width, height, ss, r)
    assert np.array_equal(got, _capsule_reference(points, width, height, ss, r))
    length = sum(float(np.hypot(*np.diff(p, axis=0).T).sum()) for p in points)
    box_area = sum(float(np.prod(np.abs(np.diff(p, axis=0)) + 2 * r, axis=1).sum()) for p in points if len(p) > 1)
    assert sum(tested) <= 4 * (2 * r + 3) * length + 1000  # about the strokes' area, however they lie
    assert sum(tested) < box_area / 4  # not their boxes' (all of which the pen once tested)


def test_ink_too_long_to_draw_is_refused_before_drawing():
    from hmer_runtime.errors import TOO_LARGE, InkError
    from hmer_runtime.inputs.render import MAX_INK_LENGTH

    small = [np.array([[x, 0.0], [x + 25, 25.0]]) for x in range(0, 1000, 20)]
    n = int(MAX_INK_LENGTH / (4 * 700)) * 3  # zig-zags across the whole render, past the limit
    zig = np.array([[0.0 if i % 2 == 0 else 1000.0, 250.0 * ((i // 2) % 2)] for i in range(n)])
    with pytest.raises(InkError, match="zigzag: strokes .* M pixels long as drawn, over the limit") as e:
        render_ink(Ink(traces=small + [zig], id="zigzag"), RenderConfig(max_height=192, max_width=768, pen="capsule"))
    assert e.value.status == TOO_LARGE
    render_ink(Ink(traces=small + [zig[:200]]), RenderConfig(max_height=192, max_width=768, pen="capsule"))
