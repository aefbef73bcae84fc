"""The dashboard over a PostgreSQL study (the many-machines case) is read-only down to the database session.

Slow: reuses the throw-away server of ``tests/test_sweeps_postgres.py`` (``initdb`` / ``pg_ctl`` on ``PATH``;
skipped otherwise).
"""

from __future__ import annotations

import pytest
from test_sweeps_postgres import postgres_url  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def test_the_dashboard_reads_a_postgresql_study_and_its_session_refuses_writes(postgres_url):  # noqa: F811
    import optuna

    from fh_utils.sweeps import dashboard

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="pg-watch", storage=postgres_url, direction="maximize")
    for value in (0.1, 0.2, 0.3):
        trial = study.ask()
        trial.report(value / 2, 1)
        study.tell(trial, value)
    storage = dashboard.open_read_only(dashboard.resolve_storage(postgres_url))
    seen = optuna.load_study(study_name="pg-watch", storage=storage).get_trials()
    assert [t.value for t in seen] == [0.1, 0.2, 0.3] and seen[2].intermediate_values == {1: 0.15}
    with pytest.raises(dashboard.ReadOnlyStorageError):
        storage.set_study_user_attr(study._study_id, "note", "x")
    with pytest.raises(optuna.exceptions.StorageInternalError) as raised:  # below the wrapper: the session itself
        storage._inner.set_study_user_attr(study._study_id, "note", "x")
    causes, error = [], raised.value
    while error is not None:
        causes.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("read-only transaction" in c for c in causes), causes
    assert "note" not in optuna.load_study(study_name="pg-watch", storage=postgres_url).user_attrs
