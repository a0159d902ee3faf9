"""Where one decoder step's time goes: ONNX Runtime's profiler on the step graph, batch 1.

    python -m benchmarks.profile_step [--model DIR] [--image PATH] [--steps 50] [--threads 1]

Encodes one image, runs ``steps`` greedy steps with profiling on, and prints ms per step and the
share of kernel time per operator type and for the slowest nodes.
"""

import collections
import json
import time
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort

import hmer_runtime
from hmer_runtime.cli_util import CONTEXT_SETTINGS
from hmer_runtime.engine.model_spec import ModelSpec
from hmer_runtime.engine.onnx_model import OnnxModel
from hmer_runtime.engine.providers import ProviderConfig
from hmer_runtime.inputs.preprocess import load_image, pad_batch
from hmer_runtime.inputs.render import model_input
from hmer_runtime.recognizer import BUNDLED_MODEL


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--model", "model_dir", type=click.Path(file_okay=False))
@click.option("--image", type=click.Path(dir_okay=False))
@click.option("--steps", default=50, show_default=True)
@click.option("--threads", default=1, show_default=True)
def main(model_dir, image, steps, threads) -> None:
    spec = ModelSpec.load(model_dir or BUNDLED_MODEL)
    model = OnnxModel(spec, "fp32", ProviderConfig("cpu", threads))
    path = image or Path(hmer_runtime.__file__).parent / "samples" / "x2.png"
    x, m = pad_batch([model_input(load_image(path), spec.render, spec.preprocess, str(path))], spec.stride)
    memory, state = model.encode(x, m)
    so = ort.SessionOptions()
    so.enable_profiling, so.intra_op_num_threads = True, threads
    sess = ort.InferenceSession(str(spec.graph_paths("fp32")[1]), so, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    outs = [o.name for o in sess.get_outputs()]
    tok = np.array([spec.vocab.sos_id])
    t0 = time.perf_counter()
    for _ in range(steps):
        feeds = {"tokens": tok, "beam_index": np.array([0]), **{f"memory.{k}": v for k, v in memory.items()
                                                               if f"memory.{k}" in inputs},
                 **{f"state_in.{k}": v for k, v in state.items()}}
        res = sess.run(None, feeds)
        state = {n.removeprefix("state_out."): r for n, r in zip(outs, res) if n.startswith("state_out.")}
        tok = res[0].argmax(-1)
    ms = (time.perf_counter() - t0) * 1000 / steps
    profile = Path(sess.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    by_op, by_node = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[e["name"].removesuffix("_kernel_time")] += e["dur"]
    total = sum(by_op.values())
    click.echo(f"input {tuple(x.shape)}, {len(by_node)} nodes, {ms:.2f} ms per step ({threads} thread(s))")
    for op, us in by_op.most_common(6):
        click.echo(f"  {op:20s} {100 * us / total:5.1f} %  {us / steps / 1000:.3f} ms/step")
    for node, us in by_node.most_common(4):
        click.echo(f"  {node[:50]:50s} {us / steps:7.1f} us/step")


if __name__ == "__main__":
    main()
