"""Shared CLI behaviour: one clear error line per failure, tracebacks only with --debug."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from hmer_runtime import __version__
from hmer_runtime.decoding.decode_options import SEARCHES, DecodeOptions
from hmer_runtime.errors import HmerError

# Every hmer command and benchmark takes -h as well as --help.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

# Decode settings that replace the model's own (its model.json or config), for every command.
GRAMMAR_OPTION = click.option("--grammar/--no-grammar", default=None,
                              help="Keep outputs valid canonical LaTeX (default: the model's decode.grammar).")
SEARCH_OPTION = click.option("--search", type=click.Choice(SEARCHES), default=None,
                             help="Beam search: hmer's (left to right, rescored right to left) or CoMER's "
                                  "(both directions); default: the model's decode.search.")


def _scales(ctx, param, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        scales = tuple(float(f) for f in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    try:
        DecodeOptions(scales=scales)  # the options' own rule
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return scales


SCALES_OPTION = click.option("--scales", callback=_scales, metavar="F,F,...",
                             help="Read each input at these multiples of the model's size and keep the best "
                                  "reading (1 = one size, fastest; default: the model's decode.scales).")

SIDE_BEAM_OPTION = click.option("--side-beam", type=click.IntRange(min=1, max=64), metavar="N",
                                help="Beam width at the sizes other than the model's own (never wider than --beam; "
                                     "default: the model's decode.side_beam).")

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
PROVIDER_OPTION = click.option("--provider", type=click.Choice(PROVIDERS), default="auto", show_default=True,
                               help="ONNX Runtime provider (auto: the best one installed).")
PROGRESS_OPTION = click.option("--progress/--no-progress", default=None,
                               help="A progress bar on stderr (default: on a terminal, and not for --json piped).")


def show_progress(progress: bool | None, as_json: bool = False) -> bool:
    """Whether to draw a progress bar: as asked, else when stderr is a terminal and the output is
    not JSON going to a program."""
    if progress is not None:
        return progress
    return sys.stderr.isatty() and not (as_json and not sys.stdout.isatty())


class Progress:
    """A one-line progress bar on stderr that steps aside for output lines (``clear`` before
    writing one); draws nothing when not ``enabled``."""

    def __init__(self, total: int, unit: str, enabled: bool):
        self.total, self.unit, self.enabled, self.done = total, unit, enabled, 0
        self._drawn = False

    def clear(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._drawn = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = width * self.done // max(1, self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.unit}")
            sys.stderr.flush()
            self._drawn = True

    def close(self) -> None:
        self.clear()


#: The top-level modules each optional extra installs, so that a missing one is named by its extra.
EXTRA_MODULES = {
    "torch": "train", "torchvision": "train", "onnx": "train", "yaml": "train", "tqdm": "train",
    "matplotlib": "train", "fastapi": "serve", "uvicorn": "serve", "multipart": "serve",
    "python_multipart": "serve", "latex2mathml": "serve", "starlette": "serve", "ray": "ray",
}


def missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """``<command> needs the <extra> extra: pip install ...`` when ``error`` is a module of an extra."""
    root = (error.name or "").split(".")[0]
    extra = EXTRA_MODULES.get(root)
    if extra is None:
        return None
    return f"{_prog()} needs the {extra} extra: pip install 'hmer[{extra}]' (module {root} is not installed)"


def _prog() -> str:
    return Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "hmer"


def launch(module: str, attr: str = "main") -> None:
    """Entry point of a command whose module imports an optional extra: imported here, so that a
    runtime-only install gets one line naming the extra instead of a traceback."""
    try:
        command = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        message = missing_extra_message(e)
        if message is None or "--debug" in sys.argv[1:]:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(1)
    run_cli(command)


def run_cli(command: click.Command) -> None:
    """Run a click command; HmerErrors and OS errors become ``error: <message>`` and exit 1.
    Every command gets ``--version``."""
    debug = "--debug" in sys.argv[1:]
    if not any(p.name == "version" for p in command.params):
        click.version_option(__version__, "--version", prog_name=_prog(), message="%(prog)s %(version)s")(command)
    try:
        command.main(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except ModuleNotFoundError as e:  # an extra a command imports when it needs it
        message = missing_extra_message(e)
        if debug or message is None:
            raise
        click.echo(f"error: {message}", err=True)
        sys.exit(1)
    except (HmerError, OSError) as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - last resort: still one line, traceback on --debug
        if debug:
            raise
        click.echo(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", err=True)
        sys.exit(1)
