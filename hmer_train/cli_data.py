"""``hmer-data``: render InkML to the offline image format, print dataset statistics, build
vocabularies, draw contact sheets, and compose synthetic handwriting (``synth``).

Needs no torch: hmer_runtime, and matplotlib's mathtext for ``synth`` (hmer_train/synth.py).
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import click
import numpy as np
from PIL import Image

from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli
from hmer_runtime.errors import HmerError
from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.render import RenderConfig, render_ink
from hmer_runtime.inputs.sources import iter_source, load_labelled, resolve_split
from hmer_runtime.text.latex import LatexError, detokenize, tokenize
from hmer_runtime.text.vocab import Vocab


def _render_options(f):
    f = click.option("--symbol-px", default=RenderConfig.symbol_px, show_default=True,
                     help="Median stroke extent in pixels (symbol size).")(f)
    f = click.option("--line-width", default=RenderConfig.line_width, show_default=True)(f)
    f = click.option("--max-height", default=RenderConfig.max_height, show_default=True)(f)
    f = click.option("--max-width", default=RenderConfig.max_width, show_default=True)(f)
    return f


def _source(src: str, split: str | None) -> Path:
    return resolve_split(src, split) if split else Path(src)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Prepare and inspect handwritten-math datasets."""
    ctx.obj = {"debug": debug}


@main.command()
@click.argument("src")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--split", help="With a dataset name as SRC (e.g. CROHME), the split to use.")
@_render_options
def render(src: str, out: str, split: str | None, symbol_px: float, line_width: float,
           max_height: int, max_width: int) -> None:
    """Render InkML from SRC to OUT/images/*.png + OUT/caption.txt (name<TAB>canonical tokens)."""
    cfg = RenderConfig(symbol_px=symbol_px, line_width=line_width, max_height=max_height,
                       max_width=max_width)
    out_dir = Path(out)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    ok, failed = 0, 0
    with open(out_dir / "caption.txt", "w", encoding="utf-8") as captions:
        for sample in iter_source(_source(src, split)):
            try:
                ink = sample.load()
                if not isinstance(ink, Ink):
                    raise HmerError(sample.name, "not InkML (only ink can be rendered)")
                if sample.latex is None:
                    raise HmerError(sample.name, "no ground-truth LaTeX")
                tokens = tokenize(sample.latex)
                image = render_ink(ink, cfg)
            except (HmerError, LatexError) as e:
                click.echo(f"error: {e}", err=True)
                failed += 1
                continue
            stem = Path(sample.name).stem
            Image.fromarray(image).save(out_dir / "images" / f"{stem}.png", optimize=False)
            captions.write(f"{stem}\t{detokenize(tokens)}\n")
            ok += 1
    click.echo(f"rendered {ok} expressions to {out_dir}, {failed} failed")
    if failed:
        sys.exit(1)


def _histogram(values: list[int], edges: list[int]) -> str:
    counts, _ = np.histogram(values, bins=edges + [max(max(values, default=0), edges[-1]) + 1])
    labels = [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])] + [f"{edges[-1]}+"]
    return "  ".join(f"{lab}:{c}" for lab, c in zip(labels, counts))


@main.command()
@click.argument("src")
@click.option("--split", help="With a dataset name as SRC (e.g. CROHME), the split to use.")
@click.option("--vocab", "vocab_path", type=click.Path(exists=True, dir_okay=False),
              help="Vocabulary to measure coverage against (default: this source's own symbols).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@_render_options
def stats(src: str, split: str | None, vocab_path: str | None, as_json: bool, symbol_px: float,
          line_width: float, max_height: int, max_width: int) -> None:
    """Counts, vocabulary coverage, unknown symbols, image-size and length histograms of SRC."""
    cfg = RenderConfig(symbol_px=symbol_px, line_width=line_width, max_height=max_height,
                       max_width=max_width)
    vocab = Vocab.load(vocab_path) if vocab_path else None
    files, errors, lengths, heights, widths = 0, [], [], [], []
    symbols: Counter = Counter()
    for sample in iter_source(_source(src, split)):
        files += 1
        try:
            obj, tokens = load_labelled(sample)
            image = render_ink(obj, cfg) if isinstance(obj, Ink) else np.asarray(obj)
        except HmerError as e:
            errors.append(str(e))
            continue
        symbols.update(tokens)
        lengths.append(len(tokens))
        heights.append(image.shape[0])
        widths.append(image.shape[1])
    unknown = {t: c for t, c in symbols.most_common() if vocab and t not in vocab.index}
    result = {
        "source": str(src) + (f":{split}" if split else ""), "files": files,
        "usable": len(lengths), "errors": errors, "symbols": len(symbols),
        "unknown": unknown, "vocab_coverage": (
            100.0 * (1 - sum(unknown.values()) / max(1, sum(symbols.values()))) if vocab else None),
        "length": _percentiles(lengths), "height": _percentiles(heights), "width": _percentiles(widths),
    }
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
        return
    click.echo(f"source      {result['source']}")
    click.echo(f"files       {files}   usable {len(lengths)}   errors {len(errors)}")
    for e in errors:
        click.echo(f"  error: {e}")
    click.echo(f"symbols     {len(symbols)} distinct, {sum(symbols.values())} total")
    if vocab:
        click.echo(f"coverage    {result['vocab_coverage']:.3f} % of symbols in {vocab_path}")
        click.echo("unknown     " + (", ".join(f"{t} ({c})" for t, c in unknown.items()) or "none"))
    click.echo(f"length      {_histogram(lengths, [1, 11, 21, 31, 51, 101])}")
    click.echo(f"height px   {_histogram(heights, [0, 64, 128, 192, 256])}")
    click.echo(f"width px    {_histogram(widths, [0, 256, 512, 768, 1024])}")


def _percentiles(values: list[int]) -> dict:
    if not values:
        return {}
    p = np.percentile(values, [0, 50, 90, 100])
    return dict(zip(["min", "median", "p90", "max"], (float(x) for x in p)))


@main.command()
@click.argument("src")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--split", help="With a dataset name as SRC (e.g. CROHME), the split to use.")
@click.option("--min-count", default=1, show_default=True)
def vocab(src: str, out: str, split: str | None, min_count: int) -> None:
    """Build the vocabulary of SRC's canonical tokens and save it as JSON."""
    sequences, bad = [], 0
    for sample in iter_source(_source(src, split)):
        if sample.latex is None:
            bad += 1
            continue
        try:
            sequences.append(tokenize(sample.latex))
        except LatexError:
            bad += 1
    v = Vocab.build(sequences, min_count=min_count)
    v.save(out)
    click.echo(f"{len(v)} tokens ({len(v) - 4} symbols + 4 specials) from {len(sequences)} "
               f"expressions -> {out}; {bad} without usable LaTeX")


@main.command()
@click.argument("src")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--split", help="With a dataset name as SRC (e.g. CROHME), the split to use.")
@click.option("-n", "count", default=30, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--columns", default=3, show_default=True)
@_render_options
def sheet(src: str, out: str, split: str | None, count: int, seed: int, columns: int,
          symbol_px: float, line_width: float, max_height: int, max_width: int) -> None:
    """A contact sheet PNG of COUNT random renders of SRC, at their true relative size."""
    cfg = RenderConfig(symbol_px=symbol_px, line_width=line_width, max_height=max_height,
                       max_width=max_width)
    samples = [s for s in iter_source(_source(src, split)) if s.latex is not None]
    random.Random(seed).shuffle(samples)
    images = []
    for s in samples:
        if len(images) == count:
            break
        try:
            images.append(render_ink(s.load(), cfg))
        except HmerError:
            continue
    cell_w = max(i.shape[1] for i in images) + 8
    rows = [images[i:i + columns] for i in range(0, len(images), columns)]
    row_h = [max(i.shape[0] for i in r) + 8 for r in rows]
    board = Image.new("L", (cell_w * columns, sum(row_h)), 200)
    y = 0
    for r, h in zip(rows, row_h):
        for c, img in enumerate(r):
            board.paste(Image.fromarray(img), (c * cell_w + 4, y + 4))
        y += h
    board.save(out)
    click.echo(f"{len(images)} renders -> {out}")


@main.command()
@click.argument("src")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--split", help="With a dataset name as SRC (e.g. CROHME), the split to use (a training split).")
@click.option("-n", "count", default=10_000, show_default=True, type=click.IntRange(min=1),
              help="Expressions to write.")
@click.option("--seed", default=0, show_default=True)
@click.option("--per-symbol", default=300, show_default=True, type=click.IntRange(min=1),
              help="Handwritten samples kept per symbol (drawn from all writers).")
@click.option("--replace", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="Probability that a symbol of a training label is replaced by another of its class.")
@click.option("--structures", default=0.3, show_default=True, type=click.FloatRange(0, 1),
              help="Share of expressions built from new structures (nested fractions and scripts, sums, "
                   "integrals, limits, functions, roots, polynomials) instead of recombined labels.")
def synth(src: str, out: str, split: str | None, count: int, seed: int, per_symbol: int, replace: float,
          structures: float) -> None:
    """Write COUNT new handwritten expressions to OUT as InkML, each drawn with SRC's own symbols
    (its traceGroups) in a layout typeset by matplotlib's mathtext. Expressions are SRC's labels,
    recombined, or built from new structures (--structures); a rerun keeps the files already
    written (each file depends on --seed, --structures and its number only) and writes the rest."""
    from hmer_runtime.files import write_atomic
    from hmer_runtime.inputs.inkml import inkml_bytes
    from hmer_train.synth import GlyphBank, compose, recombine
    from hmer_train.synth_structures import StructureGrammar, label_fragments, structured

    bank = GlyphBank.from_source(_source(src, split), per_symbol, seed)
    grammar = StructureGrammar(label_fragments(bank.labels))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = kept = failed = 0
    with click.progressbar(range(count), label="composing", file=sys.stderr) as bar:
        for i in bar:
            path = folder / f"synth_{seed}_{i:06d}.inkml"
            if path.is_file():
                kept += 1
                continue
            rng = random.Random(f"{seed}/{i}")
            for _ in range(20):  # a recombined label may be one mathtext or the bank cannot draw
                try:
                    latex = structured(grammar, rng) if rng.random() < structures else \
                        recombine(bank.labels, rng, replace)
                    ink = compose(latex, bank, rng, path.stem)
                except LatexError:
                    ink = None
                if ink is not None:
                    write_atomic(path, inkml_bytes(ink))
                    written += 1
                    break
            else:
                failed += 1
    click.echo(f"{written} written, {kept} already there, {failed} not composed -> {folder} "
               f"({sum(len(g) for g in bank.glyphs.values())} glyphs of {len(bank.glyphs)} symbols)")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
