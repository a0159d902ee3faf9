"""``hmer-run``: recognise images and InkML files; LaTeX on stdout, one line per input."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hmer_runtime.cli_util import (
    CONTEXT_SETTINGS,
    GRAMMAR_OPTION,
    PROGRESS_OPTION,
    PROVIDER_OPTION,
    SCALES_OPTION,
    SEARCH_OPTION,
    SIDE_BEAM_OPTION,
    Progress,
    run_cli,
    show_progress,
)
from hmer_runtime.errors import HmerError, ImageError
from hmer_runtime.files import read_bounded, walk_files
from hmer_runtime.inputs.sources import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from hmer_runtime.recognizer import Result

INPUT_SUFFIXES = IMAGE_SUFFIXES + (".inkml", ".json")  # .json: stroke JSON, as the HTTP API takes
#: Largest list file (``@FILE``) read, in bytes.
MAX_LIST_BYTES = 256 * 1024 * 1024
#: Batches' worth of inputs read ahead and sorted by size (results still come out in input order).
WINDOW_BATCHES = 8


def printable(text: str) -> str:
    """``text`` as valid UTF-8: bytes of a file name that are not UTF-8 (held by Python as
    surrogates) are shown as \\xNN escapes instead of being written raw."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def json_row(path: str, result: Result, n_best: int = 1) -> str:
    """One line of ``hmer-run --json`` (and of ``hmer-batch``'s output): file, latex, tokens, score,
    confidence and ms for a result (and ``n_best`` - 1 alternatives), or file and error for an
    input that failed."""
    row = {"file": printable(path)}
    row.update(result.to_dict(n_best))
    if "error" in row:
        row["error"] = printable(row["error"])
    return json.dumps(row, ensure_ascii=False)


def expand_inputs(args: list[str]) -> tuple[list[str], list[HmerError]]:
    """Paths to recognise, in order: files as given, directories searched recursively for images
    and InkML, globs expanded, ``-`` read from stdin, ``@FILE`` read from a list file (one path a
    line, relative to the list's folder); plus an error for each argument that yields none."""
    paths: list[str] = []
    errors: list[HmerError] = []
    for arg in args:
        if arg == "-":
            paths += [line.strip() for line in sys.stdin if line.strip()]
            continue
        if arg.startswith("@") and len(arg) > 1 and not Path(arg).exists():
            try:
                text = read_bounded(arg[1:], MAX_LIST_BYTES).decode("utf-8", "surrogateescape")
            except HmerError as e:
                errors.append(e)
                continue
            # a relative path in a list names a file beside the list, wherever the command runs
            base = Path(arg[1:]).parent
            paths += [str(base / line.strip()) if not Path(line.strip()).is_absolute() else line.strip()
                      for line in text.splitlines() if line.strip()]
            continue
        p = Path(arg)
        if p.is_dir():
            files, unreadable = walk_files(p, INPUT_SUFFIXES)
            errors += unreadable
            found = [str(f) for f in files]
            if not found and not unreadable:
                errors.append(ImageError(arg, f"directory has no images or InkML files ({', '.join(INPUT_SUFFIXES)})"))
            paths += found
        elif not p.exists() and glob.has_magic(arg):
            found = sorted(f for f in glob.glob(arg, recursive=True) if Path(f).is_file())
            if not found:
                errors.append(ImageError(arg, "pattern matches no files"))
            paths += found
        else:
            paths.append(arg)  # a missing file is reported when it is read, in its place
    return paths, errors


def write_attention(res, stride: int, folder: Path, number: int, path: str) -> bool:
    """Write input ``number``'s attention strip into ``folder``; False (and one error line naming
    the input) when it cannot be written, which fails that input and no other."""
    from hmer_runtime.decoding.attention import attention_strip

    target = folder / f"{number:04d}-{Path(path).stem[:80]}.png"  # any input name gives a valid file name
    try:
        attention_strip(res.image, res.attention or [], res.tokens, stride).save(target)
        return True
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        click.echo(f"error: {printable(path)}: attention not written to {printable(str(target))} ({reason})",
                   err=True)
        return False


@click.command(context_settings=CONTEXT_SETTINGS)
@click.argument("paths", nargs=-1)
@click.option("--model", "model_dir", type=click.Path(), help="Exported model directory (default: bundled model).")
@click.option("--beam", type=click.IntRange(min=1),
              help="Beam width, 1 = greedy (default: the model's, decode.beam in its model.json).")
@PROVIDER_OPTION
@click.option("--variant", default="fp32", show_default=True, help="Graph variant: fp32, int8 or fp16.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Inputs decoded together (sorted by size within each window of 8 batches).")
@click.option("--threads", default=0, type=click.IntRange(min=0), help="CPU threads (0 = onnxruntime's choice).")
@click.option("--limit", type=click.IntRange(min=1), help="Recognise only the first N inputs.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: file, latex, latex_compact, tokens, score, confidence, "
                   "token_confidence, ms.")
@click.option("--n-best", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --json, also the next N-1 readings the beam found (alternatives).")
@click.option("--compact", is_flag=True, help="Print compact LaTeX (x^{2}+2x+1) instead of the spaced tokens.")
@click.option("--attention", "attention_dir", type=click.Path(file_okay=False),
              help="Write a PNG per input with each token's attention overlaid.")
@GRAMMAR_OPTION
@SEARCH_OPTION
@SCALES_OPTION
@SIDE_BEAM_OPTION
@PROGRESS_OPTION
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(paths, model_dir, beam, provider, variant, batch_size, threads, limit, as_json, n_best, compact,
         attention_dir, grammar, search, scales, side_beam, progress, debug) -> None:
    """Recognise handwritten expressions in PATHS (images, .inkml, stroke .json, directories, globs,
    @LIST files; - = stdin). With several inputs, each line names its file: FILE<TAB>LATEX."""
    from hmer_runtime.engine.providers import ProviderConfig
    from hmer_runtime.recognizer import Recognizer

    if not paths:
        raise click.UsageError("give at least one image, .inkml file or directory (or - to read paths from stdin)")
    files, failures = expand_inputs(list(paths))
    files = files[:limit] if limit else files
    for e in failures:
        click.echo(f"error: {printable(str(e))}", err=True)
    rec = Recognizer(model_dir, ProviderConfig(provider, threads), variant, beam=beam, grammar=grammar,
                     search=search, scales=scales, side_beam=side_beam, n_best=n_best if as_json else None)
    if debug:
        click.echo(f"model {rec.spec.directory} on {rec.provider}", err=True)
    if attention_dir:
        try:
            Path(attention_dir).mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # each input's attention write reports it, and recognition goes on
    named = len(files) > 1 or len(paths) > 1

    def line(path: str, latex: str) -> str:
        return f"{printable(path)}\t{latex}" if named else latex

    failed = len(failures)
    window = WINDOW_BATCHES * batch_size  # inputs read ahead, so batches can be formed by size
    bar = Progress(len(files), "files", show_progress(progress, as_json) and len(files) > 1)
    for start in range(0, len(files), window):
        chunk = files[start:start + window]
        results = rec.recognize_batch(chunk, attention=bool(attention_dir), batch_size=batch_size)
        for offset, (path, res) in enumerate(zip(chunk, results)):
            bar.clear()
            if res.error is not None:
                failed += 1
                click.echo(f"error: {printable(str(res.error))}", err=True)
                # stdout keeps one line per input: an empty reading (plain) or an error row (--json)
                click.echo(json_row(path, res) if as_json else line(path, ""))
            else:
                if as_json:
                    click.echo(json_row(path, res, n_best=n_best))
                else:
                    click.echo(line(path, res.latex_compact if compact else res.latex))
                if attention_dir and res.image is not None:
                    failed += not write_attention(res, rec.spec.stride, Path(attention_dir), start + offset, path)
            bar.advance()
    bar.close()
    if failed:
        click.echo(f"{failed} input(s) failed", err=True)
        sys.exit(1)


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
