"""Notebooks 03 (ST1) and 04 (ST2) as functions: one parameters cell becomes one :class:`RunSetup`.

Both notebooks are the same notebook for another ``task``. Their flat parameters are routed here into the
three configuration objects the package knows, each saved in ``config.json`` under its own key:

- ``data``: :class:`fh_utils.data.config.DataConfig` (loaders),
- ``model``: :class:`fh_utils.models.config.ModelConfig` (:func:`fh_utils.models.create_model`; the data
  configuration takes its input side and colour spaces from it),
- ``train``: :class:`fh_utils.training.config.TrainConfig` (the engine),

plus ``run`` (the notebook-level choices: run name, resume, the ``imbalance`` knob that sets both the sampler and
the loss). A parameter that none of them declares is an error, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from fh_utils.config import UnknownSettingError, field_names
from fh_utils.data.config import DataConfig
from fh_utils.data.datasets import create_loaders
from fh_utils.data.workers import resolve_num_workers
from fh_utils.io import read_json, write_json
from fh_utils.models.config import ModelConfig
from fh_utils.models.factory import create_model
from fh_utils.paths import resolve_data_root, runs_dir
from fh_utils.runs import BASELINE_FILE, LAST_CKPT, create_run_dir, latest_run, run_candidates
from fh_utils.scoring.report import ESTIMATES_KEY, write_run_estimates
from fh_utils.sweeps.trial import pruning_callbacks, split_run_name
from fh_utils.tasks import Task, get_task
from fh_utils.training.config import TrainConfig
from fh_utils.training.device import resolve_device
from fh_utils.training.engine import FitResult, fit, seed_everything
from fh_utils.training.losses import class_priors
from fh_utils.training.optim import resolve_lr
from fh_utils.training.tta import check_tta

IMBALANCE_MODES = ("none", "sampler", "logit_adjust")
MODEL_PARAMETERS = tuple(field_names(ModelConfig))
RUN_PARAMETERS = ("run_name", "resume", "imbalance", "color_baseline", "tta", "teacher", "epochs_from", "lr_find")


def training_parameter_names() -> tuple[str, ...]:
    """Every parameter notebooks 03/04 may set (the union of the configurations' fields and the run's)."""
    names = ["data_root", *RUN_PARAMETERS, *MODEL_PARAMETERS, *field_names(DataConfig), *field_names(TrainConfig)]
    return tuple(dict.fromkeys(names))


@dataclass
class RunSetup:
    """Everything one training run is made of, resolved: task, folders, device and the three configurations."""

    task: Task
    run_dir: Path
    device: torch.device
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    run: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    split_record: dict[str, Any] = field(default_factory=dict)

    def sections(self) -> dict[str, dict]:
        """The ``config.json`` sections this setup contributes (the engine adds ``train``, ``task``, ...).

        ``model`` is the model configuration, which the engine completes with the built model's record.
        ``split`` records which rows trained and which validated (:func:`fh_utils.data.folds.split_record`:
        for ``split="fold:K/N"`` the fold of every train and val row), filled by :func:`build_loaders`.
        """
        return {"run": self.run, "data": self.data.to_dict(), "model": self.model.to_dict(),
                "split": self.split_record or {"split": self.data.split}}  # fmt: skip

    def describe(self) -> str:
        """A few lines for the notebook's derived-values cell."""
        d, t, m = self.data, self.train, self.model
        lines = [
            f"task      {self.task.name}: {self.task.title}",
            f"data root {d.data_root}",
            f"run dir   {self.run_dir}",
            f"device    {self.device} (amp {t.amp}, {d.num_workers} loader workers)",
            f"model     {m.backbone} @ {m.img_size} px, pretrained={m.pretrained!r}",
            f"training  epochs {t.epochs}, batch {d.batch_size}, {t.optimizer} lr {t.lr:g}, {t.scheduler}, "
            f"imbalance={self.run['imbalance']}",
            f"split     {d.split}" + (" (train + val, no validation)" if d.split == "full" else ""),
        ]
        if d.resize == "letterbox":  # travels with the model: notebook 05 and the package letterbox alike
            lines.append(f"crops     letterbox to {m.img_size} px, pad colour {d.pad_value} (the aspect kept)")
        if d.exclude:  # an exclusion list (notebook 08's label_issues.csv): training rows only
            lines.append(f"exclude   {d.exclude} (left out of training only; validation unchanged)")
        return "\n".join(lines + self.notes)


def notebook_parameters(namespace: dict[str, Any]) -> dict[str, Any]:
    """The training parameters found in a notebook's ``globals()``."""
    return {k: namespace[k] for k in training_parameter_names() if k in namespace}


def _split_parameters(task: Task, params: dict[str, Any]) -> tuple[dict, ModelConfig, dict, dict]:
    known = set(training_parameter_names())
    unknown = sorted(set(params) - known)
    if unknown:
        raise UnknownSettingError(f"unknown training parameter(s) {unknown}; known: {', '.join(sorted(known))}")
    run = {"run_name": "", "resume": False, "imbalance": "none", "color_baseline": task.name == "st2", "tta": "none"}
    run.update({k: params[k] for k in RUN_PARAMETERS if k in params})
    run.setdefault("teacher", "")  # knowledge distillation: see resolve_teacher
    run.setdefault("epochs_from", "")  # a fold sweep whose cross-validated epoch count replaces `epochs`
    run.setdefault("lr_find", False)  # the notebooks' LR range test before training (fh_utils.workbook.lr_find)
    run["tta"] = check_tta(run["tta"])  # test-time augmentation of the notebook's final evaluation
    if run["imbalance"] not in IMBALANCE_MODES:
        raise ValueError(f"imbalance must be one of {IMBALANCE_MODES}, got {run['imbalance']!r}")
    model = ModelConfig.from_dict({k: params[k] for k in MODEL_PARAMETERS if k in params})
    # The input side and colour spaces are the model's settings: the data configuration takes them from it.
    data = {k: params[k] for k in field_names(DataConfig) if k in params and k not in MODEL_PARAMETERS}
    train = {k: params[k] for k in field_names(TrainConfig) if k in params}
    return run, model, data, train


def prepare_training(task: str, params: dict[str, Any]) -> RunSetup:
    """Resolve a training notebook's parameters into a :class:`RunSetup`.

    The task gets its class names from ``classes.json``; the run folder is created.

    A model setting left out takes its backbone's default (:func:`fh_utils.models.config.backbone_defaults`).
    ``lr = 0`` means automatic (:func:`fh_utils.training.optim.default_lr`): the backbone's fine-tuning rate with
    pretrained weights (5e-6, the seed's), else its from-scratch rate (1e-4).
    ``num_workers = -1`` means automatic (:func:`fh_utils.data.workers.resolve_num_workers`); the resolved number
    is recorded. With ``resume=True`` and no ``run_name``, the newest run of ``task`` that has a ``last.pt`` is
    continued.

    Raises:
        UnknownSettingError: A parameter that no configuration declares.
    """
    params = dict(params)
    data_root = resolve_data_root(params.pop("data_root", ""))
    task_obj = get_task(task, data_root)
    run, model, data, train = _split_parameters(task_obj, params)
    device = resolve_device(train.get("device", "auto"))
    # Deferred re-balancing (``rebalance``) takes the place of imbalance="sampler": plain sampling until its epoch.
    balanced = run["imbalance"] == "sampler" and train.get("rebalance", "none") == "none"
    data.update(data_root=str(data_root), **model.data_settings(), sampler="balanced" if balanced else "shuffle")
    # A sweep trial gets its share of the cores as ``threads`` (fh_utils.sweeps.worker): its workers come from it.
    data["num_workers"] = resolve_num_workers(int(data.get("num_workers", 0)), device, bool(data.get("cache", False)),
                                              model.img_size, int(train.get("threads") or 0) or None)  # fmt: skip
    train["lr"] = resolve_lr(train.get("lr"), model)
    notes = []
    if run["epochs_from"]:
        from fh_utils.workbook.oof import full_fit_epochs  # here: oof reads the runs table (compare), heavy to import

        train["epochs"], note = full_fit_epochs(run["epochs_from"])
        notes.append(note)
    train["loss"] = "logit_adjust" if run["imbalance"] == "logit_adjust" else train.get("loss", "ce")
    data_cfg, train_cfg = DataConfig.from_dict(data), TrainConfig.from_dict(train)
    if run["teacher"]:
        notes.append(f"teacher   {run['teacher']} (alpha {train_cfg.distill_alpha:g}, "
                     f"T {train_cfg.distill_temperature:g})")  # fmt: skip
    notes += [f"recipes   {text}"] if (text := describe_recipes(train_cfg)) else []
    if run["resume"] and not run["run_name"]:
        run_dir = latest_run(task_obj.name, LAST_CKPT)
        notes.append(f"resume    continuing {run_dir.name} from {LAST_CKPT}")
    else:
        # "<sweep>/<trial>" (a sweep's trial, fh_utils.sweeps.trial) nests the run folder one level down.
        parent, name = split_run_name(run["run_name"])
        root = runs_dir() / parent if parent else None
        run_dir = create_run_dir(name, task=task_obj.name, backbone=model.backbone, img_size=model.img_size,
                                 root=root)  # fmt: skip
        if run["resume"]:
            state = "found" if (run_dir / LAST_CKPT).exists() else "not found: starting from scratch"
            notes.append(f"resume    {LAST_CKPT} {state}")
    return RunSetup(task_obj, run_dir, device, data_cfg, model, train_cfg, run, notes)


def describe_recipes(train: TrainConfig) -> str:
    """The long-tail recipes a run uses (re-balancing, cRT, mixing) in one line; ``""`` for none."""
    from fh_utils.training.rebalance import first_rebalanced_epoch

    parts = []
    if train.rebalance != "none":
        name = {"sampler": "DRS (class-balanced sampler)", "reweight": "DRW (effective-number class weights)"}
        parts.append(f"{name[train.rebalance]} from epoch {first_rebalanced_epoch(train)}")
    if train.crt_epochs:
        parts.append(f"cRT {train.crt_epochs} epoch(s) after training (crt.pt)")
    if train.mix != "none":
        parts.append(f"{train.mix} on {train.mix_prob:g} of the batches (alpha {train.mix_alpha:g})")
    return "; ".join(parts)


def build_loaders(setup: RunSetup) -> dict[str, DataLoader]:
    """:func:`fh_utils.data.create_loaders` for the run's data configuration (records the split's rows).

    With an exclusion list (``exclude``) it prints how many training rows the list removed (``config.json``
    keeps it under ``split.excluded``).
    """
    loaders = create_loaders(setup.data, setup.task)
    setup.split_record = loaders["train"].dataset.split_record
    excluded = setup.split_record.get("excluded")
    if excluded:
        print(f"exclude   {excluded['rows_removed']} training row(s) left out, listed {excluded['listed']} in "
              f"{excluded['file']}" + (f"; {excluded['not_found']} listed not among the training rows"
                                       if excluded["not_found"] else "")
              + ("; no row is marked exclude=1 (review the list: set exclude to 1 on the wrong labels)"
                 if not excluded["listed"] else ""))  # fmt: skip
    return loaders


def build_model(setup: RunSetup) -> torch.nn.Module:
    """:func:`fh_utils.models.create_model` with the run's model arguments, initialised from the run's ``seed``.

    Seeding here makes ``seed`` decide the initial weights too (as the notebooks document), so two runs with the
    same parameters start alike and a seed sweep varies what it says it varies.
    """
    seed_everything(setup.train.seed)
    return create_model(setup.task, data_root=setup.data.data_root, **setup.model.model_kwargs())


def color_baseline(setup: RunSetup, loaders: dict[str, DataLoader], progress: bool = True) -> dict | None:
    """Fit and score the colour baseline (ST2 by default) once per run folder; ``None`` when switched off.

    The result is kept as ``baseline.json`` so a resumed run does not fit it again.
    """
    if not setup.run["color_baseline"] or "val" not in loaders:
        return None
    path = setup.run_dir / BASELINE_FILE
    if path.exists():
        return read_json(path)
    from fh_utils.training.baseline import baseline_for_loaders

    res = baseline_for_loaders(loaders, setup.task, progress=progress)
    per_class = [None if a != a else float(a) for a in res.per_class]
    out = {"baseline_score": res.score, "baseline_per_class": per_class, "baseline_seconds": res.seconds}
    write_json(path, out)
    return out


def train(
    setup: RunSetup, model: torch.nn.Module, loaders: dict[str, DataLoader], progress: bool = True, **fit_kwargs: Any
) -> FitResult:
    """:func:`fh_utils.training.fit` with the run's configuration; ST2 runs also score the colour baseline.

    Every configuration section lands in ``config.json``; ``fit_kwargs`` go to ``fit`` (e.g. callbacks).
    """
    baseline = color_baseline(setup, loaders, progress=progress)
    fit_kwargs.setdefault("teacher", resolve_teacher(setup.run.get("teacher", "")))
    # Inside a sweep trial: each epoch's score goes to the study, which may prune (none outside a sweep).
    fit_kwargs["callbacks"] = [*(fit_kwargs.get("callbacks") or []), *pruning_callbacks()]
    priors = class_priors(loaders["train"].dataset.targets, setup.task) if setup.train.loss == "logit_adjust" else None
    result = fit(model, loaders, setup.run_dir, setup.train, resume=bool(setup.run["resume"]), progress=progress,
                 task=setup.task, class_priors=priors, sections=setup.sections(), extra_metrics=baseline,
                 **fit_kwargs)  # fmt: skip
    # The honest numbers beside the best epoch's (metrics.json "estimates"), from every epoch's stored val
    # predictions: what the rule's checkpoint will score on photos nothing chose it on (fh_utils.scoring.report).
    estimates = write_run_estimates(setup.run_dir, setup.task)  # the rule the run was trained with
    if estimates is not None:
        result.metrics = {**result.metrics, ESTIMATES_KEY: estimates}
    return result


def resolve_teacher(teacher: str | list[str] | None) -> list[str] | None:
    """The notebooks' ``teacher`` parameter as :func:`fh_utils.training.fit` takes it; ``None`` when empty.

    A comma-separated string (or a list) of run folders (a path, or a run name under ``outputs/runs``: several
    make an ensemble teacher) or ``"<timm name>@<weights file>"``
    (:func:`fh_utils.training.distill.build_teacher`).
    """
    items = [t.strip() for t in teacher.split(",")] if isinstance(teacher, str) else list(teacher or [])
    resolved = []
    for item in filter(None, items):
        path = next((c for c in run_candidates(item) if c.exists()), None)
        resolved.append(str(path.resolve()) if path is not None else item)
    return resolved or None


def train_from_params(task: str, params: dict[str, Any], progress: bool = True) -> tuple[Path, FitResult]:
    """Notebook 03/04 without the figures: set up, build loaders and model, train; (run dir, result)."""
    setup = prepare_training(task, params)
    loaders = build_loaders(setup)
    model = build_model(setup)
    return setup.run_dir, train(setup, model, loaders, progress=progress)
