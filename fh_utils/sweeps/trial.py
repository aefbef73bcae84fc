"""The trial's side of a sweep: the trial's environment, its run folder's name, the epoch callbacks.

The environment is where a trial's kernel finds its trial; the run name is ``<sweep>/tNNNN``; the callbacks report
each epoch's score to the study and prune.

Training takes these callbacks (:func:`pruning_callbacks`) and never imports the coordinator or the worker: this
module imports nothing above training (Optuna and :mod:`fh_utils.sweeps.study`, which imports only the paths, are
imported inside :func:`pruning_callbacks`, when a trial's kernel asks for them).
"""

from __future__ import annotations

import os
import re

# How a trial's kernel finds its trial (set in the worker's environment while the notebook runs).
ENV_STORAGE, ENV_STUDY = "FH_SWEEP_STORAGE", "FH_SWEEP_STUDY"
ENV_TRIAL, ENV_PRUNER = "FH_SWEEP_TRIAL", "FH_SWEEP_PRUNER"
TRIAL_ENV = (ENV_STORAGE, ENV_STUDY, ENV_TRIAL, ENV_PRUNER)


def trial_environment(storage: str, study: str, trial_id: int, pruner: str) -> dict[str, str]:
    """The variables a trial's kernel inherits from its worker: the study's storage and name, trial, pruner."""
    return {ENV_STORAGE: storage, ENV_STUDY: study, ENV_TRIAL: str(trial_id), ENV_PRUNER: pruner}


def trial_run_name(sweep: str, number: int) -> str:
    """``<sweep>/tNNNN``: the run name of a sweep's trial (its run folder one level under ``outputs/runs``)."""
    return f"{sweep}/t{number:04d}"


def split_run_name(run_name: str) -> tuple[str, str]:
    """``"<sweep>/<trial>"`` -> ``("<sweep>", "<trial>")``; a plain run name -> ``("", run_name)``.

    Raises:
        ValueError: The sweep part holds anything but letters, digits, ``_``, ``-`` and ``.``.
    """
    parent, _, name = str(run_name).rpartition("/")
    if parent and not re.fullmatch(r"[\w.\-]+", parent):
        raise ValueError(f"run_name {run_name!r}: the sweep part may only hold letters, digits, '_-.'")
    return parent, name


def pruning_callbacks() -> list:
    """Epoch callbacks for ``fit`` inside a sweep trial's kernel (none outside a sweep or with ``pruner: none``).

    Each epoch's ``val_score`` is reported to the trial as an intermediate value; when the pruner says so the
    callback raises ``optuna.TrialPruned``, the notebook stops (``last.pt`` stays valid) and the worker records
    the trial as pruned.
    """
    trial_id, pruner_name = os.environ.get(ENV_TRIAL), os.environ.get(ENV_PRUNER, "none")
    if not trial_id or pruner_name == "none":
        return []
    import optuna

    from fh_utils.sweeps.study import make_pruner, open_storage

    storage = open_storage(os.environ[ENV_STORAGE])
    study = optuna.load_study(study_name=os.environ[ENV_STUDY], storage=storage, pruner=make_pruner(pruner_name))

    def report(row: dict) -> None:
        if row.get("val_score") is None:
            return
        storage.set_trial_intermediate_value(int(trial_id), int(row["epoch"]), float(row["val_score"]))
        if study.pruner.prune(study, storage.get_trial(int(trial_id))):
            raise optuna.TrialPruned(f"pruned at epoch {row['epoch']} (val_score {row['val_score']:.4f})")

    return [report]
