"""``hmer-checkpoint``: slim a training checkpoint for committing, or average several into one."""

from __future__ import annotations

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS, run_cli


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(debug: bool) -> None:
    """Derive checkpoints from a run's checkpoints."""


@main.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
def slim(src: str, dst: str) -> None:
    """Write DST: SRC without the optimiser state, its moving average as the weights."""
    from hmer_train.checkpoint import slim_checkpoint

    slim_checkpoint(src, dst)
    click.echo(f"wrote {dst}")


@main.command()
@click.argument("dst", type=click.Path(dir_okay=False))
@click.argument("srcs", nargs=-1, required=True, type=click.Path(dir_okay=False))
def average(dst: str, srcs: tuple[str, ...]) -> None:
    """Write DST: a slim checkpoint holding the mean of SRCS' weights (at least two, same model),
    at the newest one's step."""
    from hmer_train.checkpoint import average_checkpoints

    if len(srcs) < 2:
        raise click.UsageError("give at least two checkpoints to average")
    ckpt = average_checkpoints(list(srcs), dst)
    steps = ", ".join(str(s["step"]) for s in ckpt["averaged_from"])
    click.echo(f"wrote {dst}: the mean of {len(srcs)} checkpoints (steps {steps})")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
