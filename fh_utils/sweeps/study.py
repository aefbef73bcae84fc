"""A sweep's study: where it lives (a journal file or an RDB), how it is opened, its grid and its trials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from fh_utils.paths import outputs_dir

if TYPE_CHECKING:
    from fh_utils.sweeps.spec import SweepSpec

# A sweep's folder (outputs/sweeps/<sweep>/): the study's journal and the resolved spec the workers read.
JOURNAL_FILE, SWEEP_SPEC_FILE = "journal.log", "spec.json"


def sweep_dir(name: str) -> Path:
    """``outputs/sweeps/<name>/``: the study's journal, the resolved spec and the workers' logs."""
    return outputs_dir() / "sweeps" / name


def storage_url(name: str, storage: str | None = None) -> str:
    """The study's storage as a URL the workers can open: ``storage``, else ``journal://<sweep dir>/journal.log``."""
    return storage or f"journal://{sweep_dir(name) / JOURNAL_FILE}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: ``journal://PATH`` (a journal file) or an RDB URL (``postgresql://...``).

    A journal file is Optuna's recommendation for several processes on one machine: every write is an append
    under a file lock, where SQLite serialises writers on one database lock and fails them with "database is
    locked" under parallel trials (Optuna's docs advise against SQLite for parallel optimisation).
    """
    import optuna

    if url.startswith("journal://"):
        path = Path(url[len("journal://") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def _sampler(spec: SweepSpec, worker: int) -> Any:
    import optuna

    if spec.grid or spec.sampler == "random":  # the grid is enqueued: the sampler never picks a grid point
        return optuna.samplers.RandomSampler(seed=spec.seed + worker)
    return optuna.samplers.TPESampler(seed=spec.seed + worker)  # one seed per worker: no duplicate start-up points


def make_pruner(name: str) -> Any:
    """Optuna pruner of a spec's ``pruner`` (``"none"`` or ``"median"``)."""
    import optuna

    if name == "median":
        # Steps are 1-based epochs and only steps below n_warmup_steps are spared: this spares epoch 1.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


def load_study(spec: SweepSpec, url: str, worker: int = 0) -> Any:
    """Create or load the sweep's study (name = sweep name) in ``url``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=spec.name, storage=open_storage(url), direction=spec.direction,
                               sampler=_sampler(spec, worker), pruner=make_pruner(spec.pruner),
                               load_if_exists=True)  # fmt: skip


def _params_of(trial: Any) -> dict[str, Any]:
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def enqueue_grid(study: Any, spec: SweepSpec) -> int:
    """Enqueue every grid point no trial of the study holds yet; returns how many were added."""
    have = {_key(_params_of(t)) for t in study.get_trials(deepcopy=False)}
    added = 0
    for point in spec.grid_points():
        if _key(point) not in have:
            study.enqueue_trial(point)
            added += 1
    return added


def sweep_trials(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, outcome, value, run_name, run_dir, notebook seconds, retry_of, params."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name, "outcome": t.user_attrs.get("outcome"),
                     "value": t.value if t.values else None, "run_name": t.user_attrs.get("run_name"),
                     "run_dir": t.user_attrs.get("run_dir"), "seconds": t.user_attrs.get("notebook_seconds"),
                     "retry_of": t.system_attrs.get("failed_trial"), "error": t.user_attrs.get("error"),
                     **{f"param_{k}": v for k, v in _params_of(t).items()}})  # fmt: skip
    return pd.DataFrame(rows)


def open_sweep(name: str, storage: str | None = None) -> Any:
    """The study of a finished or running sweep (read-only use: trials, importances)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=open_storage(storage_url(name, storage)))
