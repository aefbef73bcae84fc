"""The platform client's upload rule: which files of a submission folder ``aifactory.score`` puts in its zip.

The client (``aifactory.score.make_zip``) walks the folder of the team's ``task.ipynb`` and drops every file whose
folder path contains ``train``, ``drive`` or ``sample_data``: ``fh_utils/training/`` copied as a folder would
vanish from the upload without a word, hence the code archive (:mod:`fh_utils.leaderboard.archive`).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

CLIENT_SKIPPED_FOLDER_WORDS = ("train", "drive", "sample_data")  # aifactory.score.make_zip, folder path test
CLIENT_ARCHIVE = "aif.zip"


def client_keeps(relative: str | Path) -> bool:
    """Whether ``aifactory.score.make_zip`` adds the file at ``relative`` (a path inside the submission folder).

    The client walks ``./`` and skips every file whose folder path (``./``, ``./model``, ...) contains
    ``train``, ``drive`` or ``sample_data``, and any file named like ``aif.zip``.
    """
    rel = Path(relative)
    folder = "./" if str(rel.parent) in ("", ".") else "./" + rel.parent.as_posix()
    return not any(word in folder for word in CLIENT_SKIPPED_FOLDER_WORDS) and CLIENT_ARCHIVE not in rel.name


def client_zip_listing(folder: str | Path) -> tuple[list[str], list[str]]:
    """The files the client's zip of ``folder`` holds, and those it drops, as the archive names them.

    Walks the folder as ``aifactory.score.make_zip`` does (``os.walk("./")`` from inside it).
    """
    folder = Path(folder)
    kept, dropped = [], []
    for path, _dirs, files in os.walk(folder):
        for name in files:
            rel = (Path(path) / name).relative_to(folder)
            (kept if client_keeps(rel) else dropped).append(rel.as_posix())
    return sorted(kept), sorted(dropped)


def make_client_zip(folder: str | Path, dest: str | Path) -> list[str]:
    """Build the upload archive of ``folder`` with the client's rule (what ``aif.submit`` would upload)."""
    folder, dest = Path(folder), Path(dest)
    kept, _ = client_zip_listing(folder)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel in kept:
            archive.write(folder / rel, rel)
    return kept
