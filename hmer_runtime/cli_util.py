"""Shared CLI behaviour: one clear error line per failure, tracebacks only with --debug."""

from __future__ import annotations

import sys

import click

from hmer_runtime.decoding.decode_options import SEARCHES
from hmer_runtime.errors import HmerError

# Every hmer command and benchmark takes -h as well as --help.
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

# Decode settings that replace the model's own (its model.json or config), for every command.
GRAMMAR_OPTION = click.option("--grammar/--no-grammar", default=None,
                              help="Keep outputs valid canonical LaTeX (default: the model's decode.grammar).")
SEARCH_OPTION = click.option("--search", type=click.Choice(SEARCHES), default=None,
                             help="Beam search: hmer's (left to right, rescored right to left) or CoMER's "
                                  "(both directions); default: the model's decode.search.")


def run_cli(command: click.Command) -> None:
    """Run a click command; HmerErrors and OS errors become ``error: <message>`` and exit 1."""
    debug = "--debug" in sys.argv[1:]
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
