"""The learning-rate range test of a notebook 03/04 configuration, with its figure saved in the run folder.

:func:`run_lr_finder` is what the notebooks' ``lr_find`` cell calls (after the loaders and the model are built,
before training); :func:`lr_find_from_params` builds both from notebook 03/04's parameters cell with overrides,
exactly as training does (:func:`fh_utils.workbook.workflow.prepare_training`), and is behind
``python -m fh_utils lr-find``. The test
itself is :func:`fh_utils.training.lr_finder.find_lr`: it trains a copy of the model and restores the data's
RNGs, so the run trained afterwards is the one it would have been.
"""

from __future__ import annotations

import ast
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from fh_utils.paths import notebooks_dir
from fh_utils.runner.notebooks import notebook_parameters
from fh_utils.runs import save_figure
from fh_utils.training.losses import class_priors
from fh_utils.training.lr_finder import LRFinderResult, find_lr
from fh_utils.workbook.workflow import RunSetup, build_loaders, build_model, prepare_training

FIGURE_NAME = "lr_find"  # figures/lr_find.png in the run folder
TRAINING_NOTEBOOKS = {"st1": "03_train_st1.ipynb", "st2": "04_train_st2.ipynb"}
RULE_STYLES = {"valley": ("#cf222e", "o"), "steep": ("#8250df", "v"), "minimum": ("#1f6feb", "s")}


def lr_finder_figure(result: LRFinderResult, run_lr: float | None = None) -> Figure:
    """The range test's loss against the learning rate (log scale), each rule's suggestion marked.

    Args:
        result: From :func:`fh_utils.training.lr_finder.find_lr`.
        run_lr: The run's own learning rate, drawn as a dashed line (default: none).
    """
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    lrs, losses = result.lrs, result.losses
    if len(result.raw_losses) == len(lrs):
        ax.plot(lrs, result.raw_losses, color="#bbbbbb", lw=0.8, label="batch loss")
    ax.plot(lrs, losses, color="#24292f", lw=1.8, label="smoothed loss")
    for rule, lr in result.suggestions.items():
        color, marker = RULE_STYLES.get(rule, ("#57606a", "x"))
        y = float(np.interp(np.log(lr), np.log(lrs), losses)) if len(lrs) > 1 else float(losses[0])
        chosen = rule == "valley"  # the suggestion
        ax.plot([lr], [y], marker=marker, color=color, ms=10 if chosen else 7, ls="none",
                label=f"{rule} {lr:.1e}" + (" (suggested)" if chosen else ""))  # fmt: skip
    if run_lr:
        ax.axvline(run_lr, color="#57606a", ls="--", lw=1, label=f"this run's lr {run_lr:.1e}")
    ax.set_xscale("log")
    finite = losses[np.isfinite(losses)]
    if len(finite):  # the blow-up at the end would flatten the part that matters
        low, high = float(finite.min()), min(float(finite.max()), 1.5 * float(finite[0]))
        if high > low:
            ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    stop = f"; stopped early: {result.stopped}" if result.stopped else ""
    ax.set_title(f"LR range test: suggested lr {result.suggestion:.1e}{stop}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    return fig


def run_lr_finder(
    setup: RunSetup,
    model: torch.nn.Module,
    loaders: dict[str, DataLoader],
    progress: bool = True,
    **sweep: Any,
) -> tuple[LRFinderResult, Figure]:
    """The range test of the run's model on its training loader, with the run's training configuration.

    The figure is saved as ``figures/lr_find.png`` in the run folder. ``model`` and the loaders are left as they
    were (:func:`fh_utils.training.lr_finder.find_lr`), so training them next gives the same run.

    Args:
        setup: From :func:`fh_utils.workbook.workflow.prepare_training`.
        model: From :func:`fh_utils.workbook.workflow.build_model`.
        loaders: From :func:`fh_utils.workbook.workflow.build_loaders`.
        progress: Show a progress bar.
        **sweep: ``start_lr``, ``end_lr``, ``num_iter``, ``smooth``, ``diverge`` of ``find_lr``.
    """
    priors = class_priors(loaders["train"].dataset.targets, setup.task) if setup.train.loss == "logit_adjust" \
        else None  # fmt: skip
    result = find_lr(model, loaders["train"], setup.train, setup.task, priors, progress=progress, **sweep)
    fig = lr_finder_figure(result, run_lr=setup.train.lr)
    save_figure(fig, setup.run_dir, FIGURE_NAME)
    return result, fig


def notebook_defaults(task: str) -> dict[str, Any]:
    """The values of the task's training notebook's parameters cell (03 for ST1, 04 for ST2), as papermill reads it."""
    declared = notebook_parameters(notebooks_dir() / TRAINING_NOTEBOOKS[task])
    return {name: ast.literal_eval(info["default"]) for name, info in declared.items() if name != "lr_find"}


def lr_find_from_params(
    task: str, params: dict[str, Any], progress: bool = True, **sweep: Any
) -> tuple[RunSetup, LRFinderResult]:
    """Notebook 03/04's set-up, loaders and model from its parameters, then :func:`run_lr_finder`.

    Args:
        task: ``"st1"`` (notebook 03) or ``"st2"`` (notebook 04).
        params: Overrides of the notebook's own parameters (:func:`notebook_defaults`; an unknown name is an
            error, as in training); the run folder is ``run_name``'s (a new one when empty), and gets the figure.
        progress: Show a progress bar.
        **sweep: ``start_lr``, ``end_lr``, ``num_iter``, ``smooth``, ``diverge`` of
            :func:`fh_utils.training.lr_finder.find_lr`.
    """
    setup = prepare_training(task, {**notebook_defaults(task), **params})
    loaders = build_loaders(setup)
    model = build_model(setup)
    result, _ = run_lr_finder(setup, model, loaders, progress=progress, **sweep)
    return setup, result
