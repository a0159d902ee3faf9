"""``hmer-serve --ray``: hmer-serve's HTTP API served by Ray Serve replicas on a cluster (extra ``ray``).

Each replica holds one torch-free :class:`Recognizer` and gathers concurrent requests with
``@serve.batch``. The routes, limits and error shapes are hmer-serve's own app
(:func:`hmer_runtime.serving.serve.create_app`), mounted with ``@serve.ingress``, so both serve the same
code. Ray's proxy on each node takes HTTP and routes it to the replicas.

    hmer-serve --ray --replicas 2                      # a local Ray instance (or $RAY_ADDRESS)
    hmer-serve --ray --address auto --max-replicas 8   # a running cluster, autoscaled 1..8
    serve run configs/ray-serve.yaml                   # Ray's own CLI, settings in a file
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import typing
from dataclasses import dataclass, fields

import numpy as np
from ray import serve

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.errors import InputError
from hmer_runtime.recognizer import Recognizer, Result
from hmer_runtime.serving.batching import batch_count, decode_grouped
from hmer_runtime.serving.requests import Limits
from hmer_runtime.serving.serve import ServeOptions, create_app

APP_NAME = "hmer"


@dataclass(frozen=True)
class ScaleOptions:
    """How many replicas, and what each reserves on the cluster. ``max_replicas`` above
    ``replicas`` autoscales between the two on ``target_ongoing_requests`` per replica."""

    replicas: int = 1
    max_replicas: int | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    target_ongoing_requests: float = 8.0

    def deployment_options(self) -> dict:
        """Ray Serve's ``Deployment.options`` for these settings."""
        actor = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.max_replicas and self.max_replicas > self.replicas:
            return {"ray_actor_options": actor, "autoscaling_config": {
                "min_replicas": self.replicas, "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests}}
        return {"ray_actor_options": actor, "num_replicas": self.replicas}


@serve.deployment(name="Recognizer", max_ongoing_requests=64)
@serve.ingress()
class RecognizerReplica:
    """One replica: a Recognizer, ``@serve.batch`` micro-batching, and hmer-serve's app as ingress."""

    def __init__(self, options: ServeOptions, limits: Limits, cpus: float = 1.0):
        self.options, self.limits = options, limits
        threads = options.threads or max(1, round(cpus))  # ORT's default would take every core of the node
        self.rec = Recognizer(options.model_dir, ProviderConfig(options.provider, threads), options.variant)
        self._decode.set_max_batch_size(options.max_batch)
        self._decode.set_batch_wait_timeout_s(options.batch_wait_ms / 1000)
        self.batches = self.decoded = 0

    def __serve_build_asgi_app__(self):
        return create_app(limits=self.limits, backend=self)

    async def submit(self, views: list[np.ndarray], options: DecodeOptions, attention: bool) -> Result:
        outcome = await self._decode((views, options, attention))
        if outcome.error is not None:
            raise outcome.error
        return outcome

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _decode(self, requests: list[tuple[list[np.ndarray], DecodeOptions, bool]]) -> list[Result]:
        outcomes = await asyncio.get_running_loop().run_in_executor(None, decode_grouped, self.rec, requests)
        self.batches += batch_count(requests)
        self.decoded += len(requests)
        return outcomes

    def stats(self) -> dict:
        return {"wait_ms": self.options.batch_wait_ms, "max_batch": self.options.max_batch,
                "batches": self.batches, "decoded": self.decoded, "engine": "ray-serve",
                "replica": serve.get_replica_context().replica_id.unique_id}


def application(replica: ServeOptions = ServeOptions(), scale: ScaleOptions = ScaleOptions(),
                limits: Limits | None = None):
    """The Ray Serve application, ready for ``serve.run``."""
    return RecognizerReplica.options(**scale.deployment_options()).bind(replica, limits or Limits(), scale.cpus)


def build_app(args: dict):
    """Application builder for Ray's CLI (``serve run hmer_runtime.serving.ray_serve:build_app key=value``
    or a config file's ``import_path``): ``args`` are the fields of ServeOptions and ScaleOptions."""
    known = {f.name for cls in (ServeOptions, ScaleOptions) for f in fields(cls)}
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(f"unknown hmer Ray Serve argument(s) {unknown}; known: {sorted(known)}")

    def pick(cls):
        hints = typing.get_type_hints(cls)

        def convert(name: str, value):  # Ray's CLI passes key=value arguments as strings
            kinds = typing.get_args(hints[name]) or (hints[name],)
            return next((kind(value) for kind in (float, int) if kind in kinds), str(value))

        return cls(**{f.name: convert(f.name, args[f.name]) for f in fields(cls) if args.get(f.name) is not None})

    return application(pick(ServeOptions), pick(ScaleOptions))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _running_proxy_port() -> int | None:
    """The port of the Serve HTTP proxy already running on the connected cluster, if any."""
    from ray.serve.context import _get_global_client  # Serve has no public call for this

    client = _get_global_client(raise_if_no_controller_running=False)
    return None if client is None else client.http_config.port


def serve_on_ray(replica: ServeOptions, scale: ScaleOptions, limits: Limits, host: str = "127.0.0.1",
                 port: int = 8000, address: str | None = None) -> None:
    """Connect to the Ray cluster at ``address`` (default: $RAY_ADDRESS, else a new local
    instance) and run the application until Ctrl-C or SIGTERM. Without Serve on the cluster,
    start it with its HTTP proxy on host:port, and shut it down again on stop; with Serve
    already there, add the application to it (its proxy must be on host:port) and delete only
    the application on stop."""
    import ray

    ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    # ray.init installs a SIGTERM handler that exits at once; ours must be in place before the
    # application can answer, since a client may stop us as soon as it does.
    signal.signal(signal.SIGTERM, _interrupt)
    running = _running_proxy_port()
    if running is not None and running != port:
        raise InputError("--port", f"Ray Serve already runs on this cluster with its HTTP proxy on port "
                                   f"{running}, and a running proxy cannot move: pass --port {running}, "
                                   "or stop it first (serve shutdown)")
    try:
        if running is None:
            serve.start(http_options={"host": host, "port": port})
        serve.run(application(replica, scale, limits), name=APP_NAME, route_prefix="/")
        print(f"hmer on Ray Serve at http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        if running is None:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
