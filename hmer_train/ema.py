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

    @torch.no_grad()
    def average(avg: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        # Called once per (device, dtype) group: one fused lerp instead of a loop over tensors.
        if avg[0].is_floating_point():
            d = min(decay, (1 + int(n)) / (10 + int(n)))
            torch._foreach_lerp_(avg, current, 1 - d)
        else:  # BatchNorm's batch counters
            torch._foreach_copy_(avg, current)

    return AveragedModel(model, multi_avg_fn=average, use_buffers=True)


def ema_state(ema: AveragedModel) -> dict:
    """Checkpoint form: the averaged weights under the model's own keys, plus the update count."""
    return {"weights": ema.module.state_dict(), "updates": int(ema.n_averaged)}


def load_ema_state(ema: AveragedModel, state: dict) -> None:
    ema.module.load_state_dict(state["weights"])
    ema.n_averaged.fill_(state["updates"])
