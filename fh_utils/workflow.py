"""What the notebooks do, as functions: resolve parameters, train a task, evaluate it and make a submission.

Notebooks 03 (ST1) and 04 (ST2) are the same notebook with another ``task``: both build a
:class:`TrainParams` from their parameters cell and call the same functions here, so no logic is kept
twice. Notebook 05 predicts any CSV in the FASHION-HOW layout offline on the CPU, as the scoring server does.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from fh_utils import data as _data
from fh_utils.datasets import FashionHowDataset, create_dataset, create_loaders
from fh_utils.engine import FitResult, TrainConfig, fit, predict, resolve_device
from fh_utils.metrics import task_metrics
from fh_utils.models import DEFAULT_BACKBONE, create_model, load_model, state_dict_size_mb
from fh_utils.paths import default_data_root, runs_dir
from fh_utils.runs import (
    BEST_CKPT,
    CONFIG_FILE,
    LAST_CKPT,
    METRICS_FILE,
    create_run_dir,
    read_json,
    write_json,
)
from fh_utils.tasks import Task, get_task

SUBMISSION_FILE, SUBMISSION_METRICS_FILE = "submission.csv", "submission_metrics.json"
PREDICTIONS_FILE = "val_predictions.csv"
SCRATCH_LR, PRETRAINED_LR = 1e-4, 5e-6


def resolve_data_root(data_root: str | Path = "") -> Path:
    """``""`` gives :func:`fh_utils.paths.default_data_root`; a relative path starts at the working folder."""
    return Path(data_root).expanduser().resolve() if str(data_root) else default_data_root().resolve()


def parse_color_spaces(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"rgb,hsv,lab"`` (or a list) -> ``("rgb", "hsv", "lab")``."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(p.strip().lower() for p in parts if p.strip())


@dataclass
class TrainParams:
    """The parameters cell of notebooks 03/04 (the same names), with the seed's defaults.

    ``lr = 0`` means automatic: 5e-6 with pretrained weights (the seed's fine-tuning rate), 1e-4 from scratch.
    ``pretrained`` is False, True (the hub) or a path to a local ``.pth``/``.safetensors`` file.
    """

    data_root: str = ""
    run_name: str = ""
    backbone: str = DEFAULT_BACKBONE
    pretrained: bool | str = False
    img_size: int = 224
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.0
    optimizer: str = "adamw"
    scheduler: str = "cosine_restarts"
    label_smoothing: float = 0.1
    augment: str = "seed"
    crop_prob: float = 1.0
    crop_margin: float = 0.0
    use_nobg: bool = False
    nobg_root: str = ""
    imbalance: str = "none"
    color_spaces: str = "rgb"
    color_hist: bool = False
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    cache: bool = True
    ema: bool = False
    amp: str = "auto"
    resume: bool = False

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> TrainParams:
        """Pick the parameters from a notebook's ``globals()`` (names it lacks keep their default)."""
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    @property
    def resolved_lr(self) -> float:
        """The learning rate, with ``0`` resolved."""
        if self.lr:
            return float(self.lr)
        return PRETRAINED_LR if self.pretrained not in (False, "", None) else SCRATCH_LR


@dataclass
class TrainSetup:
    """Everything derived from :class:`TrainParams` for one run: task, data root, run folder, device."""

    params: TrainParams
    task: Task
    data_root: Path
    run_dir: Path
    device: torch.device
    notes: list[str] = field(default_factory=list)

    def loader_kwargs(self) -> dict[str, Any]:
        """Arguments of :func:`fh_utils.datasets.create_loaders`."""
        p = self.params
        return dict(
            data_root=self.data_root,
            task=self.task,
            img_size=p.img_size,
            batch_size=p.batch_size,
            augment=p.augment,
            crop_prob=p.crop_prob,
            crop_margin=p.crop_margin,
            use_nobg=p.use_nobg,
            nobg_root=p.nobg_root or None,
            imbalance=p.imbalance,
            color_spaces=parse_color_spaces(p.color_spaces),
            cache=p.cache,
            num_workers=p.num_workers,
            seed=p.seed,
        )

    def model_kwargs(self) -> dict[str, Any]:
        """Arguments of :func:`fh_utils.models.create_model`."""
        p = self.params
        return dict(
            task=self.task,
            backbone=p.backbone,
            pretrained=p.pretrained,
            img_size=p.img_size,
            color_spaces=parse_color_spaces(p.color_spaces),
            color_hist=p.color_hist,
            data_root=self.data_root,
        )

    def train_config(self) -> TrainConfig:
        """The :class:`fh_utils.engine.TrainConfig` of the run."""
        p = self.params
        return TrainConfig(
            epochs=p.epochs,
            lr=self.params.resolved_lr,
            optimizer=p.optimizer,
            scheduler=p.scheduler,
            label_smoothing=p.label_smoothing,
            imbalance=p.imbalance,
            ema=p.ema,
            amp=p.amp,
            device=p.device,
            seed=p.seed,
        )

    def run_config(self) -> dict[str, Any]:
        """Every notebook parameter (resolved) for ``config.json``."""
        return {
            **asdict(self.params),
            "data_root": str(self.data_root),
            "lr": self.params.resolved_lr,
            "color_spaces": list(parse_color_spaces(self.params.color_spaces)),
        }

    def describe(self) -> str:
        """A few lines for the notebook's derived-values cell."""
        p = self.params
        lines = [
            f"task      {self.task.name}: {self.task.title}",
            f"data root {self.data_root}",
            f"run dir   {self.run_dir}",
            f"device    {self.device} (amp {p.amp}, {p.num_workers} workers)",
            f"model     {p.backbone} @ {p.img_size} px, pretrained={p.pretrained!r}",
            f"training  epochs {p.epochs}, batch {p.batch_size}, {p.optimizer} lr {p.resolved_lr:g}, "
            f"{p.scheduler}, imbalance={p.imbalance}",
        ]
        return "\n".join(lines + self.notes)


def _latest_run(task: str | None, need: str) -> Path:
    candidates = []
    for path in runs_dir().glob(f"*/{need}"):
        config = path.parent / CONFIG_FILE
        run_task = read_json(config).get("task") if config.exists() else None
        if task is None or run_task == task:
            candidates.append(path.parent)
    if not candidates:
        what = f"task {task}" if task else "any task"
        raise FileNotFoundError(f"no run of {what} with {need} under {runs_dir()}; train one with notebook 03/04")
    return max(candidates, key=lambda p: (p / need).stat().st_mtime)


def prepare_training(task: str, params: TrainParams) -> TrainSetup:
    """Resolve the data root, the task (class names from ``classes.json``), the run folder and the device.

    With ``resume=True`` and no ``run_name``, the newest run of ``task`` that has a ``last.pt`` is continued.
    """
    data_root = resolve_data_root(params.data_root)
    task_obj = get_task(task, data_root)
    notes = []
    if params.resume and not params.run_name:
        run_dir = _latest_run(task_obj.name, LAST_CKPT)
        notes.append(f"resume    continuing {run_dir.name} from {LAST_CKPT}")
    else:
        run_dir = create_run_dir(
            params.run_name, task=task_obj.name, backbone=params.backbone, img_size=params.img_size
        )
        if params.resume:
            state = "found" if (run_dir / LAST_CKPT).exists() else "not found: starting from scratch"
            notes.append(f"resume    {LAST_CKPT} {state}")
    return TrainSetup(params, task_obj, data_root, run_dir, resolve_device(params.device), notes)


def train(
    setup: TrainSetup, model: torch.nn.Module, loaders: dict[str, DataLoader], progress: bool = True
) -> FitResult:
    """:func:`fh_utils.engine.fit` with the run's configuration (all parameters go into ``config.json``)."""
    return fit(
        model,
        loaders,
        setup.run_dir,
        setup.train_config(),
        resume=setup.params.resume,
        progress=progress,
        run_config=setup.run_config(),
    )


def train_from_params(task: str, params: TrainParams | dict, progress: bool = True) -> tuple[Path, FitResult]:
    """Notebook 03/04 without the figures: set up, build loaders and model, train; (run dir, result)."""
    params = params if isinstance(params, TrainParams) else TrainParams(**params)
    setup = prepare_training(task, params)
    loaders = create_loaders(**setup.loader_kwargs())
    model = create_model(**setup.model_kwargs())
    return setup.run_dir, train(setup, model, loaders, progress=progress)


def per_class_series(result: dict, run_dir: str | Path, task: Task) -> tuple[dict, dict | None]:
    """Per-class accuracies of an evaluation and, if the run has one, of its colour baseline (first head)."""
    per_class = {column: head["per_class"] for column, head in result["heads"].items()}
    metrics_path = Path(run_dir) / METRICS_FILE
    metrics = read_json(metrics_path) if metrics_path.exists() else {}
    baseline = metrics.get("baseline_per_class")
    return per_class, ({task.heads[0].column: baseline} if baseline else None)


def save_predictions(run_dir: str | Path, dataset: FashionHowDataset, result: dict, task: Task) -> Path:
    """Write ``val_predictions.csv``: image name, and the true and predicted class of every head."""
    frame = pd.DataFrame({"image_name": dataset.df["image_name"].to_numpy()})
    for j, head in enumerate(task.heads):
        frame[f"{head.key}_true"] = result["targets"][:, j]
        frame[f"{head.key}_pred"] = result["predictions"][:, j]
    path = Path(run_dir) / PREDICTIONS_FILE
    frame.to_csv(path, index=False)
    return path


def prediction_samples(
    dataset: FashionHowDataset, result: dict, task: Task, n: int = 18, seed: int = 0
) -> tuple[list[np.ndarray], list[list[str]], list[list[str]], list[str]]:
    """Random evaluation rows for :func:`fh_utils.plots.prediction_grid`: crops, true and predicted names."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False))
    crop = dataset.crop_prob > 0
    images = [dataset.source.get(int(i), crop) for i in idx]
    names = [[h.class_names[int(c)] for h, c in zip(task.heads, row)] for row in result["targets"][idx]]
    preds = [[h.class_names[int(c)] for h, c in zip(task.heads, row)] for row in result["predictions"][idx]]
    return images, names, preds, task.label_columns


def attention_samples(
    model: torch.nn.Module, dataset: FashionHowDataset, n: int = 6, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray] | None:
    """Evaluation crops and the attention maps of a backbone that has them (``fh_colornet``), else ``None``.

    Returns:
        RGB crops at the model's input size, and their maps ``(n, maps, H, W)`` for
        :func:`fh_utils.plots.attention_grid`.
    """
    backbone = getattr(model, "backbone", None)
    if not hasattr(backbone, "attention_maps"):
        return None
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(dataset), size=min(n, len(dataset)), replace=False))
    x = torch.stack([dataset[int(i)][0] for i in idx])
    device = next(model.parameters()).device
    with torch.no_grad():
        maps = backbone.attention_maps(model.normalize(x.to(device))).float().cpu().numpy()
    spaces = list(model.data_config.get("color_spaces", ["rgb"]))
    if "rgb" in spaces:
        first = 3 * spaces.index("rgb")
        images = [img[first : first + 3].permute(1, 2, 0).numpy() for img in x]
    else:
        import cv2

        size = x.shape[-2:][::-1]
        images = [cv2.resize(dataset.source.get(int(i), dataset.crop_prob > 0), size) for i in idx]
    return images, maps


def score_report(run_dir: str | Path, result: dict | None = None) -> str:
    """The closing lines of a training notebook: best validation score, and the colour baseline's (ST2)."""
    m = read_json(Path(run_dir) / METRICS_FILE)
    lines = [f"{m['task'].upper()} best val score ({m['metric']}): {m['score']:.4f} at epoch {m['epoch']}"]
    if result is not None:
        lines.append(f"re-evaluated {BEST_CKPT}: {result['score']:.4f}")
    if m.get("baseline_score") is not None:
        lines.append(f"colour baseline (histograms + logistic regression): {m['baseline_score']:.4f}")
    lines.append(f"run folder: {run_dir}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- submission


def task_of_model(model: torch.nn.Module) -> Task:
    """The task a model was trained for, with the class names stored in its checkpoint."""
    cfg = model.model_config
    task = get_task(cfg["task"])
    names = cfg.get("class_names") or {}
    heads = tuple(replace(h, class_names=tuple(names.get(h.column, h.class_names))) for h in task.heads)
    return replace(task, heads=heads)


@dataclass
class SubmissionSetup:
    """Resolved inputs of notebook 05."""

    run_dir: Path
    task: Task
    csv: Path
    images_dir: Path
    threads: int
    run_config: dict

    def __str__(self) -> str:
        return (
            f"run dir    {self.run_dir}\ntask       {self.task.name}: {self.task.title}\n"
            f"csv        {self.csv}\nimages     {self.images_dir}\n"
            f"device     cpu, {self.threads} torch threads"
        )


def resolve_run_dir(run_dir: str | Path = "", task: str = "") -> Path:
    """A run folder with ``best.pt``: a path, a run name under ``outputs/runs``, or ``""`` (the newest)."""
    if not str(run_dir):
        return _latest_run(task or None, BEST_CKPT)
    path = Path(run_dir).expanduser()
    for candidate in (path, runs_dir() / str(run_dir)):
        if (candidate / BEST_CKPT).is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no {BEST_CKPT} in {path} nor in {runs_dir() / str(run_dir)}")


def _default_images_dir(csv: Path) -> Path:
    """``<csv folder>/<split>`` for a ``*_train/_val/_test.csv``, else ``<csv folder>/test``."""
    split = next((s for s in _data.SPLITS if csv.stem.endswith(f"_{s}")), "test")
    return csv.parent / split


def prepare_submission(
    run_dir: str = "",
    task: str = "",
    data_root: str = "",
    test_csv: str = "",
    images_dir: str = "",
    threads: int = 0,
) -> SubmissionSetup:
    """Resolve notebook 05's parameters: the run, its task, the CSV to predict and its images, CPU threads.

    ``test_csv = ""`` takes the val CSV of the task under ``data_root`` (``""``: the default data root).
    """
    run = resolve_run_dir(run_dir, task)
    config = read_json(run / CONFIG_FILE) if (run / CONFIG_FILE).exists() else {}
    name = (
        task
        or config.get("task")
        or torch.load(run / BEST_CKPT, map_location="cpu", weights_only=True)["model_config"]["task"]
    )
    if task and config.get("task") not in (None, task):
        raise ValueError(f"task={task!r} but {run.name} was trained for {config['task']!r}")
    if test_csv:
        csv = Path(test_csv).expanduser().resolve()
    else:
        root = resolve_data_root(data_root)
        csv = _data.csv_path(root, get_task(name, root), "val")
    images = Path(images_dir).expanduser().resolve() if images_dir else _default_images_dir(csv)
    n_threads = threads or os.cpu_count() or 1
    return SubmissionSetup(run, get_task(name, csv.parent), csv, images, n_threads, config)


@dataclass
class SubmissionResult:
    """Predictions of notebook 05 with their timing."""

    submission: pd.DataFrame
    rows: pd.DataFrame
    model: torch.nn.Module
    task: Task
    seconds: float

    def labels(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(y_true, y_pred)`` arrays ``(N, n_heads)`` when the CSV has labels, else None."""
        if not self.rows.attrs.get("has_labels"):
            return None
        y_true = self.rows[self.task.label_columns].to_numpy()
        return y_true, self.submission[[h.key for h in self.task.heads]].to_numpy()

    @property
    def images_per_s(self) -> float:
        """Throughput of the whole prediction (model loading and CSV reading included)."""
        return len(self.submission) / self.seconds if self.seconds > 0 else float("nan")


def predict_submission(setup: SubmissionSetup, batch_size: int = 64, progress: bool = True) -> SubmissionResult:
    """Load the model, read the CSV and predict every row on the CPU, timed as the scoring server would."""
    torch.set_num_threads(setup.threads)
    start = time.perf_counter()
    model = load_model(setup.run_dir, map_location="cpu")
    task = task_of_model(model)
    rows = _data.read_csv(setup.csv, task, setup.images_dir, labels_optional=True)
    dc = model.data_config
    dataset = create_dataset(
        setup.csv.parent,
        task,
        "test",
        img_size=dc["img_size"],
        train=False,
        augment="none",
        crop_prob=float(setup.run_config.get("crop_prob", 1.0) > 0),
        crop_margin=setup.run_config.get("crop_margin", 0.0),
        color_spaces=tuple(dc["color_spaces"]),
        df=rows,
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    submission = predict(model, loader, task, device="cpu", progress=progress)
    return SubmissionResult(submission, rows, model, task, time.perf_counter() - start)


def size_report(model: torch.nn.Module, task: Task) -> dict[str, Any]:
    """Saved state-dict size against the task's budget."""
    size = state_dict_size_mb(model)
    budget = task.rules.size_budget_mb
    return {
        "size_mb": round(size, 3),
        "budget_mb": budget,
        "within_budget": size <= budget,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def finish_submission(setup: SubmissionSetup, result: SubmissionResult) -> dict[str, Any]:
    """Write ``submission.csv`` and ``submission_metrics.json`` into the run folder; return the metrics.

    The score (``task_metrics``) is computed when the CSV has labels; ``"score"`` is None otherwise.
    """
    sub_path = setup.run_dir / SUBMISSION_FILE
    result.submission.to_csv(sub_path, index=False)
    out: dict[str, Any] = {
        "task": result.task.name,
        "metric": result.task.metric,
        "score": None,
        "csv": str(setup.csv),
        "images_dir": str(setup.images_dir),
        "submission": str(sub_path),
        "rows": len(result.submission),
        "seconds": result.seconds,
        "images_per_s": result.images_per_s,
        "threads": setup.threads,
        **size_report(result.model, result.task),
    }
    labels = result.labels()
    if labels is not None:
        out.update(task_metrics(result.task, *labels))
    write_json(setup.run_dir / SUBMISSION_METRICS_FILE, out)
    return out
