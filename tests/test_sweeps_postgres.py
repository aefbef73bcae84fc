"""The multi-machine path: a sweep whose study lives in a real PostgreSQL server (slow).

The test starts its own throw-away server (``initdb`` + ``pg_ctl`` on ``PATH``: Debian's ``postgresql``
package, ``/usr/lib/postgresql/<version>/bin``) on a free loopback port, as ``nobody`` when run as root
(PostgreSQL refuses root), and stops it afterwards; it is skipped when those programs are missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from fh_utils.sweeps.coordinator import run_sweep
from fh_utils.sweeps.study import open_sweep

pytestmark = pytest.mark.slow
TRIAL_NB = Path(__file__).parent / "notebooks" / "sweep_trial.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """``postgresql://fh@127.0.0.1:<port>/postgres`` of a server started for this module."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("initdb / pg_ctl not on PATH: apt-get install postgresql (and add its bin folder to PATH)")
    pytest.importorskip("psycopg", reason="psycopg (dev extra: psycopg[binary]) is needed for postgresql:// storage")
    folder = Path(tempfile.mkdtemp(prefix="fh-pg-"))
    folder.chmod(0o755)  # the server user must reach its data folder
    data, log = folder / "data", folder / "server.log"
    data.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
        log.touch()
        os.chown(log, nobody.pw_uid, nobody.pw_gid)
        prefix = ["runuser", "-u", "nobody", "--"]
    port = _free_port()
    subprocess.run([*prefix, "initdb", "-D", str(data), "-U", "fh", "--auth=trust", "-E", "UTF8"], check=True,
                   capture_output=True)  # fmt: skip
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run([*prefix, "pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "start"], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://fh@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_two_worker_sweep_shares_a_postgresql_study(demo_root, postgres_url):
    spec = {"name": "t-pg", "notebook": str(TRIAL_NB), "fixed": {"data_root": str(demo_root)},
            "grid": {"seed": [0, 1, 2]}}  # fmt: skip
    result = run_sweep(spec, workers=2, storage=postgres_url)
    trials = result.trials
    assert result.storage == postgres_url and result.worker_exit_codes == [0, 0]
    assert len(trials) == 3 and (trials["state"] == "COMPLETE").all(), trials.to_string()
    assert sorted(trials["param_seed"]) == [0, 1, 2]
    for run_dir in trials["run_dir"]:
        assert (Path(run_dir) / "metrics.json").exists()
    # Another process (another machine) sees the same study through the URL alone.
    study = open_sweep("t-pg", storage=postgres_url)
    assert sorted(t.user_attrs["run_name"] for t in study.get_trials()) == [f"t-pg/t000{i}" for i in range(3)]
    again = run_sweep(spec, workers=1, storage=postgres_url)
    assert len(again.trials) == 3, "a second machine joining a finished study runs nothing"
