"""Weight averaging along one run: the mean of several saved epochs' weights, as timm's ``avg_checkpoints.py``.

Averaged weights leave batch-norm running statistics that belong to none of the averaged models, so
:func:`recompute_batchnorm` runs the training data through the averaged model once (SWA's ``update_bn``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader


def average_state_dicts(paths: list[str | Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the ``"model"`` state dicts of weights files (``best.pt``-like).

    Floating tensors are averaged in float64 and cast back; integer buffers (batch-norm's
    ``num_batches_tracked``) take the last file's value.

    Raises:
        ValueError: No file, or files whose tensors do not match (another architecture).
    """
    if not paths:
        raise ValueError("weight averaging needs at least one weights file")
    states = [torch.load(p, map_location="cpu", weights_only=True)["model"] for p in paths]
    keys = list(states[0])
    for path, state in zip(paths[1:], states[1:]):
        if list(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise ValueError(f"{path} does not hold the same weights as {paths[0]}: cannot average them")
    out = {}
    for key in keys:
        first = states[0][key]
        if first.is_floating_point():
            mean = torch.stack([s[key].double() for s in states]).mean(0)
            out[key] = mean.to(first.dtype)
        else:
            out[key] = states[-1][key].clone()
    return out


def has_batchnorm(model: nn.Module) -> bool:
    """Whether the model has batch-norm layers with running statistics."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> bool:
    """Reset the batch-norm statistics and re-estimate them from one pass over ``loader``.

    A cumulative average over the batches (``momentum=None``), as ``torch.optim.swa_utils.update_bn``. The
    model is left in eval mode. Returns whether there was anything to recompute.
    """
    if not has_batchnorm(model):
        return False
    torch.optim.swa_utils.update_bn(loader, model, device=torch.device(device))
    model.eval()
    return True
