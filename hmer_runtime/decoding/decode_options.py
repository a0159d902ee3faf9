"""``DecodeOptions``: how a model decodes, decided once.

Built from an exported model's ``model.json`` (``decode`` section) or, on the training side, from
a checkpoint's config (``hmer_runtime.engine.reading.Reading``); callers that override a
setting (a CLI flag, a benchmark) go through :meth:`DecodeOptions.with_overrides`. Every decoder
-- ``OnnxModel`` and the PyTorch ``TorchDecoder`` -- reads the policy from here: greedy or beam,
the grammar constraint, and whether beam results are rescored right to left.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

SEARCHES = ("hmer", "comer")


@dataclass(frozen=True)
class DecodeOptions:
    """``beam`` 1 is greedy. ``rescore``: re-rank beam results by the right-to-left reading (models
    trained in both directions); it applies only to beams wider than 1 under the ``hmer`` search
    (``comer`` rescores inside its own search). ``input_scale`` is the multiple of the training
    symbol size inputs are read at (fixed in an exported model's preprocessing). ``n_best``: how
    many readings per image must be ranked exactly (the best and its alternatives); rescoring
    reads right to left only the hypotheses that could enter them. It is a caller's choice, not
    the model's, so ``model.json`` does not store it. ``scales``: the sizes each input is read
    at, as multiples of ``input_scale``; with more than one, each is decoded and the reading with
    the best score across them wins (:mod:`hmer_runtime.decoding.pooling`), for that many times
    the work. ``side_beam``: the beam width at the sizes other than the model's own (the scale
    nearest 1), never wider than ``beam``; None reads every size at ``beam``."""

    beam: int = 1
    max_len: int = 200
    length_penalty: float = 1.0
    grammar: bool = False
    rescore: bool = False
    search: str = "hmer"
    input_scale: float = 1.0
    n_best: int = 1
    scales: tuple[float, ...] = (1.0,)
    side_beam: int | None = None

    def __post_init__(self):
        if self.beam < 1 or self.max_len < 1:
            raise ValueError(f"beam and max_len must be at least 1 (beam {self.beam}, max_len {self.max_len})")
        if self.side_beam is not None and self.side_beam < 1:
            raise ValueError(f"side_beam must be at least 1, not {self.side_beam}")
        if self.n_best < 1:
            raise ValueError(f"n_best must be at least 1, not {self.n_best}")
        object.__setattr__(self, "scales", tuple(float(f) for f in self.scales))  # a list from YAML or JSON
        scales = self.scales
        if not scales or not all(0.1 <= f <= 10.0 for f in scales) or len(set(scales)) < len(scales):
            raise ValueError(f"scales must be distinct multiples between 0.1 and 10, not {self.scales}")
        if self.search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, not {self.search!r}")

    @property
    def rescores(self) -> bool:
        """Whether a decode with these options rescores its beam right to left."""
        return self.rescore and self.beam > 1 and self.search == "hmer"

    def with_overrides(self, **values) -> DecodeOptions:
        """A copy with the given settings replaced; a value of None keeps the current one."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    @classmethod
    def from_model_json(cls, decode: dict) -> DecodeOptions:
        """From ``model.json``'s ``decode`` section (written by ``hmer-export``)."""
        return cls(beam=int(decode.get("beam", 1)), max_len=int(decode["max_len"]),
                   length_penalty=float(decode.get("length_penalty", 1.0)), grammar=bool(decode.get("grammar", False)),
                   rescore=bool(decode.get("rescore_r2l", False)), search=str(decode.get("search", "hmer")),
                   input_scale=float(decode.get("input_scale", 1.0)),
                   scales=decode.get("scales", (1.0,)),
                   side_beam=None if decode.get("side_beam") is None else int(decode["side_beam"]))

    def to_model_json(self) -> dict:
        """The ``decode`` section of ``model.json`` (the inverse of :meth:`from_model_json`)."""
        d = asdict(self)
        d["rescore_r2l"] = d.pop("rescore")
        del d["n_best"]
        d["scales"] = list(self.scales)
        return d
