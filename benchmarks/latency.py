"""``hmer-bench``: recognition latency on this hardware, ONNX Runtime variants against PyTorch eager.

One run, same inputs, same decoding for every variant:

* ONNX Runtime with the cached one-step decoder, per graph variant (fp32, int8, fp16) and provider;
* PyTorch eager on the checkpoint (``--checkpoint``, when torch is installed);
* a length sweep: cost of decoding exactly L tokens with the cache against a no-cache decoder that
  re-runs the whole prefix every step (how research code and other ONNX ports decode).

Latency is per expression (a batch's wall time divided by its size), after warming up on the
largest batches (``WARMUP_BATCHES``: ONNX Runtime plans and allocators grow to the largest shapes
once; a whole extra pass over 200 CROHME expressions would double the run).
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

from hmer_runtime.cli_util import CONTEXT_SETTINGS, GRAMMAR_OPTION, run_cli
from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.engine.model_spec import ModelSpec
from hmer_runtime.engine.onnx_model import OnnxModel, Timings
from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.inputs.preprocess import pad_batch

WARMUP_BATCHES = 4
#: The project's own expressions of realistic length (``benchmarks/bench_set.py``), used without --data.
BENCH_SET = Path(__file__).resolve().parent / "expressions"


@dataclass
class Row:
    variant: str
    provider: str
    beam: int
    batch: int
    expressions: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    ms_per_token: float
    expr_per_s: float
    encoder_ms: float
    decoder_ms: float
    rescore_ms: float  # right-to-left rescoring (the scorer graph)
    search_ms: float  # the rest: the search in Python, state and memory copies
    tokens: float
    peak_rss_mb: float
    vs_eager: float | None = None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_inputs(spec: ModelSpec, data: str | None, limit: int) -> list[np.ndarray]:
    """Model inputs: the first ``limit`` expressions of a source, or of the bundled benchmark set."""
    from hmer_runtime.inputs.preprocess import load_image
    from hmer_runtime.inputs.render import model_input
    from hmer_runtime.inputs.sources import iter_source

    if data is None:
        files = sorted(BENCH_SET.glob("*.png"))[:limit]
        return [model_input(load_image(f), spec.render, spec.preprocess, str(f)) for f in files]
    out = []
    for sample in iter_source(data):
        try:
            out.append(model_input(sample.load(), spec.render, spec.preprocess, sample.name))
        except Exception:  # noqa: BLE001 - a benchmark skips unreadable samples
            continue
        if len(out) >= limit:
            break
    return out


def _batches(images: list[np.ndarray], batch: int) -> list[list[np.ndarray]]:
    order = sorted(range(len(images)), key=lambda i: images[i].size)  # similar sizes together, as a server would
    return [[images[i] for i in order[k:k + batch]] for k in range(0, len(order), batch)]


def _row(variant, provider, beam, batch, per_expr: list[float], tokens: list[int], enc: float, dec: float,
         n_expr: int, rescore: float = 0.0) -> Row:
    a = np.array(per_expr)
    total_s = a.sum() / 1000
    n = len(a)
    return Row(variant, provider, beam, batch, n_expr, float(np.percentile(a, 50)), float(np.percentile(a, 90)),
               float(np.percentile(a, 99)), float(a.sum() / max(1, sum(tokens) + len(tokens))),
               n / total_s, enc / n, dec / n, rescore / n, (a.sum() - enc - dec - rescore) / n,
               float(np.mean(tokens)), peak_rss_mb())


def time_onnx(model: OnnxModel, images: list[np.ndarray], options: DecodeOptions, batch: int, runs: int) -> Row:
    stride = model.spec.stride
    chunks = [pad_batch(c, stride) + (len(c),) for c in _batches(images, batch)]
    for x, m, _ in chunks[-WARMUP_BATCHES:]:
        model.decode(x, m, options)
    per_expr, tokens, enc, dec, rescore = [], [], 0.0, 0.0, 0.0
    for _ in range(runs):
        for x, m, n in chunks:
            t = Timings()
            t0 = time.perf_counter()
            hyps = model.decode(x, m, options, timings=t)
            ms = (time.perf_counter() - t0) * 1000
            per_expr += [ms / n] * n
            tokens += [len(h[0].ids) for h in hyps]
            enc, dec, rescore = enc + t.encoder_ms, dec + t.decoder_ms, rescore + t.rescore_ms
    return _row(model.variant, model.provider, options.beam, batch, per_expr, tokens, enc, dec, len(images),
                rescore)


def time_torch(loaded: tuple, images: list[np.ndarray], options: DecodeOptions, batch: int, runs: int,
               device: str = "cpu", autocast: str = "none") -> Row:
    """PyTorch eager on ``loaded`` = load_model(checkpoint), on ``device`` (cpu or cuda), in fp32
    or under ``autocast`` (fp16 or bf16). The encoder split comes from a separate, untimed-in-total
    encode call per batch."""
    import contextlib

    import torch

    from hmer_train.decoding import TorchDecoder

    model, vocab, _ = loaded
    model = model.to(device)
    decoder = TorchDecoder(model, vocab)
    cast = torch.autocast(device, dtype=getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[autocast])) \
        if autocast != "none" else contextlib.nullcontext()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    chunks = [tuple(torch.from_numpy(a).to(device) for a in pad_batch(c, 16)) + (len(c),)
              for c in _batches(images, batch)]

    def run(x, m):
        with cast:
            return decoder.decode(x, m, options)

    for x, m, _ in chunks[-WARMUP_BATCHES:]:
        run(x, m)
    per_expr, tokens, enc = [], [], 0.0
    for _ in range(runs):
        for x, m, n in chunks:
            t0 = time.perf_counter()
            with torch.no_grad(), cast:
                model.encode(x, m)
            sync()
            enc += (time.perf_counter() - t0) * 1000
            t0 = time.perf_counter()
            hyps = run(x, m)
            ms = (time.perf_counter() - t0) * 1000
            per_expr += [ms / n] * n
            tokens += [len(h[0].ids) for h in hyps]
    total = sum(per_expr)
    variant = "pytorch-eager" + ("" if autocast == "none" else f"-{autocast}")
    return _row(variant, device, options.beam, batch, per_expr, tokens, enc, total - enc, len(images))


def length_sweep(model: OnnxModel, images: list[np.ndarray], lengths: list[int], ckpt: str | None,
                 runs: int, vocab: str | None = None) -> dict[str, dict[int, float]]:
    """ms per expression (batch 1) to decode exactly L tokens: cached step graph vs. no-cache prefix
    graph (exported on the fly from ``ckpt``; comer only)."""
    import tempfile

    spec = model.spec
    sos = spec.vocab.sos_id
    out: dict[str, dict[int, float]] = {f"cached {model.variant}": {}}
    prefix = None
    if ckpt:
        import onnxruntime as ort

        from hmer_bench.prefix_graph import export_prefix_graph
        from hmer_train.checkpoint import load_model

        torch_model, _, _ = load_model(ckpt, vocab=vocab)
        if torch_model.kind in ("comer", "comer-exact"):
            path = Path(tempfile.mkdtemp()) / "prefix.onnx"
            names = export_prefix_graph(torch_model, path)
            so = ort.SessionOptions()
            so.intra_op_num_threads = model.encoder.get_session_options().intra_op_num_threads
            prefix = (ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]), names)
            out["no-cache fp32"] = {}
    for L in lengths:
        cached, nocache = [], []
        for _ in range(runs):
            for im in images:
                x, m = pad_batch([im], spec.stride)
                memory, state = model.encode(x, m)
                tok = np.array([sos], dtype=np.int64)
                t0 = time.perf_counter()
                seq = [sos]
                for _ in range(L):
                    logits, _, state = model.step(tok, state, memory)
                    tok = logits.argmax(-1).astype(np.int64)
                    seq.append(int(tok[0]))
                cached.append((time.perf_counter() - t0) * 1000)
                if prefix:
                    sess, names = prefix
                    feeds = {f"memory.{n}": memory[n] for n in names}
                    t0 = time.perf_counter()
                    for t in range(1, L + 1):
                        sess.run(None, {"tokens": np.array([seq[:t]], dtype=np.int64), **feeds})
                    nocache.append((time.perf_counter() - t0) * 1000)
        out[f"cached {model.variant}"][L] = float(np.median(cached))
        if prefix:
            out["no-cache fp32"][L] = float(np.median(nocache))
    return out


def markdown(rows: list[Row], sweep: dict, meta: dict) -> str:
    lines = [f"Model `{meta['model']}` ({meta['parameters']:,} parameters), {meta['expressions']} expressions "
             f"({meta['data']}), {meta['threads']} threads, {meta['runs']} runs after warm-up, "
             f"grammar {'on' if meta.get('grammar') else 'off'}.", "",
             "| variant | provider | beam | batch | p50 ms | p90 ms | p99 ms | mean ms | ms/token | expr/s | "
             "encoder ms | decoder ms | rescore ms | search ms | tokens | peak RSS MiB | speed-up vs eager |",
             "|" + "---|" * 17]
    for r in rows:
        ratio = f"{r.vs_eager:.2f}x" if r.vs_eager else "-"
        lines.append(f"| {r.variant} | {r.provider} | {r.beam} | {r.batch} | {r.p50_ms:.1f} | {r.p90_ms:.1f} | "
                     f"{r.p99_ms:.1f} | {1000 / r.expr_per_s:.1f} | {r.ms_per_token:.2f} | {r.expr_per_s:.1f} | "
                     f"{r.encoder_ms:.1f} | {r.decoder_ms:.1f} | {r.rescore_ms:.1f} | {r.search_ms:.1f} | "
                     f"{r.tokens:.1f} | {r.peak_rss_mb:.0f} | {ratio} |")
    if sweep:
        lengths = sorted(next(iter(sweep.values())))
        lines += ["", "Decoding exactly L tokens (batch 1, decoder only, ms per expression):", "",
                  "| decoder | " + " | ".join(f"L={n}" for n in lengths) + " |", "|" + "---|" * (len(lengths) + 1)]
        for name, series in sweep.items():
            lines.append(f"| {name} | " + " | ".join(f"{series[n]:.1f}" for n in lengths) + " |")
        if "no-cache fp32" in sweep:
            base = sweep[next(k for k in sweep if k.startswith("cached"))]
            lines.append("| cache speed-up | " + " | ".join(f"{sweep['no-cache fp32'][n] / base[n]:.1f}x"
                                                           for n in lengths) + " |")
    return "\n".join(lines) + "\n"


def plot(sweep: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, series in sweep.items():
        xs = sorted(series)
        ax.plot(xs, [series[x] for x in xs], marker="o", label=name)
    ax.set_xlabel("expression length (tokens)")
    ax.set_ylabel("decoder ms per expression")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def _ints(s: str) -> list[int]:
    """A comma list of positive integers (beams, batch sizes, lengths); a UsageError otherwise."""
    try:
        values = [int(v) for v in s.split(",") if v.strip()]
    except ValueError as e:
        raise click.UsageError(f"expected a comma list of whole numbers, not {s!r}") from e
    if any(v < 1 for v in values):
        raise click.UsageError(f"every value must be at least 1: {s!r}")
    return values


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="Model directory (default: bundled).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Checkpoint for the PyTorch eager and no-cache "
                                                                      "baselines (needs torch).")
@click.option("--data", type=click.Path(exists=True),
              help="Images/InkML source, e.g. a CROHME archive (default: the bundled benchmark set).")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(min=1),
              help="Expressions taken from --data.")
@click.option("--provider", "providers", default="auto", show_default=True,
              help="Comma list of providers to measure: auto, cpu, cuda, tensorrt.")
@click.option("--variants", default="fp32,int8", show_default=True, help="Graph variants present in the model.")
@click.option("--beam", "beams", default="1,5,10", show_default=True)
@click.option("--batch-size", "--batch", "batches", default="1,8", show_default=True, help="Comma list of batch sizes.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=0))
@click.option("--runs", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--lengths", default="10,25,50,100", show_default=True, help="Length sweep (tokens); empty = skip.")
@click.option("-o", "--output", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per measured row instead of markdown.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False))
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), help="PNG of latency vs length (matplotlib).")
@GRAMMAR_OPTION
@click.option("--device", "devices", default="cpu", show_default=True,
              help="Comma list of devices for PyTorch eager: cpu,cuda.")
@click.option("--autocast", "autocasts", default="none", show_default=True,
              help="Comma list of PyTorch eager precisions: none (fp32), fp16, bf16.")
@click.option("--vocab", type=click.Path(dir_okay=False), help="A CoMER checkpoint's dictionary.txt.")
@click.option("--debug", is_flag=True)
def main(model_dir, checkpoint, data, limit, providers, variants, beams, batches, threads, runs, lengths, json_out,
         as_json, md_out, plot_out, grammar, devices, autocasts, vocab, debug) -> None:
    """Measure recognition latency and throughput on this machine."""
    from hmer_runtime.cli_util import PROVIDERS
    from hmer_runtime.recognizer import BUNDLED_MODEL

    unknown = [p for p in providers.split(",") if p not in PROVIDERS]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)} (choose from {', '.join(PROVIDERS)})", param_hint="--provider")

    spec = ModelSpec.load(model_dir or BUNDLED_MODEL)
    images = load_inputs(spec, data, limit)
    if not images:
        raise click.UsageError("no usable inputs")
    rows: list[Row] = []
    eager: dict[tuple[int, int], Row] = {}
    options = spec.decode.with_overrides(grammar=grammar)  # every variant and eager decode alike
    if checkpoint:
        try:
            import torch
        except ImportError:
            click.echo("torch not installed (extra train): no PyTorch eager or no-cache baseline", err=True)
            checkpoint = None
        else:
            from hmer_train.checkpoint import load_model

            torch.set_num_threads(threads)
            loaded = load_model(checkpoint, vocab=vocab)
            for device in devices.split(","):
                for cast in autocasts.split(","):
                    for beam in _ints(beams):
                        for batch in _ints(batches):
                            click.echo(f"pytorch eager {device} {cast} beam {beam} batch {batch}", err=True)
                            row = time_torch(loaded, images, options.with_overrides(beam=beam), batch, runs, device,
                                             cast)
                            eager.setdefault((beam, batch), row)  # the first device/precision is the baseline
                            rows.append(row)
    first = None
    for provider in providers.split(","):
        for variant in variants.split(","):
            if variant not in spec.variants:
                click.echo(f"skipping {variant}: not in the model", err=True)
                continue
            model = OnnxModel(spec, variant, ProviderConfig(provider, threads))
            first = first or model
            for beam in _ints(beams):
                for batch in _ints(batches):
                    click.echo(f"{variant} on {model.provider} beam {beam} batch {batch}", err=True)
                    row = time_onnx(model, images, options.with_overrides(beam=beam), batch, runs)
                    base = eager.get((beam, batch))
                    row.vs_eager = base.p50_ms / row.p50_ms if base else None
                    rows.append(row)
    sweep = length_sweep(first, images[:3], _ints(lengths), checkpoint, 1, vocab) if first and _ints(lengths) else {}
    meta = {"model": str(spec.directory), "parameters": spec.parameters, "expressions": len(images),
            "data": data or "the bundled benchmark set", "threads": threads, "runs": runs,
            "grammar": options.grammar}
    md = markdown(rows, sweep, meta)
    if as_json:
        for r in rows:
            click.echo(json.dumps(asdict(r)))
    else:
        click.echo(md)
    if md_out:
        Path(md_out).write_text(md)
    if json_out:
        Path(json_out).write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows], "sweep": sweep},
                                             indent=1))
    if plot_out and sweep and not plot(sweep, Path(plot_out)):
        click.echo("matplotlib not installed: no plot", err=True)


def run() -> None:
    run_cli(main)


if __name__ == "__main__":
    run()
