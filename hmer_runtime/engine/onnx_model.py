"""An exported model on ONNX Runtime: encoder once per image, then one decoder call per step.

Nothing here knows a state name: they come from ``model.json``. Beam search expands every
initial-state tensor to ``beam`` rows per image, and the memory too unless the step graph shares
one memory row per image across them (``shared_memory``); after each step the surviving rows'
indices go into the next step as ``beam_index`` and the graph gathers its state itself -- the
same code path for a GRU hidden state and a transformer key/value cache, and one that lets the
state stay on a GPU between steps (IO binding).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hmer_runtime.decoding.decode_options import DecodeOptions
from hmer_runtime.decoding.driver import generate
from hmer_runtime.decoding.search import Hypothesis, log_softmax, teacher_forced_inputs
from hmer_runtime.engine.batch_encoding import encode_each, image_sizes
from hmer_runtime.engine.model_spec import METADATA_KEY, ModelSpec
from hmer_runtime.engine.providers import ProviderConfig, create_session
from hmer_runtime.errors import ModelError
from hmer_runtime.text.grammar import LatexGrammar, needs_from_tables

State = dict[str, np.ndarray]


@dataclass
class Timings:
    """Milliseconds spent in the encoder, in decoder steps and in rescoring, and the number of steps."""

    encoder_ms: float = 0.0
    decoder_ms: float = 0.0
    steps: int = 0
    rescore_ms: float = 0.0


class OnnxModel:
    """Encoder and one-step decoder sessions of one variant (fp32, fp16 or int8) of a model."""

    def __init__(self, spec: ModelSpec, variant: str = "fp32", providers: ProviderConfig | None = None,
                 io_binding: bool | None = None):
        """``io_binding``: keep the decoder state on the device between steps (default: on for
        CUDA and TensorRT, where it saves two host copies of the whole state per step)."""
        self.spec = spec
        self.variant = variant
        config = providers or ProviderConfig()
        if not config.trt_profiles:
            config.trt_profiles = dict(spec.tensorrt_profiles)
        enc_path, dec_path = spec.graph_paths(variant)
        self.encoder, self.provider = create_session(enc_path, config)
        self.io_binding = self.provider in ("cuda", "tensorrt") if io_binding is None else io_binding
        self.device = "cuda" if self.provider in ("cuda", "tensorrt") else "cpu"
        self.device_id = config.device_id
        self.decoder, _ = create_session(dec_path, config)
        scorer_path = spec.scorer_path(variant)
        self.scorer = create_session(scorer_path, config)[0] if scorer_path else None
        for session, path in ((self.encoder, enc_path), (self.decoder, dec_path), (self.scorer, scorer_path)):
            if session is not None:
                self._check_metadata(session, path)
        self._decoder_inputs = {i.name for i in self.decoder.get_inputs()}
        self._encoder_inputs = {i.name for i in self.encoder.get_inputs()}
        self.memory_names = [t.name for t in spec.memory]
        self.state_names = [t.name for t in spec.state]
        self._output_layout = {**{f"memory.{t.name}": t.shape for t in spec.memory},
                               **{f"init.{t.name}": t.shape for t in spec.state}}
        self.grammar = LatexGrammar(spec.vocab, needs_from_tables(spec.grammar))
        self._state_out = [f"state_out.{n}" for n in self.state_names]
        missing = [f"state_in.{n}" for n in self.state_names if f"state_in.{n}" not in self._decoder_inputs]
        missing += [n for n in ("tokens", "beam_index") if n not in self._decoder_inputs]
        if missing:
            raise ModelError(str(dec_path), f"decoder graph lacks inputs {missing} declared in model.json")

    def _check_metadata(self, session, path) -> None:
        meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise ModelError(str(path), "not an hmer graph (no hmer metadata)")
        try:
            stored = json.loads(meta)
            sha = stored.get("checkpoint", {}).get("sha256", "")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ModelError(str(path), "hmer metadata is not valid JSON") from e
        if sha != self.spec.checkpoint_sha256:
            raise ModelError(str(path), "graph was exported from a different checkpoint than model.json describes "
                                        "(mismatched model directory)")
        # The graphs carry the vocabulary they were trained with: a model.json whose vocabulary was
        # resized or reordered would decode ids into the wrong symbols (or fail in numpy).
        if stored.get("vocab") != self.spec.vocab.tokens:
            raise ModelError(str(self.spec.directory), f"the vocabulary in model.json does not match the one stored "
                                                       f"in {Path(path).name} (edited or mismatched model directory)")

    def encode(self, images: np.ndarray, mask: np.ndarray) -> tuple[State, State]:
        """(memory, initial state) for a padded batch (N, 1, H, W) + (N, H, W) bool mask; each image
        is encoded at its own size, so it reads as it does alone (see ``batch_encoding``)."""
        names = [f"memory.{n}" for n in self.memory_names] + [f"init.{n}" for n in self.state_names]

        def run(x: np.ndarray, m: np.ndarray) -> State:
            feeds = {"images": x.astype(np.float32, copy=False), "pixel_mask": m.astype(bool, copy=False)}
            return dict(zip(names, self.encoder.run(names, {k: v for k, v in feeds.items()
                                                           if k in self._encoder_inputs})))

        outs = encode_each(run, images, mask, image_sizes(mask), self.spec.stride, self._output_layout,
                           lambda shape, like: np.zeros(shape, like.dtype))
        return ({n: outs[f"memory.{n}"] for n in self.memory_names},
                {n: outs[f"init.{n}"] for n in self.state_names})

    def step(self, tokens: np.ndarray, state: State, memory: State,
             index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, State]:
        """One decoding step: logits (B, V), attention (B, h, w), next state. Row ``b`` continues
        state row ``index[b]`` (beam reordering happens inside the graph; default: row b). With IO
        binding, ``state`` and ``memory`` values are OrtValues that stay on the device."""
        index = np.arange(len(tokens), dtype=np.int64) if index is None else index.astype(np.int64, copy=False)
        if self.io_binding:
            return self._step_bound(tokens, state, memory, index)
        feeds = {"tokens": tokens.astype(np.int64, copy=False), "beam_index": index}
        for n, v in memory.items():
            if f"memory.{n}" in self._decoder_inputs:
                feeds[f"memory.{n}"] = v
        for n, v in state.items():
            feeds[f"state_in.{n}"] = v
        outs = self.decoder.run(["logits", "attention"] + self._state_out, feeds)
        return outs[0], outs[1], dict(zip(self.state_names, outs[2:]))

    def _step_bound(self, tokens, state, memory, index):
        binding = self.decoder.io_binding()
        binding.bind_cpu_input("tokens", tokens.astype(np.int64, copy=False))
        binding.bind_cpu_input("beam_index", index)
        for n, v in memory.items():
            if f"memory.{n}" in self._decoder_inputs:
                binding.bind_ortvalue_input(f"memory.{n}", v)
        for n, v in state.items():
            binding.bind_ortvalue_input(f"state_in.{n}", v)
        binding.bind_output("logits", "cpu")
        binding.bind_output("attention", "cpu")
        for name in self._state_out:
            binding.bind_output(name, self.device, self.device_id)
        self.decoder.run_with_iobinding(binding)
        outs = binding.get_outputs()
        return outs[0].numpy(), outs[1].numpy(), dict(zip(self.state_names, outs[2:]))

    def to_device(self, tensors: State) -> State:
        """numpy arrays -> OrtValues on this model's device (identity without IO binding)."""
        if not self.io_binding:
            return tensors
        import onnxruntime as ort

        return {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), self.device, self.device_id)
                for k, v in tensors.items()}

    def decode(self, images: np.ndarray, mask: np.ndarray, options: DecodeOptions,
               keep_attention: bool = False, timings: Timings | None = None) -> list[list[Hypothesis]]:
        """Hypotheses per image, best first, decoded as ``options`` say (the model's own are
        ``spec.decode``) by the shared driver; all beams of all images go through one decoder call
        per step."""
        vocab = self.spec.vocab
        return generate(_Backend(self, timings if timings is not None else Timings()), images, mask, options,
                        vocab.sos_id, vocab.eos_id, self.grammar if options.grammar else None, keep_attention)

    def sequence_logprob(self, memory: State, state: State, images: np.ndarray, sequences: list[list[int]],
                         start: int, end: int, timings: Timings | None = None) -> list[float]:
        """log P(sequence + end | image, start) per sequence, for rescoring in the other reading
        direction (right to left: start = eos, end = sos). ``memory`` and ``state`` hold one host
        row per image, ``images`` the image of each sequence. With a scorer graph, one call per
        image (its candidates have similar lengths, so little padding is scored); otherwise one
        step call per position."""
        if not sequences:
            return []
        s0 = time.perf_counter()
        if self.scorer is not None:
            total = np.zeros(len(sequences), dtype=np.float64)
            names = [i.name for i in self.scorer.get_inputs() if i.name.startswith("memory.")]
            for image in np.unique(images):
                rows = np.flatnonzero(images == image)
                inputs, targets = teacher_forced_inputs([sequences[r] for r in rows], start, end)
                feeds = {"tokens": inputs, "targets": targets, "image_index": np.zeros(len(rows), dtype=np.int64)}
                feeds |= {n: memory[n.removeprefix("memory.")][image:image + 1] for n in names}
                total[rows] = self.scorer.run(["logprob"], feeds)[0]
        else:
            inputs, targets = teacher_forced_inputs(sequences, start, end)
            rows_memory = self.to_device({k: v[images] for k, v in memory.items()})
            rows_state = self.to_device({k: v[images] for k, v in state.items()})
            total = np.zeros(len(sequences), dtype=np.float64)
            for k in range(inputs.shape[1]):
                logits, _, rows_state = self.step(inputs[:, k], rows_state, rows_memory)
                logp = log_softmax(np.asarray(logits, dtype=np.float32))
                live = targets[:, k] >= 0
                total[live] += logp[live, targets[live, k]]
        if timings is not None:
            timings.rescore_ms += (time.perf_counter() - s0) * 1000
        return total.tolist()


class _Backend:
    """One decode call's view of an :class:`OnnxModel` for the driver (``decoding.driver``), with
    the call's own timings (a model may decode in several threads at once)."""

    def __init__(self, model: OnnxModel, timings: Timings):
        self.model, self.t = model, timings
        self.shares_memory = model.spec.shared_memory

    def encode(self, images: np.ndarray, mask: np.ndarray) -> tuple[State, State]:
        t0 = time.perf_counter()
        out = self.model.encode(images, mask)
        self.t.encoder_ms += (time.perf_counter() - t0) * 1000
        return out

    def gather(self, tree: State, index: np.ndarray) -> State:
        return {k: v[index] for k, v in tree.items()}

    def sequence_logprob(self, memory, state, images, sequences, start, end) -> list[float]:
        return self.model.sequence_logprob(memory, state, images, sequences, start, end, timings=self.t)

    def search_steps(self, memory: State, state: State, rows: int, per_image: int):
        """The search holds (state, pending reorder); the reorder is applied by the next step's
        graph, so the state never leaves the device. When the search drops the rows of finished
        images, the graph keeps running them (their outputs unused) until at most half of its rows
        are live, and only then are the memory rows gathered: the memory is copied a few times per
        batch, not once per image."""
        model, t = self.model, self.t
        held = {"host": memory, "device": model.to_device(memory), "slots": np.arange(rows), "rows": rows}
        fill, shared = model.spec.vocab.eos_id, self.shares_memory

        def step(tokens: np.ndarray, st):
            slots, graph_rows = held["slots"], held["rows"]
            if len(slots) < graph_rows:  # rows of finished images still in the graph
                full = np.full(graph_rows, fill, dtype=np.int64)
                full[slots] = tokens
                tokens = full
            s0 = time.perf_counter()
            logits, attn, new = model.step(tokens, st[0], held["device"], st[1])
            t.decoder_ms += (time.perf_counter() - s0) * 1000
            t.steps += 1
            if len(slots) < graph_rows:
                logits, attn = logits[slots], attn[slots]
            return logits, attn, (new, None)

        def reorder(st, rows: np.ndarray):
            slots, graph_rows = held["slots"], held["rows"]
            source = slots[rows]  # the graph rows that the search's next rows continue
            before = np.arange(graph_rows) if st[1] is None else st[1]
            if 2 * len(rows) <= graph_rows:  # compact: the graph runs the live rows only
                # the search keeps whole images (per_image rows each), so an image's first row names it
                keep = source[::per_image] // per_image if shared else source
                held["host"] = {k: v[keep] for k, v in held["host"].items()}
                held["device"], held["slots"] = model.to_device(held["host"]), np.arange(len(rows))
                held["rows"] = len(rows)
                return st[0], before[source]
            # rows stay within their image, whose memory rows are per_image consecutive graph rows
            slots = source // per_image * per_image + np.arange(len(rows)) % per_image
            index = np.arange(graph_rows)
            index[slots] = source
            held["slots"] = slots
            return st[0], before[index]

        return step, reorder, (model.to_device(state), None)

