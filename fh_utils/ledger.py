"""The submission ledger: one row per packaged submission, and the leaderboard's score once it is known.

``outputs/ledger.csv`` holds, per submission: its name, when it was packaged, the workbook's git commit, the task,
its members (run names, never local paths) and weights, the checkpoint rule, the honest estimate with its 90 %
interval, the best-epoch score, what the scores were measured on, and an empty ``leaderboard`` column that
``python -m fh_utils ledger NAME SCORE`` fills in after the platform scored it. Notebook 06 plots the estimate
against the leaderboard for the rows that have one: the check of how far a team can trust its estimates.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd

from fh_utils.io import write_text
from fh_utils.paths import outputs_dir, project_root

LEDGER_FILE = "ledger.csv"


class LedgerError(ValueError):
    """A ledger row that cannot be written or found."""


@dataclass
class LedgerRow:
    """One packaged submission.

    Attributes:
        name: The submission's name (its folder under ``outputs/submissions``).
        task: ``st1`` or ``st2``.
        members: Run names (relative to ``outputs/runs``), ``;``-separated.
        weights: The members' weights, ``;``-separated (empty: equal).
        rule: The checkpoint rule of the members (``best``, ``last``, ...).
        estimate: The honest estimate of the score on unseen photos (empty when none could be made).
        estimate_low: Lower end of its 90 % interval.
        estimate_high: Upper end.
        best_epoch_score: The best val epoch's score (optimistic).
        validation: What the scores were measured on (``val``; a fold's held-out rows; ``trained on these rows``).
        time: UTC time it was packaged (ISO 8601).
        commit: The workbook's git commit (empty outside a git checkout).
        leaderboard: The platform's score, once known.
    """

    name: str
    task: str
    members: str
    weights: str = ""
    rule: str = "best"
    estimate: float | None = None
    estimate_low: float | None = None
    estimate_high: float | None = None
    best_epoch_score: float | None = None
    validation: str = "val"
    time: str = ""
    commit: str = ""
    leaderboard: float | None = None


COLUMNS = [f.name for f in fields(LedgerRow)]


def ledger_path() -> Path:
    """``outputs/ledger.csv`` (``FH_OUTPUTS`` moves it with the outputs)."""
    return outputs_dir() / LEDGER_FILE


def git_commit(folder: str | Path | None = None) -> str:
    """The short commit of the checkout holding ``folder`` (the project by default); empty outside git.

    ``-dirty`` is appended when tracked files have uncommitted changes.
    """
    cwd = Path(folder) if folder else project_root()
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}-dirty" if dirty else head


def _is_absolute(value: str) -> bool:
    return any(PurePosixPath(p).is_absolute() or PureWindowsPath(p).is_absolute() or p.startswith("~")
               for p in str(value).split(";") if p)  # fmt: skip


def read_ledger(path: str | Path | None = None) -> pd.DataFrame:
    """The ledger as a frame (the columns of :class:`LedgerRow`; empty when there is none yet)."""
    path = Path(path) if path else ledger_path()
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    try:
        text = {"name": str, "members": str, "weights": str, "commit": str}
        frame = pd.read_csv(path, dtype=text, keep_default_na=False,
                            na_values={c: [""] for c in ("estimate", "estimate_low", "estimate_high",
                                                         "best_epoch_score", "leaderboard")})  # fmt: skip
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise LedgerError(f"{path}: not a ledger CSV ({err})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise LedgerError(f"{path}: columns {missing} missing (expected {COLUMNS})")
    return frame[COLUMNS]


def _write(frame: pd.DataFrame, path: Path) -> None:
    write_text(path, frame[COLUMNS].to_csv(index=False))


def append_submission(row: LedgerRow, path: str | Path | None = None) -> LedgerRow:
    """Add a row (``time`` and ``commit`` filled in when empty). A name already there is replaced (re-packaged).

    Raises:
        LedgerError: A text field holds an absolute local path (the ledger is shared; it names runs only).
    """
    path = Path(path) if path else ledger_path()
    for key in ("name", "members", "weights", "validation"):
        if _is_absolute(getattr(row, key)):
            raise LedgerError(f"ledger {key} {getattr(row, key)!r}: an absolute local path; give run names")
    row.time = row.time or datetime.now(timezone.utc).isoformat(timespec="seconds")
    row.commit = row.commit or git_commit()
    frame = read_ledger(path)
    frame = frame[frame["name"] != row.name]
    new = pd.DataFrame([asdict(row)], columns=COLUMNS)
    _write(new if frame.empty else pd.concat([frame, new], ignore_index=True), path)
    return row


def record_leaderboard(name: str, score: float, path: str | Path | None = None) -> pd.Series:
    """Fill in the leaderboard's score of the submission ``name``.

    Raises:
        LedgerError: No ledger, no such name (the known names are listed), or a score outside 0..1.
    """
    path = Path(path) if path else ledger_path()
    if not 0.0 <= float(score) <= 1.0:
        raise LedgerError(f"leaderboard score {score}: expected a number between 0 and 1")
    frame = read_ledger(path)
    if frame.empty:
        raise LedgerError(f"{path}: no ledger yet (package a submission first: python -m fh_utils package RUN)")
    hit = frame["name"] == name
    if not hit.any():
        raise LedgerError(f"{path}: no submission named {name!r}; the ledger has {', '.join(frame['name'])}")
    frame["leaderboard"] = frame["leaderboard"].astype(float)
    frame.loc[hit, "leaderboard"] = float(score)
    _write(frame, path)
    return frame[hit].iloc[-1]
