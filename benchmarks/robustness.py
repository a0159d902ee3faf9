"""ExpRate of a model on handwriting captured other ways than its training renders.

    python -m benchmarks.robustness                        # bundled model, first 200 of CROHME 2014
    python -m benchmarks.robustness --model DIR --limit 985 --beam 5
    python -m benchmarks.robustness --stages               # where a pen's points go: size or stroke
    python -m benchmarks.robustness --only "thick pen"     # some of the captures
    python -m benchmarks.robustness --scales 1             # each input read at the model's size alone

The same CROHME ink is drawn as the training renderer draws it and as a user's input might look:
photographed at higher resolution on tinted, unevenly lit paper, scanned (tilted, blurred, JPEG),
written with a much thinner or thicker pen (also at the model's own symbol size, which leaves out
the size estimate), small on a wide page, or on ruled paper. Every image
goes through the runtime's own preprocessing (``Recognizer``), as ``hmer-run`` would read it.
Nothing is written to disk: CROHME renders stay in memory.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageFilter

from hmer_bench import second_renderer
from hmer_bench.error_breakdown import runs_away
from hmer_runtime.cli_util import CONTEXT_SETTINGS, SCALES_OPTION
from hmer_runtime.errors import HmerError
from hmer_runtime.inputs.inkml import Ink
from hmer_runtime.inputs.preprocess import PreprocessConfig, match_stroke, preprocess
from hmer_runtime.inputs.render import RenderConfig, render_ink
from hmer_runtime.inputs.sources import iter_source, load_labelled
from hmer_runtime.recognizer import Recognizer
from hmer_runtime.text.metrics import Metrics

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "crohme" / "crohme-2014.tar.gz"
BIG = {"max_height": 4000, "max_width": 8000}  # renders here are not limited to the model's input size


def _render(ink: Ink, symbol_px: float, line_width: float, pad: int = 8) -> np.ndarray:
    return render_ink(ink, RenderConfig(symbol_px=symbol_px, line_width=line_width, pad=pad, **BIG))


def photo(image: np.ndarray, seed: int = 0) -> Image.Image:
    """The render as a phone photo: 3x resolution and stroke, wide margins, tinted paper, a
    lighting gradient and sensor noise."""
    rng = np.random.default_rng(seed)
    big = np.asarray(Image.fromarray(image).resize((image.shape[1] * 3, image.shape[0] * 3),
                                                   Image.Resampling.BICUBIC), dtype=np.float32) / 255
    big = np.pad(big, ((180, 240), (260, 300)), constant_values=1.0)
    h, w = big.shape
    light = np.linspace(0.7, 1.0, w)[None, :] * np.linspace(0.9, 1.0, h)[:, None]
    rgb = np.stack([big * 0.93, big * 0.90, big * 0.80], -1) * light[..., None]
    rgb = np.clip(rgb + rng.normal(0, 0.02, rgb.shape), 0, 1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def scan(ink: Ink, seed: int) -> Image.Image:
    """200 dpi-like scan: grey paper, tilted 1.5 degrees, slightly blurred, JPEG quality 35."""
    img = Image.fromarray(_render(ink, 40, 3.5, pad=30)).rotate(1.5, Image.Resampling.BILINEAR, fillcolor=255)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32) * 0.92
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=35)
    return Image.open(buf)


def ruled(ink: Ink, seed: int) -> Image.Image:
    """Written on ruled paper: light blue lines every 1.4 symbol heights, under the ink."""
    arr = _render(ink, 32, 3.0, pad=40).astype(np.float32) / 255
    rgb = np.stack([arr, arr, arr], -1)
    for y in range(20, arr.shape[0], 45):
        rgb[y:y + 2] *= np.array([0.75, 0.85, 1.0])
    return Image.fromarray((rgb * 255).astype(np.uint8))


CONDITIONS: dict[str, Callable[[Ink, int], object]] = {
    "training render (the model's own renderer and pen)": lambda ink, seed: ink,
    "phone photo (3x resolution, tinted paper, light gradient, noise, wide margins)":
        lambda ink, seed: photo(_render(ink, 32, 3.0), seed),
    "scan (tilt 1.5 deg, blur, JPEG q35, grey paper)": scan,
    "thin pen (48 px symbols, 1.5 px pen)": lambda ink, seed: _render(ink, 48, 1.5),
    "thick pen (32 px symbols, 6 px pen)": lambda ink, seed: _render(ink, 32, 6.0),
    "small on a wide page (16 px symbols, 300 px margins)": lambda ink, seed: _render(ink, 16, 1.6, pad=300),
    "ruled paper (blue lines under the ink)": ruled,
    "second renderer (matplotlib, speed-dependent pen, blue ink, 34-48 px symbols, JPEG)": second_renderer.draw,
}


def at_model_size(px: float) -> dict[str, Callable[[Ink, int], object]]:
    """The thin and thick pens drawn at the model's own symbol size: what they read there, against
    the same pens at other sizes, is what the preprocessing's size estimate costs."""
    return {f"thin pen at the model's symbol size ({px:g} px symbols, {1.5 / 48 * px:.2f} px pen)":
            lambda ink, seed: _render(ink, px, 1.5 / 48 * px),
            f"thick pen at the model's symbol size ({px:g} px symbols, {6 / 32 * px:.2f} px pen)":
            lambda ink, seed: _render(ink, px, 6 / 32 * px)}


def past_the_size_estimate(px: float, pre: PreprocessConfig) -> dict[str, Callable[[Ink, int], np.ndarray]]:
    """Pens drawn at the model's symbol size and given to the model without the size estimate:
    cropped and padded only, or with their strokes matched too (``--stages``)."""
    as_drawn = PreprocessConfig(**{**pre.to_dict(), "stroke_width": 0.0, "symbol_px": 0.0})

    def crop(ink: Ink, pen: float) -> np.ndarray:
        return preprocess(_render(ink, px, pen), as_drawn)

    def matched(ink: Ink, pen: float) -> np.ndarray:
        p = pre.pad
        return np.pad(match_stroke(crop(ink, pen)[p:-p, p:-p], pre.stroke_width, pre.ink_threshold), p)

    out = {}
    for name, pen in (("the training pen", pre.stroke_width), ("thin pen", 1.5 / 48 * px),
                      ("thick pen", 6 / 32 * px)):
        out[f"{name} ({pen:.2f} px) at {px:g} px, cropped only"] = lambda ink, seed, pen=pen: crop(ink, pen)
        out[f"{name} ({pen:.2f} px) at {px:g} px, strokes matched"] = lambda ink, seed, pen=pen: matched(ink, pen)
    return out


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False), help="Default: bundled.")
@click.option("--data", default=str(DATA), show_default=True, help="InkML source with truth.")
@click.option("--limit", default=200, show_default=True, help="First N readable expressions.")
@click.option("--beam", default=1, show_default=True)
@click.option("--stages", is_flag=True,
              help="Also the pens at the model's size past the size estimate, unmatched and stroke-matched.")
@click.option("--only", "only", multiple=True, help="Only the captures whose name holds this text (repeatable).")
@SCALES_OPTION
def main(model_dir: str | None, data: str, limit: int, beam: int, stages: bool, only: tuple[str, ...],
         scales: tuple[float, ...] | None) -> None:
    rec = Recognizer(model_dir, provider="cpu", scales=scales)
    samples = []
    for sample in iter_source(data):
        try:
            ink, tokens = load_labelled(sample)
        except HmerError:
            continue
        samples.append((ink, tokens))
        if len(samples) == limit:
            break
    click.echo(f"{len(samples)} expressions of {data}, beam {beam}", err=True)
    click.echo("| capture | ExpRate | ≤1 | ≤2 | WER | runaway |\n|---|---|---|---|---|---|")
    px = rec.spec.render.symbol_px
    conditions = {**CONDITIONS, **at_model_size(px)}
    model_inputs = past_the_size_estimate(px, rec.spec.preprocess) if stages else {}
    for name, make in {**conditions, **model_inputs}.items():
        if only and not any(o in name for o in only):
            continue
        metrics, runaway = Metrics(), 0
        for i, (ink, tokens) in enumerate(samples):
            x = make(ink, i)
            result = rec.decode_images([x], beam=beam)[0] if name in model_inputs else rec.recognize(x, beam=beam)
            metrics.add(tokens, result.tokens)
            runaway += runs_away(tokens, result.tokens)
        s = metrics.summary()
        click.echo(f"| {name} | {s['exprate']:.2f} | {s['le1']:.2f} | {s['le2']:.2f} | {s['wer']:.2f} | {runaway} |")


if __name__ == "__main__":
    main()
