"""PyTorch model -> encoder.onnx and one-step decoder.onnx, with dynamic axes from the decoder's layout.

The TorchScript-based exporter (``dynamo=False``) is used: it needs no onnxscript, emits plain
ONNX without If/Loop for these graphs, and keeps sizes read from tensors dynamic. The one place a
Python int would be frozen -- the step position -- is a state tensor (``pos``) in the decoders,
and the export check runs the graphs at other sizes than the ones traced.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from hmer_runtime.engine.model_spec import METADATA_KEY
from hmer_train.models.base import HMERModel, reorder_state

DEFAULT_OPSET = 17  # LayerNormalization needs 17


class EncoderGraph(nn.Module):
    """images, pixel_mask -> memory.* and init.* (the state before the first step)."""

    def __init__(self, model: HMERModel, memory_names: list[str], state_names: list[str]):
        super().__init__()
        self.model = model
        self.memory_names, self.state_names = memory_names, state_names

    def forward(self, images: torch.Tensor, pixel_mask: torch.Tensor):
        features, fmask = self.model.encoder(images, pixel_mask)
        memory = self.model.decoder.prepare(features, fmask)
        state = self.model.decoder.init_state(memory)
        return tuple(memory[n] for n in self.memory_names) + tuple(state[n] for n in self.state_names)


class StepGraph(nn.Module):
    """tokens, beam_index, memory.*, state_in.* -> logits, attention, state_out.*

    ``beam_index`` (batch,) picks, for each output row, the state_in row it continues: beam search
    reorders the state inside the graph, so the state can stay on the device between steps (CUDA
    IO binding) whatever its names. Greedy decoding passes 0..batch-1.
    """

    def __init__(self, model: HMERModel, memory_names: list[str], state_names: list[str]):
        super().__init__()
        self.model = model
        self.memory_names, self.state_names = memory_names, state_names

    def forward(self, tokens: torch.Tensor, beam_index: torch.Tensor, *tensors: torch.Tensor):
        k = len(self.memory_names)
        memory = dict(zip(self.memory_names, tensors[:k]))
        state = {n: t.index_select(0, beam_index) for n, t in zip(self.state_names, tensors[k:])}
        logits, attention, new = self.model.decoder.step(tokens, state, memory)
        return (logits, attention) + tuple(new[n] for n in self.state_names)


def example_inputs(n: int = 2, height: int = 48, width: int = 112) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch whose images differ in width, for tracing (sizes other than 1 on purpose)."""
    torch.manual_seed(0)
    images = torch.rand(n, 1, height, width)
    mask = torch.ones(n, height, width, dtype=torch.bool)
    mask[-1, :, width // 2:] = False
    images[-1, :, :, width // 2:] = 0
    return images, mask


def axes(shape: tuple, rename: dict[str, str] | None = None) -> dict[int, str]:
    """Dynamic axes {index: label} of a layout shape; ints are fixed."""
    rename = rename or {}
    return {i: rename.get(a, a) for i, a in enumerate(shape) if isinstance(a, str)}


def attach_metadata(path: Path, meta: dict) -> None:
    """Store the model description in the graph's metadata and run the ONNX checker."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, ensure_ascii=False)
    if "license" in meta:  # also plainly, for tools that show a graph's metadata (e.g. Netron)
        entry = model.metadata_props.add()
        entry.key, entry.value = "license", f"{meta['license']['spdx']}: {meta['license']['notice']}"
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))


def export_graphs(model: HMERModel, out_dir: Path, opset: int = DEFAULT_OPSET) -> dict:
    """Write encoder.onnx and decoder.onnx; returns the memory/state layout for model.json.

    A decoder that ``shares_memory`` is traced with two hypotheses per image, and its step graph
    takes memory with one row per image (``shared_memory`` in model.json; the memory's first axis
    is then its own dynamic size, "images")."""
    model = model.eval()
    layout = model.decoder.layout()
    images, mask = example_inputs()
    shared = model.decoder.shares_memory
    with torch.no_grad():
        features, fmask = model.encoder(images, mask)
        memory = model.decoder.prepare(features, fmask)
        state = model.decoder.init_state(memory)
        memory_names, state_names = list(memory), list(state)
        if shared:
            state = reorder_state(state, torch.arange(images.shape[0]).repeat_interleave(2))
        # Trace the step with a non-empty history so the cache axis is seen as a real size.
        tokens = torch.full((len(state[state_names[0]]),), 1, dtype=torch.long)
        for _ in range(2):
            _, _, state = model.decoder.step(tokens, state, memory)
    undeclared = [n for n in memory_names + state_names if n not in layout]
    if undeclared:
        raise ValueError(f"decoder layout() does not describe {undeclared}")
    for name, tensor in {**memory, **state}.items():
        if tensor.dim() != len(layout[name]):
            raise ValueError(f"layout of {name} has {len(layout[name])} axes, the tensor {tensor.dim()}")

    enc = EncoderGraph(model, memory_names, state_names).eval()
    enc_out = [f"memory.{n}" for n in memory_names] + [f"init.{n}" for n in state_names]
    enc_axes = {"images": {0: "batch", 2: "image_height", 3: "image_width"},
                "pixel_mask": {0: "batch", 1: "image_height", 2: "image_width"}}
    enc_axes |= {f"memory.{n}": axes(layout[n]) for n in memory_names}
    enc_axes |= {f"init.{n}": axes(layout[n]) for n in state_names}

    dec = StepGraph(model, memory_names, state_names).eval()
    dec_in = ["tokens", "beam_index"] + [f"memory.{n}" for n in memory_names] + [f"state_in.{n}" for n in state_names]
    dec_out = ["logits", "attention"] + [f"state_out.{n}" for n in state_names]
    dec_axes = {"tokens": {0: "batch"}, "beam_index": {0: "batch"}, "logits": {0: "batch"},
                "attention": {0: "batch", 1: "height", 2: "width"}}
    dec_axes |= {f"memory.{n}": axes(layout[n], {"batch": "images"} if shared else None) for n in memory_names}
    dec_axes |= {f"state_in.{n}": axes(layout[n]) for n in state_names}
    dec_axes |= {f"state_out.{n}": axes(layout[n], {"steps": "steps_next"}) for n in state_names}

    out_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(enc, (images, mask), str(out_dir / "encoder.onnx"), dynamo=False, opset_version=opset,
                          input_names=["images", "pixel_mask"], output_names=enc_out, dynamic_axes=enc_axes)
        index = torch.arange(len(tokens)).flip(0)  # not the identity, so the gather is traced
        args = (tokens, index, *(memory[n] for n in memory_names), *(state[n] for n in state_names))
        torch.onnx.export(dec, args, str(out_dir / "decoder.onnx"), dynamo=False, opset_version=opset,
                          input_names=dec_in, output_names=dec_out, dynamic_axes=dec_axes)
    for name in ("encoder.onnx", "decoder.onnx"):
        assert_no_control_flow(out_dir / name)

    def spec(names: list[str], tensors: dict) -> list[dict]:
        return [{"name": n, "shape": list(layout[n]), "dtype": str(tensors[n].dtype).removeprefix("torch.")}
                for n in names]

    return {"memory": spec(memory_names, memory), "state": spec(state_names, state), "stride": model.input_multiple,
            "shared_memory": shared}


def assert_no_control_flow(path: Path) -> None:
    """TensorRT and CUDA graphs reject If/Loop/Scan: refuse to ship a graph that has them."""
    found = {n.op_type for n in onnx.load(str(path)).graph.node} & {"If", "Loop", "Scan"}
    if found:
        raise ValueError(f"{path.name} contains control flow {sorted(found)}")


def tensorrt_profiles(spec: dict, max_batch: int = 64, opt_batch: int = 10, opt_steps: int = 16) -> dict:
    """TensorRT optimization-profile shape strings (min, opt, max) per graph, from model.json's
    layout: batch 1..max_batch, images up to the preprocessing maximum, steps 0..max_len."""
    stride = spec["stride"]
    pre = spec["preprocess"]
    max_h, max_w = -(-pre["max_height"] // stride) * stride, -(-pre["max_width"] // stride) * stride
    sizes = {
        "min": {"batch": 1, "image_height": stride, "image_width": stride, "height": 1, "width": 1, "length": 1,
                "steps": 0},
        "opt": {"batch": opt_batch, "image_height": 128, "image_width": 384, "height": 128 // stride,
                "width": 384 // stride, "length": (128 // stride) * (384 // stride), "steps": opt_steps},
        "max": {"batch": max_batch, "image_height": max_h, "image_width": max_w, "height": max_h // stride,
                "width": max_w // stride, "length": (max_h // stride) * (max_w // stride),
                "steps": spec["decode"]["max_len"]},
    }
    enc_inputs = {"images": ["batch", 1, "image_height", "image_width"],
                  "pixel_mask": ["batch", "image_height", "image_width"]}
    dec_inputs = {"tokens": ["batch"], "beam_index": ["batch"]}
    dec_inputs |= {f"memory.{t['name']}": t["shape"] for t in spec["memory"]}
    dec_inputs |= {f"state_in.{t['name']}": t["shape"] for t in spec["state"]}

    def shapes(inputs: dict, which: str) -> str:
        s = sizes[which]
        return ",".join(f"{name}:" + "x".join(str(s[d] if isinstance(d, str) else d) for d in shape)
                        for name, shape in inputs.items())

    return {graph: [shapes(inputs, w) for w in ("min", "opt", "max")]
            for graph, inputs in (("encoder", enc_inputs), ("decoder", dec_inputs))}


class ScorerGraph(nn.Module):
    """tokens (N, T), targets (N, T), image_index (N,), memory.* (one row per image) -> logprob (N,):
    log P(targets | image, tokens) for whole sequences in one call (``Decoder.logprob``), how beam
    results are rescored in the other reading direction. Each image's memory is sent once and
    gathered here for the sequences that read it."""

    def __init__(self, model: HMERModel, memory_names: list[str]):
        super().__init__()
        self.model = model
        self.memory_names = memory_names

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor, image_index: torch.Tensor, *tensors: torch.Tensor):
        memory = {n: t.index_select(0, image_index) for n, t in zip(self.memory_names, tensors)}
        return self.model.decoder.logprob(tokens, targets, memory)

    #: the memory's batch axis holds images, not sequences
    memory_batch = "images"

    @staticmethod
    def example(images: int) -> tuple[tuple, list[str], list[str], dict]:
        """(example args, input names, output names, dynamic axes) besides the memory."""
        tokens = torch.ones(images + 1, 3, dtype=torch.long)
        targets = torch.tensor([[2, 3, -1]] * (images + 1))
        index = torch.tensor([1, 0, 1][: images + 1])  # sequences per image, not the identity
        dyn = {"tokens": {0: "batch", 1: "steps"}, "targets": {0: "batch", 1: "steps"},
               "image_index": {0: "batch"}, "logprob": {0: "batch"}}
        return (tokens, targets, index), ["tokens", "targets", "image_index"], ["logprob"], dyn


#: Decoders whose teacher forcing runs all positions at once (no loop in the graph).
PARALLEL_DECODERS = ("comer", "comer-exact")


def export_teacher_forced(model: HMERModel, graph: type[nn.Module], path: Path,
                          opset: int = DEFAULT_OPSET) -> list[str]:
    """Export a teacher-forced graph over ``model`` (a module taking ``graph.example(images)``'s
    inputs, then the memory tensors; see :class:`ScorerGraph`); returns its memory input names."""
    if model.kind not in PARALLEL_DECODERS:
        raise ValueError(f"no parallel teacher-forced graph for the {model.kind} decoder "
                         "(its teacher forcing is a loop)")
    model = model.eval()
    layout = model.decoder.layout()
    images, mask = example_inputs()
    with torch.no_grad():
        memory = model.decoder.prepare(*model.encoder(images, mask))
    names = list(memory)
    args, inputs, outputs, dyn = graph.example(images.shape[0])
    per_image = {"batch": graph.memory_batch} if getattr(graph, "memory_batch", "batch") != "batch" else None
    dyn |= {f"memory.{k}": axes(layout[k], per_image) for k in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph(model, names).eval(), (*args, *(memory[k] for k in names)), str(path),
                          dynamo=False, opset_version=opset, input_names=inputs + [f"memory.{k}" for k in names],
                          output_names=outputs, dynamic_axes=dyn)
    assert_no_control_flow(path)
    return names


def export_scorer_graph(model: HMERModel, path: Path, opset: int = DEFAULT_OPSET) -> list[str]:
    """Write scorer.onnx (:class:`ScorerGraph`) for a decoder in :data:`PARALLEL_DECODERS`."""
    return export_teacher_forced(model, ScorerGraph, path, opset)
