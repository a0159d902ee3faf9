"""Exponential moving average of the model's weights, the model that is validated and exported."""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel


def ema_model(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (parameters and BatchNorm statistics) updated with
    ``ema.update_parameters(model)`` after each optimiser step.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as timm and YOLO do), so
    a short run's average is not dominated by its random initialisation.
    """

    def average(avg: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, float((1 + n) / (10 + n)))
        return avg.lerp(current, 1 - d) if avg.is_floating_point() else current

    return AveragedModel(model, avg_fn=average, use_buffers=True)


def ema_state(ema: AveragedModel) -> dict:
    """Checkpoint form: the averaged weights under the model's own keys, plus the update count."""
    return {"weights": ema.module.state_dict(), "updates": int(ema.n_averaged)}


def load_ema_state(ema: AveragedModel, state: dict) -> None:
    ema.module.load_state_dict(state["weights"])
    ema.n_averaged.fill_(state["updates"])
