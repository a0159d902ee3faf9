"""Checkpoints: written atomically, loaded without arbitrary pickle (``weights_only=True``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from hmer_runtime import __version__
from hmer_runtime.errors import ModelError
from hmer_train.config import Config, ConfigError

FORMAT = "hmer-checkpoint-1"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``. A typed
    ``config`` is stored as plain data (:meth:`Config.to_dict`)."""
    path = Path(path)
    if isinstance(payload.get("config"), Config):
        payload = {**payload, "config": payload["config"].to_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is an ordinary file
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "hmer_version": __version__, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str = "cpu", input_scale: float | None = None,
                    vocab: str | Path | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, or one of CoMER's own (Lightning)
    checkpoints with its ``vocab`` file (``dictionary.txt``; see ``hmer_train.comer_import``);
    ModelError for anything else.

    ``ckpt["config"]`` is a :class:`Config`, an older checkpoint's included. ``input_scale``
    replaces its ``decode.input_scale`` (how large the model reads its inputs; see
    ``hmer_train.config.image_configs``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(str(path), "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle refused by weights_only, ...
        raise ModelError(str(path), f"not a readable checkpoint ({type(e).__name__}: {str(e)[:120]})") from e
    from hmer_train import comer_import

    if comer_import.is_comer_checkpoint(ckpt):
        if vocab is None:
            raise ModelError(str(path), "a CoMER checkpoint: give its vocabulary file with --vocab dictionary.txt")
        ckpt = comer_import.convert_loaded(ckpt, vocab, path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ModelError(str(path), "not an hmer checkpoint (missing format tag)")
    for key in ("model", "config", "vocab"):
        if key not in ckpt:
            raise ModelError(str(path), f"checkpoint lacks '{key}'")
    _upgrade(ckpt)
    try:
        ckpt["config"] = Config.from_dict(ckpt["config"], str(path))
    except ConfigError as e:
        raise ModelError(str(path), f"its config does not load: {e.message}") from e
    if input_scale is not None:
        ckpt["config"] = ckpt["config"].updated({"decode.input_scale": float(input_scale)})
    return ckpt


def _upgrade(ckpt: dict) -> None:
    """Name the architecture options an older checkpoint was trained with where their default
    has changed since, so it rebuilds (and resumes) as the model it holds."""
    decoder = ckpt["config"].get("model", {}).get("decoder", {})
    if decoder.get("type", "comer") == "comer" and "embed_norm" not in decoder:
        decoder["embed_norm"] = "decoder.embed_norm.weight" in ckpt["model"]
    # Grammar-constrained decoding is not part of the trained weights: older checkpoints get it too.
    ckpt["config"].setdefault("decode", {}).setdefault("grammar", Config().decode.grammar)


def slim_checkpoint(src: str | Path, dst: str | Path) -> None:
    """A checkpoint to commit, a third of the size: the weights only, without the optimizer state.

    Where the run keeps a moving average (train.ema), that is the one kept, as the model: it is
    what was validated and what export uses. Resuming from a slim checkpoint continues training
    from those weights with AdamW's moments restarted (and the learning rate re-warmed); the
    average continues from them at its full decay.
    """
    save_checkpoint(dst, slimmed(load_checkpoint(src)))


def slimmed(ckpt: dict) -> dict:
    """``ckpt`` slimmed in place (see slim_checkpoint), and returned."""
    ckpt.pop("optimizer", None)
    if "ema" in ckpt:
        ema = ckpt.pop("ema")
        ckpt["model"], ckpt["averaged"], ckpt["ema_updates"] = ema["weights"], True, ema["updates"]
    ckpt.pop("format", None)
    return ckpt


def average_checkpoints(srcs: list[str | Path], dst: str | Path) -> dict:
    """Write to ``dst`` a slim checkpoint whose weights are the mean of ``srcs``' weights (each
    one's moving average where it keeps one); returns it.

    Averaging checkpoints a few epochs apart smooths the swings a single checkpoint shows between
    validations (the moving average spans well under an epoch). The result stands at the newest
    source's step, so it resumes like a slim checkpoint from there; its ``metrics`` are dropped
    (they were measured on other weights) and ``averaged_from`` names the sources' steps.
    Integer buffers (BatchNorm's batch counts) are the newest source's. ModelError when the
    sources differ in architecture or vocabulary.
    """
    if len(srcs) < 2:
        raise ValueError("average_checkpoints needs at least two checkpoints")
    named = sorted(((s, slimmed(load_checkpoint(s))) for s in srcs), key=lambda sc: sc[1].get("step") or 0)
    ckpts = [c for _, c in named]
    newest = ckpts[-1]
    for src, c in named:
        if c["vocab"] != newest["vocab"] or c["config"].model != newest["config"].model:
            raise ModelError(str(src), "not the same architecture and vocabulary as the others")
        if c["model"].keys() != newest["model"].keys() or any(
                v.shape != newest["model"][k].shape for k, v in c["model"].items()):
            raise ModelError(str(src), "its weights do not match the others' names and shapes")
    newest["model"] = {
        k: (sum(c["model"][k].double() for c in ckpts) / len(ckpts)).to(v.dtype) if v.is_floating_point() else v
        for k, v in newest["model"].items()}
    newest["averaged"] = True
    newest["averaged_from"] = [{"step": c.get("step"), "epoch": c.get("epoch")} for c in ckpts]
    newest.pop("metrics", None)
    save_checkpoint(dst, newest)
    return newest


def holds_average(ckpt: dict) -> bool:
    """Whether ``load_model``'s default weights are the run's moving average."""
    return "ema" in ckpt or bool(ckpt.get("averaged"))


def load_model(path: str | Path, map_location: str = "cpu", weights: str = "average",
               input_scale: float | None = None, vocab: str | Path | None = None):
    """(model in eval mode, vocabulary, checkpoint dict) from a checkpoint; ModelError when the
    weights do not fit the architecture the checkpoint describes.

    ``weights="average"`` gives the run's moving-average weights when the checkpoint has them
    (train.ema; what validation and best.pt selection used), else the trained weights;
    ``"trained"`` always the optimiser's own weights. ``input_scale``: see ``load_checkpoint``.
    """
    if weights not in ("average", "trained"):
        raise ValueError(f"weights must be 'average' or 'trained', not {weights!r}")
    from hmer_runtime.text.vocab import Vocab
    from hmer_train.models.base import HMERModel

    ckpt = load_checkpoint(path, map_location, input_scale, vocab)
    if weights == "trained" and ckpt.get("averaged"):
        raise ModelError(str(path), "a slimmed checkpoint: it holds only the moving average of the weights")
    vocab = Vocab.from_tokens(ckpt["vocab"])
    try:
        model = HMERModel(ckpt["config"].model, len(vocab))
        model.load_state_dict(ckpt["ema"]["weights"] if weights == "average" and "ema" in ckpt else ckpt["model"])
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise ModelError(str(path), f"weights do not match the stored architecture: {str(e)[:120]}") from e
    return model.eval(), vocab, ckpt
