"""The token vocabulary: special ids, encode/decode, a versioned JSON file."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)
VOCAB_FORMAT = 1


class Vocab:
    """Token <-> id mapping. Ids 0..3 are pad, sos, eos, unk; the rest are sorted symbols."""

    def __init__(self, symbols: Iterable[str]):
        symbols = [s for s in symbols if s not in SPECIALS]
        if len(set(symbols)) != len(symbols):
            raise ValueError("duplicate symbols in vocabulary")
        self.tokens: list[str] = list(SPECIALS) + symbols
        self.index = {t: i for i, t in enumerate(self.tokens)}
        self.pad_id, self.sos_id, self.eos_id, self.unk_id = range(4)

    @classmethod
    def from_tokens(cls, tokens: list[str]) -> Vocab:
        """The vocabulary whose full token list (specials first) is ``tokens``: how checkpoints,
        model.json and vocabulary files store it; ValueError if the specials are not in front."""
        if list(tokens[:4]) != list(SPECIALS):
            raise ValueError("vocabulary does not start with the special tokens")
        vocab = cls(tokens[4:])
        if vocab.tokens != list(tokens):
            raise ValueError("vocabulary lists a special token or a symbol twice")
        return vocab

    @classmethod
    def build(cls, sequences: Iterable[list[str]], min_count: int = 1) -> Vocab:
        """Vocabulary of every symbol seen at least ``min_count`` times, in sorted order."""
        counts = Counter(t for seq in sequences for t in seq)
        return cls(sorted(t for t, c in counts.items() if c >= min_count))

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.tokens == other.tokens

    def encode(self, tokens: list[str], unknown: Counter | None = None) -> list[int]:
        """Ids for tokens; symbols not in the vocabulary become ``<unk>`` and are counted in ``unknown``."""
        ids = []
        for t in tokens:
            i = self.index.get(t)
            if i is None:
                if unknown is not None:
                    unknown[t] += 1
                i = self.unk_id
            ids.append(i)
        return ids

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens for ids, stopping at ``<eos>`` and skipping pad/sos."""
        ids = [int(i) for i in ids]
        return [self.tokens[ids[j]] if 0 <= ids[j] < len(self.tokens) else UNK for j in self.kept(ids)]

    def kept(self, ids: Iterable[int]) -> list[int]:
        """The positions of ``ids`` that :meth:`decode` turns into tokens (before ``<eos>``, not
        pad or sos), e.g. to keep a decoded token's attention map beside it."""
        out = []
        for j, i in enumerate(ids):
            if int(i) == self.eos_id:
                break
            if int(i) not in (self.pad_id, self.sos_id):
                out.append(j)
        return out

    def unknown_symbols(self, sequences: Iterable[list[str]]) -> Counter:
        """Counts of the symbols in ``sequences`` that this vocabulary lacks."""
        return Counter(t for seq in sequences for t in seq if t not in self.index)

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"format": VOCAB_FORMAT, "tokens": self.tokens, "digest": self.digest}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        if d.get("format") != VOCAB_FORMAT:
            raise ValueError(f"unsupported vocabulary format {d.get('format')!r}")
        return cls.from_tokens(d["tokens"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_dict(json.loads(Path(path).read_text()))
