"""An exported model on ONNX Runtime: encoder once per image, then one decoder call per step.

Nothing here knows a state name: they come from ``model.json``. Beam search expands every
memory and initial-state tensor to ``beam`` rows per image and reorders state rows by index, the
same code path for a GRU hidden state and a transformer key/value cache.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from hmer_runtime.errors import ModelError
from hmer_runtime.model_spec import METADATA_KEY, ModelSpec
from hmer_runtime.providers import ProviderConfig, create_session
from hmer_runtime.search import Hypothesis, beam_search, combine_r2l, greedy, log_softmax

State = dict[str, np.ndarray]


@dataclass
class Timings:
    """Milliseconds spent in the encoder and in decoder steps, and the number of steps."""

    encoder_ms: float = 0.0
    decoder_ms: float = 0.0
    steps: int = 0
    extra: dict = field(default_factory=dict)


class OnnxModel:
    """Encoder and one-step decoder sessions of one variant (fp32, fp16 or int8) of a model."""

    def __init__(self, spec: ModelSpec, variant: str = "fp32", providers: ProviderConfig | None = None):
        self.spec = spec
        self.variant = variant
        config = providers or ProviderConfig()
        if not config.trt_profiles:
            config.trt_profiles = {k: tuple(v) for k, v in spec.raw.get("tensorrt_profiles", {}).items()}
        enc_path, dec_path = spec.graph_paths(variant)
        self.encoder, self.provider = create_session(enc_path, config)
        self.decoder, _ = create_session(dec_path, config)
        for session, path in ((self.encoder, enc_path), (self.decoder, dec_path)):
            self._check_metadata(session, path)
        self._decoder_inputs = {i.name for i in self.decoder.get_inputs()}
        self._encoder_inputs = {i.name for i in self.encoder.get_inputs()}
        self.memory_names = [t.name for t in spec.memory]
        self.state_names = [t.name for t in spec.state]
        self._state_out = [f"state_out.{n}" for n in self.state_names]
        missing = [f"state_in.{n}" for n in self.state_names if f"state_in.{n}" not in self._decoder_inputs]
        if missing:
            raise ModelError(str(dec_path), f"decoder graph lacks inputs {missing} declared in model.json")

    def _check_metadata(self, session, path) -> None:
        meta = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise ModelError(str(path), "not an hmer graph (no hmer metadata)")
        try:
            sha = json.loads(meta).get("checkpoint", {}).get("sha256", "")
        except json.JSONDecodeError as e:
            raise ModelError(str(path), "hmer metadata is not valid JSON") from e
        if sha != self.spec.checkpoint_sha256:
            raise ModelError(str(path), "graph was exported from a different checkpoint than model.json describes "
                                        "(mismatched model directory)")

    def encode(self, images: np.ndarray, mask: np.ndarray) -> tuple[State, State]:
        """(memory, initial state) for a padded batch (N, 1, H, W) + (N, H, W) bool mask."""
        feeds = {"images": images.astype(np.float32, copy=False), "pixel_mask": mask.astype(bool, copy=False)}
        names = [f"memory.{n}" for n in self.memory_names] + [f"init.{n}" for n in self.state_names]
        outs = self.encoder.run(names, {k: v for k, v in feeds.items() if k in self._encoder_inputs})
        k = len(self.memory_names)
        return dict(zip(self.memory_names, outs[:k])), dict(zip(self.state_names, outs[k:]))

    def step(self, tokens: np.ndarray, state: State, memory: State) -> tuple[np.ndarray, np.ndarray, State]:
        """One decoding step for every row: logits (B, V), attention (B, h, w), next state."""
        feeds = {"tokens": tokens.astype(np.int64, copy=False)}
        for n, v in memory.items():
            if f"memory.{n}" in self._decoder_inputs:
                feeds[f"memory.{n}"] = v
        for n, v in state.items():
            feeds[f"state_in.{n}"] = v
        outs = self.decoder.run(["logits", "attention"] + self._state_out, feeds)
        return outs[0], outs[1], dict(zip(self.state_names, outs[2:]))

    def decode(self, images: np.ndarray, mask: np.ndarray, beam: int = 1, max_len: int | None = None,
               length_penalty: float | None = None, keep_attention: bool = False,
               timings: Timings | None = None) -> list[list[Hypothesis]]:
        """Hypotheses per image, best first; greedy for ``beam`` 1. All beams of all images go
        through one decoder call per step."""
        spec = self.spec
        max_len = max_len or spec.max_len
        length_penalty = spec.length_penalty if length_penalty is None else length_penalty
        t = timings if timings is not None else Timings()
        t0 = time.perf_counter()
        memory, state = self.encode(images, mask)
        t.encoder_ms += (time.perf_counter() - t0) * 1000
        n = images.shape[0]
        if beam > 1:
            rows = np.repeat(np.arange(n), beam)
            memory = {k: v[rows] for k, v in memory.items()}
            state = {k: v[rows] for k, v in state.items()}

        def step(tokens: np.ndarray, st: State):
            s0 = time.perf_counter()
            out = self.step(tokens, st, memory)
            t.decoder_ms += (time.perf_counter() - s0) * 1000
            t.steps += 1
            return out

        sos, eos = spec.vocab.sos_id, spec.vocab.eos_id
        if beam <= 1:
            return [[h] for h in greedy(step, state, n, sos, eos, max_len, keep_attention)]
        hyps = beam_search(step, reorder_state, state, n, beam, sos, eos, max_len, length_penalty, keep_attention)
        if spec.raw.get("decode", {}).get("rescore_r2l"):
            rows = np.repeat(np.arange(n * beam, step=beam), [len(hs) for hs in hyps])
            r2l = self.sequence_logprob({k: v[rows] for k, v in memory.items()},
                                        {k: v[rows] for k, v in state.items()},
                                        [h.ids[::-1] for hs in hyps for h in hs], start=eos, end=sos)
            hyps = combine_r2l(hyps, r2l, length_penalty)
        return hyps

    def sequence_logprob(self, memory: State, state: State, sequences: list[list[int]], start: int,
                         end: int) -> list[float]:
        """log P(sequence + end | image, start) for one sequence per row, one step call per position
        (used for right-to-left rescoring: start = eos, end = sos)."""
        t = max(len(s) for s in sequences) + 1
        inp = np.full((len(sequences), t), start, dtype=np.int64)
        tgt = np.full((len(sequences), t), -1, dtype=np.int64)
        for i, s in enumerate(sequences):
            inp[i, 1:len(s) + 1] = s
            tgt[i, :len(s) + 1] = s + [end]
        total = np.zeros(len(sequences), dtype=np.float64)
        for k in range(t):
            logits, _, state = self.step(inp[:, k], state, memory)
            logp = log_softmax(np.asarray(logits, dtype=np.float32))
            live = tgt[:, k] >= 0
            total[live] += logp[live, tgt[live, k]]
        return total.tolist()


def reorder_state(state: State, rows: np.ndarray) -> State:
    """State rows picked by hypothesis index, whatever the names and shapes."""
    return {k: np.take(v, rows, axis=0) for k, v in state.items()}
