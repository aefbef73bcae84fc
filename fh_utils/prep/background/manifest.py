"""The tree's manifest: how it was made, checked against every later run into the same folder."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from fh_utils.io import write_bytes
from fh_utils.prep.background.jobs import Settings

MANIFEST_NAME = "nobg_manifest.json"


class ManifestMismatchError(ValueError):
    """An output tree was made with other settings than the ones asked for."""


def manifest_view(settings: Settings, source_root: Path) -> dict:
    """The part of a manifest that must match between runs into one tree: settings and source root."""
    return {"settings": json.loads(json.dumps(asdict(settings))), "source_root": str(source_root)}


def prepare_out_root(out_root: Path, view: dict, overwrite: bool) -> None:
    """Check the manifest against this run's settings (or clear the tree), then write the manifest."""
    manifest = out_root / MANIFEST_NAME
    if out_root.exists() and any(out_root.iterdir()):
        if not manifest.is_file():
            raise ValueError(
                f"{out_root} is not empty and has no {MANIFEST_NAME}: not a background-removed tree; "
                "refusing to write into (or clear) it"
            )
        if overwrite:
            shutil.rmtree(out_root)
        else:
            _check_manifest(manifest, view)
    if not manifest.is_file():
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_json(manifest, {**view, "created": stamp})


def _check_manifest(manifest: Path, view: dict) -> None:
    try:
        old = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ManifestMismatchError(f"{manifest}: unreadable manifest ({err}); use overwrite=True") from err
    old_view = {"settings": old.get("settings"), "source_root": old.get("source_root")}
    if old_view == view:
        return
    old_settings = old_view["settings"] or {}
    diffs = [
        f"{k}: was {old_settings.get(k)!r}, now {v!r}" for k, v in view["settings"].items() if old_settings.get(k) != v
    ]
    if old_view["source_root"] != view["source_root"]:
        diffs.append(f"source_root: was {old_view['source_root']!r}, now {view['source_root']!r}")
    raise ManifestMismatchError(
        f"{manifest.parent} was made with other settings ({'; '.join(diffs)}). Mixing them would give an "
        "inconsistent tree: use the same settings, another out_root, or overwrite=True to delete it and "
        "start over (if the data only moved, edit source_root in the manifest)."
    )


def _write_json(path: Path, obj: dict) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
