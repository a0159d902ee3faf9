"""``hmer-serve``: the command that serves :mod:`hmer_runtime.serving.serve`'s app with uvicorn
worker processes, or on a Ray cluster (:mod:`hmer_runtime.serving.ray_serve`). The app knows
neither, so the modules import one way: this one imports both."""

import json
import os
from dataclasses import asdict

import click

from hmer_runtime.cli_util import CONTEXT_SETTINGS, PROVIDER_OPTION, run_cli
from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.recognizer import Recognizer
from hmer_runtime.serving.requests import Limits
from hmer_runtime.serving.serve import SETTINGS_ENV, ServeOptions, TimedH11Protocol


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", "model_dir", type=click.Path(), help="Exported model directory (default: bundled model).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@PROVIDER_OPTION
@click.option("--variant", default="fp32", show_default=True)
@click.option("--threads", default=0, help="CPU threads per worker (0 = onnxruntime's choice).")
@click.option("--workers", default=1, show_default=True, help="Worker processes, each with its own Recognizer.")
@click.option("--batch-wait-ms", default=5.0, show_default=True, help="Micro-batching window (0 = off).")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--read-timeout", default=Limits.read_timeout_s, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a client has to send a request's headers, and then its body.")
@click.option("--ray", "on_ray", is_flag=True,
              help="Serve on a Ray cluster with Ray Serve replicas (extra ray); --workers does not apply.")
@click.option("--address", help="With --ray: the cluster to join (default: $RAY_ADDRESS, else a local instance).")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(min=1),
              help="With --ray: replicas (the minimum, with --max-replicas).")
@click.option("--max-replicas", type=click.IntRange(min=1), help="With --ray: autoscale up to this many replicas.")
@click.option("--replica-cpus", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="With --ray: CPUs each replica reserves (and its threads, unless --threads).")
@click.option("--replica-gpus", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="With --ray: GPUs each replica reserves (use with --provider cuda).")
@click.option("--debug", is_flag=True)
def main(model_dir, host, port, provider, variant, threads, workers, batch_wait_ms, max_batch, read_timeout,
         on_ray, address, replicas, max_replicas, replica_cpus, replica_gpus, debug) -> None:
    """Serve the recognition API and the drawing pad."""
    options = ServeOptions(str(model_dir) if model_dir else None, provider, variant, threads, batch_wait_ms, max_batch)
    limits = Limits(read_timeout_s=read_timeout)
    try:
        import uvicorn
    except ImportError as e:
        raise click.ClickException("hmer-serve needs the serve extra: pip install 'hmer[serve]'") from e
    if on_ray:
        try:
            from hmer_runtime.serving import ray_serve
        except ImportError as e:
            raise click.ClickException("hmer-serve --ray needs the ray extra: pip install 'hmer[ray]'") from e
        Recognizer(model_dir, ProviderConfig("cpu", 1), variant)  # fail fast on a bad model, before Ray starts
        ray_serve.serve_on_ray(options, ray_serve.ScaleOptions(replicas, max_replicas, replica_cpus, replica_gpus),
                               limits, host, port, address)
        return
    Recognizer(model_dir, ProviderConfig(provider, threads), variant)  # fail fast on a bad model
    os.environ[SETTINGS_ENV] = json.dumps({"options": asdict(options), "limits": asdict(limits)})
    uvicorn.run("hmer_runtime.serving.serve:app_from_env", host=host, port=port, workers=workers, factory=True,
                http=TimedH11Protocol, timeout_keep_alive=max(1, round(read_timeout)),
                log_level="info" if debug else "warning")


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
